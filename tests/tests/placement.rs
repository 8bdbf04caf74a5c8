//! Where the agent runs. On a node `--cgroup` is the root of the cgroup
//! tree and holds the agent too; started from a shell, or with `--cgroup`
//! naming a subtree, the agent's own cgroup can be outside it. Its accepted
//! sockets must still join the socket hash (sockops runs in the cgroup of
//! the process that made the listener): before that was seen to, every
//! connection ran through the agent and stalled once the client's initial
//! connection window was used (h2load stopped after 21,845 responses of 3
//! bytes = 65,535 bytes).

use rotor_testbed::agent::Agent;
use rotor_testbed::cgroup::TestCgroup;
use rotor_testbed::tools::h2load;
use rotor_testbed::TestBed;

#[test]
fn agent_outside_the_clients_cgroup_carries_streams_in_the_kernel() {
    let bed = TestBed::new(3).expect("test bed");
    let own = TestCgroup::create().expect("the agent's own cgroup");
    let agent = Agent::start_outside(&bed.topo, &bed.cgroup, &own, &bed.topo.backend_addrs())
        .expect("agent");
    let counter = |name: &str| agent.kernel_counter(name).expect("kernel counter");
    let (up0, agent0) = (counter("redirect_upstream"), counter("agent_bytes"));
    let before = bed.topo.request_counts().expect("counts");
    let url = format!("http://{}/whoami", bed.topo.vip());
    // 30,000 responses of 3 bytes: past the 65,535 bytes of the client's
    // initial window. -N: a stalled connection fails instead of hanging.
    let (summary, out) = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &["-c", "1", "-m", "16", "-n", "30000", "-N", "5", &url],
    )
    .expect("h2load");
    let served = bed.served_since(&before).expect("served");
    let status = agent.status().map(|s| s.to_string()).unwrap_or_default();
    let diag = format!(
        "{:?}\nstderr: {}\nagent status: {status}\nagent log:\n{}",
        summary.lines,
        String::from_utf8_lossy(&out.stderr),
        agent.stderr()
    );
    assert_eq!(
        (summary.succeeded, summary.failed, summary.errored),
        (30_000, 0, 0),
        "{diag}"
    );
    for (name, n) in &served {
        assert!(
            (9_000..=11_000).contains(n),
            "{name} served {n}, want 10,000±10%: {served:?}\n{diag}"
        );
    }
    let (up, to_agent) = (
        counter("redirect_upstream") - up0,
        counter("agent_bytes") - agent0,
    );
    // The kernel opened the streams: their HEADERS were redirected to the
    // endpoints, not carried by the agent (which reads ~50 bytes a request
    // when it carries them).
    assert!(up >= 25_000, "the kernel redirected {up} client frames of 30,000 requests: the agent carried them\n{diag}");
    assert!(
        to_agent < 300_000,
        "the agent was handed {to_agent} bytes for 30,000 requests\n{diag}"
    );
    assert!(
        agent
            .stderr()
            .contains("sockops also runs in its own cgroup"),
        "the agent did not say where sockops runs\n{diag}"
    );
}

/// `ready` means redirecting: an agent whose listener the balanced cgroup
/// cannot reach (here a firewall drops the connects the kernel redirects
/// to it) must not say ready, and says why.
#[test]
fn agent_that_clients_cannot_reach_never_says_ready() {
    let bed = TestBed::new(1).expect("test bed");
    let listen = bed.topo.agent_listen();
    bed.topo
        .node()
        .iptables_restore(&format!(
            "*filter\n-A INPUT -p tcp -d {} --dport {} -j DROP\nCOMMIT\n",
            listen.ip(),
            listen.port()
        ))
        .expect("iptables");
    let started = std::time::Instant::now();
    let err = match Agent::start(&bed.topo, &bed.cgroup, &bed.topo.backend_addrs()) {
        Ok(agent) => panic!(
            "the agent said ready with its listener unreachable:\n{}",
            agent.stderr()
        ),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("not redirected and served"),
        "the agent failed without saying that connects are not redirected and served: {err}"
    );
    assert!(
        started.elapsed() < rotor_testbed::scaled(rotor_testbed::agent::READY_TIMEOUT),
        "the agent hung instead of failing: {err}"
    );
}
