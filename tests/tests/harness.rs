//! The test bed itself, without the agent: the kube-proxy-style DNAT path,
//! backends and their request counts, the load client, curl, nghttp, h2load.

use std::collections::BTreeMap;

use rotor_testbed::tools::{curl_h2, h2load, nghttp};
use rotor_testbed::{content, environment_ok, run_load, LoadSpec, TestCgroup, Topology};

fn setup() -> (Topology, TestCgroup) {
    environment_ok().expect("test environment");
    let mut topo = Topology::new(3).expect("topology");
    topo.kube_proxy_dnat().expect("dnat");
    let cgroup = TestCgroup::create().expect("cgroup");
    (topo, cgroup)
}

fn deltas(before: &[(String, u64)], after: &[(String, u64)]) -> BTreeMap<String, u64> {
    after
        .iter()
        .zip(before)
        .map(|((n, a), (_, b))| (n.clone(), a - b))
        .collect()
}

#[test]
fn dnat_one_connection_sticks_to_one_backend_and_counts_agree() {
    let (topo, cgroup) = setup();
    let before = topo.request_counts().unwrap();
    let report = run_load(&topo, Some(&cgroup), &LoadSpec::whoami(1, 8, 300)).unwrap();
    assert_eq!((report.ok, report.failed), (300, 0), "{report:?}");
    // One connection through DNAT: every request on one backend.
    assert_eq!(report.by_body.len(), 1, "{report:?}");
    let (name, n) = report.by_body.iter().next().unwrap();
    assert!(name.starts_with("be") && *n == 300, "{report:?}");
    // The backends' own counts (from their logs) agree with the bodies.
    let served = deltas(&before, &topo.request_counts().unwrap());
    for (be, count) in &served {
        assert_eq!(
            *count,
            report.count(be),
            "backend {be}: served {served:?}, client saw {report:?}"
        );
    }
}

#[test]
fn dnat_short_connections_spread() {
    let (topo, cgroup) = setup();
    let report = run_load(&topo, Some(&cgroup), &LoadSpec::whoami(30, 1, 30)).unwrap();
    assert_eq!((report.ok, report.failed), (30, 0), "{report:?}");
    assert!(
        report.by_body.len() >= 2,
        "30 connections all on one backend: {report:?}"
    );
}

#[test]
fn dnat_real_peers() {
    let (topo, cgroup) = setup();
    let body = curl_h2(&topo, Some(&cgroup), "http://10.96.0.10:8080/whoami").unwrap();
    let body = String::from_utf8(body).unwrap();
    assert!(
        ["be1", "be2", "be3"].contains(&body.as_str()),
        "curl got {body:?}"
    );

    let out = nghttp(&topo, Some(&cgroup), &["http://10.96.0.10:8080/big"]).unwrap();
    assert_eq!(out.stdout.len(), content::BIG_LEN);
    assert!(out.stdout == content::big(), "nghttp /big: content differs");

    let out = nghttp(
        &topo,
        Some(&cgroup),
        &["-n", "-s", "http://10.96.0.10:8080/whoami"],
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/whoami"),
        "nghttp -s output: {out:?}"
    );

    let (summary, _) = h2load(
        &topo,
        Some(&cgroup),
        &[
            "-c",
            "2",
            "-m",
            "4",
            "-n",
            "200",
            "http://10.96.0.10:8080/whoami",
        ],
    )
    .unwrap();
    assert_eq!((summary.succeeded, summary.failed), (200, 0), "{summary:?}");
}

#[test]
fn dnat_split_writes() {
    let (topo, cgroup) = setup();
    for chunk in [1, 7] {
        let spec = LoadSpec {
            split_writes: Some(chunk),
            streams: 2,
            requests: Some(4),
            chunk_delay_us: Some(500),
            ..LoadSpec::default()
        };
        let report = run_load(&topo, Some(&cgroup), &spec).unwrap();
        assert_eq!(
            (report.ok, report.failed),
            (4, 0),
            "chunk {chunk}: {report:?}"
        );
        assert!(
            report.by_body.keys().all(|k| k.starts_with("be")),
            "{report:?}"
        );
    }
}

#[test]
fn dnat_big_bodies() {
    let (topo, cgroup) = setup();
    let up = LoadSpec {
        streams: 4,
        requests: Some(4),
        upload_bytes: Some(8 << 20),
        ..LoadSpec::default()
    };
    let report = run_load(&topo, Some(&cgroup), &up).unwrap();
    assert_eq!(
        (report.ok, report.failed, report.count("echo")),
        (4, 0, 4),
        "{report:?}"
    );
    let down = LoadSpec {
        streams: 4,
        requests: Some(8),
        path: Some("/big".into()),
        ..LoadSpec::default()
    };
    let report = run_load(&topo, Some(&cgroup), &down).unwrap();
    assert_eq!(
        (report.ok, report.failed, report.count("big")),
        (8, 0, 8),
        "{report:?}"
    );
}

#[test]
fn agent_runs_in_node_netns_and_test_cgroup() {
    use std::os::unix::fs::PermissionsExt;
    let (topo, cgroup) = setup();
    // A stub agent: reports where it runs, prints `ready`, then waits.
    let stub = topo.dir().join("stub-agent");
    std::fs::write(
        &stub,
        "#!/bin/sh\necho \"args: $*\" >&2\nip -4 -o addr show >&2\necho not ready yet\necho ready\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent =
        rotor_testbed::Agent::start_binary(&stub, &topo, &cgroup, &topo.backend_addrs(), &[])
            .unwrap();
    assert_eq!(cgroup.pids().unwrap(), vec![agent.pid()]);
    let err = agent.stderr();
    assert!(
        err.contains("inet 10.0.0.1/24"),
        "not in the node netns: {err}"
    );
    let cg = cgroup.path().display().to_string();
    assert!(
        err.contains(&format!("--cgroup {cg} --listen 10.0.0.1:15001 --admin")),
        "{err}"
    );
    let config = std::fs::read_to_string(agent.config_path()).unwrap();
    assert!(
        config.contains("endpoints: [10.1.1.2:8080, 10.1.2.2:8080, 10.1.3.2:8080]"),
        "{config}"
    );
    agent
        .set_endpoints(&[rotor_testbed::backend_addr(2)])
        .unwrap();
    let config = std::fs::read_to_string(agent.config_path()).unwrap();
    assert!(config.contains("endpoints: [10.1.2.2:8080]\n"), "{config}");
}
