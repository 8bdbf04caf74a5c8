//! The test bed removes everything it creates: namespaces (with their veths and
//! iptables rules), cgroups and processes, also when a test panics.

use std::path::PathBuf;
use std::time::Duration;

use rotor_tests::process::netns_command;
use rotor_tests::{environment_ok, netns, Child, Stream, TestCgroup, Topology};

fn alive(pid: u32) -> bool {
    // A reaped pid is gone; /proc/PID exists only while the process (or zombie) does.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

struct Made {
    names: Vec<String>,
    cgroup: PathBuf,
    pids: Vec<u32>,
}

/// Builds a topology with DNAT, a cgroup, and a process in both; returns what to look for.
fn build_and_drop(panic: bool) -> Made {
    let made = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut topo = Topology::new(2).unwrap();
        topo.kube_proxy_dnat().unwrap();
        let cgroup = TestCgroup::create().unwrap();
        let mut cmd = netns_command(topo.client_ns(), Some(cgroup.path()), "sh");
        cmd.args(["-c", "echo started; exec sleep 60"]);
        let mut sleeper = Child::spawn("sleeper", cmd, topo.dir()).unwrap();
        sleeper
            .wait_for_line(Stream::Stdout, "started", Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            cgroup.pids().unwrap(),
            vec![sleeper.pid()],
            "wrapper put the process in the cgroup"
        );
        let mut pids: Vec<u32> = topo.backends().map(|b| b.pid()).collect();
        pids.push(sleeper.pid());
        *made.lock().unwrap() = Some(Made {
            names: topo.netns_names(),
            cgroup: cgroup.path().to_path_buf(),
            pids,
        });
        assert!(topo.client_nat_rules().unwrap().contains("KUBE-SVC-ROTOR"));
        if panic {
            panic!("deliberate panic with everything up");
        }
        // Dropped in reverse order: sleeper, cgroup, topo.
        let _keep = (&sleeper, &cgroup, &topo);
    }));
    assert_eq!(result.is_err(), panic);
    made.into_inner().unwrap().expect("test bed was built")
}

fn assert_gone(made: &Made) {
    let list = netns::list().unwrap();
    for n in &made.names {
        assert!(!list.contains(n), "netns {n} still exists: {list:?}");
    }
    assert!(
        !made.cgroup.exists(),
        "cgroup {} still exists",
        made.cgroup.display()
    );
    for pid in &made.pids {
        assert!(!alive(*pid), "pid {pid} still alive");
    }
}

#[test]
fn dropping_the_test_bed_removes_everything() {
    environment_ok().expect("test environment");
    let made = build_and_drop(false);
    assert_eq!(made.names.len(), 4);
    assert_gone(&made);
}

#[test]
fn a_panicking_test_cleans_up_too() {
    environment_ok().expect("test environment");
    let made = build_and_drop(true);
    assert_gone(&made);
}

#[test]
fn names_are_unique_per_topology() {
    environment_ok().expect("test environment");
    let a = Topology::new(0).unwrap();
    let b = Topology::new(0).unwrap();
    assert_ne!(a.client_ns(), b.client_ns());
    assert!(a.client_ns().starts_with("rotor-"));
}
