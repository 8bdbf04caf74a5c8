//! Peers rotor did not write, for the robustness tests: gRPC servers and
//! clients (Python grpcio, and tonic through `rotor-peer`), Python HTTP/2
//! clients (h2, httpx), a hyper client, non-HTTP/2 servers and clients, extra
//! nghttpd servers with their own flags, and the malformed-HTTP/2 sender.
//!
//! Servers run in backend namespaces and print `listening …` once bound;
//! clients run in the client namespace and the test cgroup (so the agent's
//! connect hook applies) and print one JSON report, parsed here.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use rotor_testbed::cgroup::TestCgroup;
use rotor_testbed::process::{netns_command, Child, Stream};
use rotor_testbed::topology::{backend_addr, Topology, VIP};
use rotor_testbed::util::{find_binary, run_with_timeout};
use rotor_testbed::{Agent, TestBed};

/// Port of the extra servers started next to each backend's nghttpd.
pub const GRPC_PORT: u16 = 50051;
/// Port of an extra nghttpd with its own flags.
pub const ALT_H2_PORT: u16 = 8081;
/// HTTP/1.1 and TCP echo servers.
pub const HTTP1_PORT: u16 = 9000;
pub const ECHO_PORT: u16 = 9001;

/// `tests/peers`: the Python peers and echo.proto.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// The Python interpreter: `ROTOR_PYTHON`, else `python3` from PATH.
pub fn python() -> OsString {
    std::env::var_os("ROTOR_PYTHON").unwrap_or_else(|| "python3".into())
}

/// Fails with an install hint unless Python can import `modules`.
pub fn python_has(modules: &[&str]) -> Result<()> {
    let code = format!("import {}", modules.join(", "));
    let out = Command::new(python())
        .args(["-c", &code])
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "python3 cannot `{code}`: run `cargo xtask deps` (pip installs grpcio grpcio-tools h2 httpx): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `rotor-peer` (the tonic / hyper / bad-input peer): `ROTOR_PEER_BIN`, else next to the tests or in target/release.
pub fn peer_binary() -> Result<PathBuf> {
    find_binary("rotor-peer", "ROTOR_PEER_BIN").context(
        "build it with `cargo build --release -p rotor-peers` (cargo xtask test builds it)",
    )
}

/// Which gRPC implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grpc {
    /// grpcio (gRPC's C core), `tests/peers/grpc_peer.py`.
    Python,
    /// tonic 0.14 (hyper, h2), `rotor-peer grpc-*`.
    Tonic,
    /// @grpc/grpc-js on Node's http2 module, `tests/peers/node/grpc_client.js`
    /// (a client only).
    Node,
}

impl Grpc {
    fn command(self, netns: &str, cgroup: Option<&Path>, sub: &str) -> Result<Command> {
        Ok(match self {
            Grpc::Python => {
                let mut cmd = netns_command(netns, cgroup, python());
                cmd.arg(peers_dir().join("grpc_peer.py")).arg(sub);
                cmd
            }
            Grpc::Tonic => {
                let mut cmd = netns_command(netns, cgroup, peer_binary()?);
                cmd.arg(format!("grpc-{sub}"));
                cmd
            }
            Grpc::Node if sub == "client" => {
                let mut cmd = netns_command(netns, cgroup, "node");
                cmd.arg(peers_dir().join("node").join("grpc_client.js"));
                cmd
            }
            Grpc::Node => bail!("the Node peer is a gRPC client only"),
        })
    }

    /// Fails when the implementation's tools are missing.
    pub fn available(self) -> Result<()> {
        match self {
            Grpc::Python => python_has(&["grpc", "grpc_tools"]),
            Grpc::Tonic => peer_binary().map(|_| ()),
            Grpc::Node => node_has_grpc(),
        }
    }
}

/// `node` can load @grpc/grpc-js from tests/peers/node (`cargo xtask deps`
/// runs `npm ci` there).
fn node_has_grpc() -> Result<()> {
    let dir = peers_dir().join("node");
    let out = Command::new("node")
        .current_dir(&dir)
        .args([
            "-e",
            "require('@grpc/grpc-js'); require('@grpc/proto-loader')",
        ])
        .output()
        .context("running node (Debian: apt install nodejs npm)")?;
    if !out.status.success() {
        bail!(
            "node cannot load @grpc/grpc-js in {}: run `cargo xtask deps` (npm ci there)\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A gRPC client's arguments for 300 unary calls (8 at a time, 1 KiB) and
/// 3 calls of each streaming kind (20 messages 10 ms apart).
pub const ALL_CALL_KINDS: &[&str] = &[
    "--unary",
    "300",
    "--concurrency",
    "8",
    "--payload",
    "1024",
    "--streams",
    "3",
    "--stream-msgs",
    "20",
    "--stream-delay-ms",
    "10",
];

/// Starts a server process in backend `k`'s namespace and waits for its
/// `listening` line.
pub fn spawn_in_backend(topo: &Topology, name: &str, cmd: Command) -> Result<Child> {
    let mut child = Child::spawn(name, cmd, topo.dir())?;
    child
        .wait_for_line(Stream::Stdout, "listening", Duration::from_secs(30))
        .with_context(|| format!("starting {name}"))?;
    Ok(child)
}

/// A gRPC server `be{k}` in backend `k`'s namespace on [`GRPC_PORT`].
pub fn start_grpc_server(topo: &Topology, k: usize, imp: Grpc, extra: &[&str]) -> Result<Child> {
    let ns = topo.backend(k)?.netns().to_string();
    let mut cmd = imp.command(&ns, None, "server")?;
    cmd.args([
        "--name",
        &format!("be{k}"),
        "--listen",
        &format!("0.0.0.0:{GRPC_PORT}"),
    ])
    .args(extra);
    spawn_in_backend(topo, &format!("grpc-{imp:?}-be{k}"), cmd)
}

/// One gRPC server per backend (see [`start_grpc_server`]).
pub fn start_grpc_servers(topo: &Topology, imp: Grpc, extra: &[&str]) -> Result<Vec<Child>> {
    (1..=topo.n_backends())
        .map(|k| start_grpc_server(topo, k, imp, extra))
        .collect()
}

/// `10.1.k.2:port` for every backend.
pub fn endpoints_on(topo: &Topology, port: u16) -> Vec<SocketAddrV4> {
    (1..=topo.n_backends())
        .map(|k| SocketAddrV4::new(*backend_addr(k).ip(), port))
        .collect()
}

/// Runs a gRPC client in the client namespace and `cgroup` against the VIP;
/// returns its JSON report.
pub fn grpc_client(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    imp: Grpc,
    args: &[&str],
    limit: Duration,
) -> Result<Value> {
    let cmd = grpc_client_command(topo, cgroup, imp, args)?;
    run_json(cmd, limit)
}

/// The command of [`grpc_client`] (to run it in the background).
pub fn grpc_client_command(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    imp: Grpc,
    args: &[&str],
) -> Result<Command> {
    let mut cmd = imp.command(topo.client_ns(), cgroup.map(|c| c.path()), "client")?;
    cmd.args(["--target", &format!("http://{VIP}")]).args(args);
    Ok(cmd)
}

/// A command in the client namespace (and `cgroup`).
pub fn client_command<S: AsRef<OsStr>>(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    program: S,
) -> Command {
    netns_command(topo.client_ns(), cgroup.map(|c| c.path()), program)
}

/// Runs a client that prints one JSON line; returns it (with stderr on failure).
pub fn run_json(mut cmd: Command, limit: Duration) -> Result<Value> {
    let out = run_with_timeout(&mut cmd, limit)?;
    parse_json_output(&out.stdout, &out.stderr, &format!("{}", out.status))
}

fn parse_json_output(stdout: &[u8], stderr: &[u8], status: &str) -> Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| {
            format!(
                "client ({status}) printed no JSON report\nstdout: {}\nstderr: {}",
                clip(&text, 2000),
                clip(&String::from_utf8_lossy(stderr), 3000)
            )
        })?;
    serde_json::from_str(line).with_context(|| format!("parsing report {line:.300}"))
}

/// A JSON-reporting client running in the background.
#[derive(Debug)]
pub struct Running {
    child: Child,
    limit: Duration,
}

impl Running {
    pub fn spawn(name: &str, cmd: Command, dir: &Path, limit: Duration) -> Result<Running> {
        Ok(Running {
            child: Child::spawn(name, cmd, dir)?,
            limit,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits for it and parses its report.
    pub fn finish(mut self) -> Result<Value> {
        let status = self.child.wait_timeout(self.limit)?;
        let out = self.child.output(Stream::Stdout);
        let err = self.child.output(Stream::Stderr);
        parse_json_output(out.as_bytes(), err.as_bytes(), &status.to_string())
    }
}

/// An nghttpd on `port` in backend `k`'s namespace serving that backend's
/// documents (`whoami`, `big`, …) with extra flags (e.g. `-m 4`), verbose so
/// its requests can be counted with [`count_requests`].
pub fn start_nghttpd(topo: &Topology, k: usize, port: u16, extra: &[&str]) -> Result<Child> {
    let ns = topo.backend(k)?.netns().to_string();
    let htdocs = topo.dir().join(format!("htdocs-be{k}"));
    let mut cmd = netns_command(&ns, None, "nghttpd");
    cmd.args(["--no-tls", "--echo-upload", "-v", "-a", "0.0.0.0", "-d"])
        .arg(&htdocs)
        .args(extra)
        .arg(port.to_string());
    let name = format!("nghttpd-{port}-be{k}");
    let mut child = Child::spawn(&name, cmd, topo.dir())?;
    child
        .wait_for_line(Stream::Stdout, "listen 0.0.0.0", Duration::from_secs(10))
        .with_context(|| format!("starting {name}"))?;
    Ok(child)
}

/// Requests an nghttpd -v log shows (`:path` lines of received HEADERS).
pub fn count_requests(child: &Child) -> u64 {
    child
        .output(Stream::Stdout)
        .lines()
        .filter(|l| l.contains("] recv (stream_id=") && l.contains(") :path: "))
        .count() as u64
}

/// A Python peer script in `tests/peers` with its arguments, in a namespace.
pub fn python_script(netns: &str, cgroup: Option<&Path>, script: &str, args: &[&str]) -> Command {
    let mut cmd = netns_command(netns, cgroup, python());
    cmd.arg(peers_dir().join(script)).args(args);
    cmd
}

/// `rotor-peer ARGS` in the client namespace and `cgroup`.
pub fn peer_command(
    topo: &Topology,
    cgroup: Option<&TestCgroup>,
    args: &[&str],
) -> Result<Command> {
    let mut cmd = client_command(topo, cgroup, peer_binary()?);
    cmd.args(args);
    Ok(cmd)
}

/// At most `n` bytes of `s` (its end, where errors usually are), for messages.
pub fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut at = s.len() - n;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    format!("…{}", &s[at..])
}

/// An integer field of a JSON report (0 if absent).
pub fn n(v: &Value, path: &str) -> u64 {
    path.split('.').fold(v, |v, k| &v[k]).as_u64().unwrap_or(0)
}

/// Switches IPv6 off in the client namespace: grpcio's C core then dials
/// with AF_INET sockets. With IPv6 on (as in every Kubernetes pod, which has
/// `::1`) it dials through an AF_INET6 socket to `::ffff:VIP`, which only
/// cgroup/connect6 sees (grpc.rs, `grpc_python_dual_stack_client`).
pub fn ipv4_only_client(topo: &Topology) -> Result<()> {
    for key in [
        "net.ipv6.conf.all.disable_ipv6",
        "net.ipv6.conf.lo.disable_ipv6",
    ] {
        topo.client()
            .sysctl(key, "1")
            .context("disabling IPv6 in the client namespace")?;
    }
    Ok(())
}

/// Three backends each serving a `servers` gRPC server on [`GRPC_PORT`]
/// (with `extra` flags), the agent balancing the VIP over them, IPv6 off in
/// the client namespace. The servers are returned apart so that they can
/// be signalled, and drop before the bed.
pub fn grpc_bed(servers: Grpc, extra: &[&str]) -> Result<(TestBed, Vec<Child>)> {
    servers.available()?;
    let mut bed = TestBed::new(3)?;
    ipv4_only_client(&bed.topo)?;
    let children = start_grpc_servers(&bed.topo, servers, extra)?;
    let endpoints = endpoints_on(&bed.topo, GRPC_PORT);
    bed.agent = Some(Agent::start(&bed.topo, &bed.cgroup, &endpoints)?);
    Ok((bed, children))
}
