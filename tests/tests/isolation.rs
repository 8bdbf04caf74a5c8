//! Isolation and fail-open in the datapath: the agent's own connections are
//! never redirected to itself, a full table leaves connections on their
//! original path, and nobody but the agent steers frames.

use std::net::SocketAddrV4;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rotor_tests::agent::{agent_binary, Agent};
use rotor_tests::probe::{self, Dmesg};
use rotor_tests::{LoadSpec, TestBed, VIP};

/// A script that starts the agent in a PID namespace of its own, as in a pod
/// without hostPID: its `getpid()` is 1 there, never the kernel's tgid.
fn pidns_wrapper(dir: &Path) -> PathBuf {
    let agent = agent_binary().expect("agent binary");
    let path = dir.join("rotor-agent-pidns.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec unshare --pid --fork --kill-child -- {} \"$@\"\n",
            agent.display()
        ),
    )
    .expect("writing the wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The PID namespace of a process (`/proc/PID/ns/pid`).
fn pid_ns(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The children of a process.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// In the node namespace, connects from the node itself to the Service
/// address go to `backend` (kube-proxy's `nat OUTPUT` rules on a node; the
/// route only gets the connect past its route lookup, as a node's default
/// route does).
fn node_dnat(bed: &TestBed, backend: SocketAddrV4) {
    bed.topo
        .node()
        .ip(&["route", "add", &format!("{}/32", VIP.ip()), "dev", "b1"])
        .expect("route to the Service address");
    bed.topo
        .node()
        .iptables_restore(&format!(
            "*nat\n-A OUTPUT -d {}/32 -p tcp -m tcp --dport {} -j DNAT --to-destination {backend}\nCOMMIT\n",
            VIP.ip(),
            VIP.port()
        ))
        .expect("node DNAT");
}

/// The agent's own connects are exempt from redirection, also when it runs
/// in its own PID namespace. The Service's one endpoint is the Service
/// address itself (which the node's kube-proxy rules send to be1): if the
/// agent's connect to it were redirected, the agent would be its own
/// endpoint, each upstream a new client connection, and no request would
/// reach be1.
#[test]
fn agent_in_its_own_pid_namespace_is_not_redirected_to_itself() {
    let dmesg = Dmesg::mark();
    let mut bed = TestBed::new(1).expect("test bed");
    node_dnat(&bed, bed.topo.backend_addrs()[0]);
    let wrapper = pidns_wrapper(bed.topo.dir());
    let agent = Agent::start_binary(
        &wrapper,
        &bed.topo,
        &bed.cgroup,
        &[VIP],
        &["--max-conns", "64"],
    )
    .expect("agent in its own PID namespace");
    let real = children(agent.pid());
    assert!(
        real.len() == 1 && pid_ns(real[0]) != pid_ns(std::process::id()),
        "the agent does not run in a PID namespace of its own: children {real:?}, namespaces {:?} vs ours {}",
        real.iter().map(|p| pid_ns(*p)).collect::<Vec<_>>(),
        pid_ns(std::process::id())
    );
    bed.agent = Some(agent);
    let rewrites = || {
        bed.agent()
            .expect("agent")
            .kernel_counter("connect_rewrite")
            .expect("counter")
    };
    let (rewrites0, before) = (rewrites(), bed.topo.request_counts().expect("counts"));
    let report = bed
        .load(&LoadSpec {
            timeout: 10.0,
            ..LoadSpec::whoami(2, 4, 200)
        })
        .expect("load");
    let served = bed.served_since(&before).expect("served");
    let extra = rewrites() - rewrites0;
    let diag = format!(
        "load {report:?}\nserved {served:?}\n{}",
        probe::report(&mut bed)
    );
    assert_eq!((report.ok, report.failed), (200, 0), "{diag}");
    assert_eq!(served, vec![("be1".to_string(), 200)], "{diag}");
    assert_eq!(
        extra, 2,
        "connect4 redirected {extra} connects for 2 client connections: the agent's own were redirected\n{diag}"
    );
    let warnings = dmesg.new_warnings();
    assert!(warnings.is_empty(), "kernel warnings: {warnings:#?}");
}
