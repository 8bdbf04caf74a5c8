//! The test bed removes everything it creates: namespaces (with their veths and
//! iptables rules), cgroups and processes, also when a test panics.

use std::path::PathBuf;
use std::time::Duration;

use rotor_testbed::process::netns_command;
use rotor_testbed::{environment_ok, netns, Child, Stream, TestCgroup, Topology};

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

#[test]
fn sweep_removes_leftovers_of_dead_runs_only() {
    environment_ok().expect("test environment");
    // Leftovers as a killed run would leave them: owner pid 0x7fffffff cannot exist.
    let rand = &rotor_testbed::util::unique_suffix()[..4];
    let leaked = format!("rotor-7fffffff-{rand}-client");
    std::mem::forget(rotor_testbed::Netns::create(&leaked).unwrap());
    let root = rotor_testbed::cgroup::cgroup2_root().unwrap();
    let leaked_cg = root.join(format!("rotor-test-7fffffff-{rand}"));
    std::fs::create_dir(&leaked_cg).unwrap();
    // A live run's resources must survive the sweep.
    let live = Topology::new(0).unwrap();
    let live_cg = TestCgroup::create().unwrap();

    let swept = rotor_testbed::sweep::sweep().unwrap();
    assert!(swept.netns.contains(&leaked), "{swept:?}");
    assert!(swept.cgroups.contains(&leaked_cg), "{swept:?}");
    assert!(!netns::list().unwrap().contains(&leaked));
    assert!(!leaked_cg.exists());
    assert!(netns::list()
        .unwrap()
        .contains(&live.client_ns().to_string()));
    assert!(live_cg.path().exists());
}

#[test]
fn children_die_with_the_thread_that_spawned_them() {
    environment_ok().expect("test environment");
    let dir = rotor_testbed::util::TempDir::new("rotor-test-pdeathsig").unwrap();
    let path = dir.path().to_path_buf();
    // Leak a child (as if the test process were killed and no Drop ran).
    let pid = std::thread::spawn(move || {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("60");
        let child = Child::spawn("sleeper", cmd, &path).unwrap();
        let pid = child.pid();
        std::mem::forget(child);
        pid
    })
    .join()
    .unwrap();
    let gone = |pid: u32| {
        // Killed: a zombie (state Z) until reaped, or gone.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + rotor_testbed::scaled(Duration::from_secs(5));
    while !gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(pid), "leaked child {pid} survived its spawning thread");
    // Reap it.
    unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
}
