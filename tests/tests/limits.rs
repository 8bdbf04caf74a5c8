//! The agent's own process limits. One test per file: it lowers this
//! process's open file limit for the agent it starts, which must not reach
//! other tests' processes.

use rotor_testbed::tools::h2load;
use rotor_testbed::TestBed;
use rotor_tests::probe;

/// The soft RLIMIT_NOFILE the agent is started with (a container runtime's
/// 1,024 in miniature), and the hard limit it may raise it to.
const LOW_SOFT: libc::rlim_t = 256;

fn set_soft_nofile(soft: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let before = lim.rlim_cur;
    lim.rlim_cur = soft.min(lim.rlim_max);
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    before
}

/// 200 clients of a 3-endpoint Service hold 800 agent sockets (one accepted,
/// three upstream each): an agent started with a soft open file limit of
/// 256 raises it to the hard limit and serves every request; one that keeps
/// 256 fails accepts and connects with EMFILE and its clients hang.
#[test]
fn agent_started_with_a_low_open_file_limit_serves_200_clients() {
    let mut bed = TestBed::new(3).expect("test bed");
    let before = set_soft_nofile(LOW_SOFT);
    let started = bed.start_agent();
    set_soft_nofile(before);
    started.expect("agent");
    let res = h2load(
        &bed.topo,
        Some(&bed.cgroup),
        &[
            "-c",
            "200",
            "-m",
            "1",
            "-n",
            "2000",
            "-T",
            "20",
            "http://10.96.0.10:8080/whoami",
        ],
    );
    let diag = probe::report(&mut bed);
    let (s, _) = res.unwrap_or_else(|e| panic!("h2load: {e:#}\n{diag}"));
    let raised = bed
        .agent()
        .unwrap()
        .stderr_plain()
        .contains("open file limit raised");
    assert!(
        s.succeeded == 2000 && raised,
        "agent started with a soft open file limit of {LOW_SOFT}: {} of 2000 requests from 200 \
         clients succeeded ({} failed, {} errored); agent said it raised the limit: {raised}\n{diag}",
        s.succeeded,
        s.failed,
        s.errored
    );
    bed.check_agent().expect("agent alive");
}
