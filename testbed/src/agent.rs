//! `Agent`: rotor-agent running in the node namespace and the test cgroup,
//! configured from a static YAML file that tests rewrite to change endpoints,
//! or from a (stand-in) Kubernetes API server ([`Agent::start_kubernetes`]).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cgroup::TestCgroup;
use crate::process::{netns_command, Child, Stream};
use crate::topology::{Topology, VIP};
use crate::util::target_dir;

/// How long the agent may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Load-balancing policy of the test Service.
pub const POLICY: &str = "round-robin";

/// The agent binary: `ROTOR_AGENT_BIN`, else `<target>/release/rotor-agent`.
pub fn agent_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ROTOR_AGENT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = target_dir().join("release").join("rotor-agent");
    if !p.is_file() {
        bail!(
            "{} not found: run `cargo build --release -p rotor` (or set ROTOR_AGENT_BIN)",
            p.display()
        );
    }
    Ok(p)
}

/// A script `dir/NAME.sh` that runs the agent binary under `prefix` (a
/// command that then execs it: setpriv, unshare, strace), passing its
/// arguments on: for [`Agent::start_binary`].
pub fn agent_wrapper(dir: &Path, name: &str, prefix: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let agent = agent_binary()?;
    let path = dir.join(format!("{name}.sh"));
    let script = format!("#!/bin/sh\nexec {prefix} '{}' \"$@\"\n", agent.display());
    fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))?;
    Ok(path)
}

/// A running rotor-agent. Dropping it stops the process (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct Agent {
    child: Child,
    config: PathBuf,
    admin: PathBuf,
    /// Started with `--source kubernetes`: no config file to rewrite.
    kubernetes: bool,
}

impl Agent {
    /// Writes a config for service `echo` (VIP `10.96.0.10:8080`) with `endpoints`,
    /// starts `rotor-agent --config FILE --cgroup CG --listen 10.0.0.1:15001 --admin SOCK`
    /// in the node namespace and in `cgroup`, and waits for `ready` on stdout.
    pub fn start(
        topo: &Topology,
        cgroup: &TestCgroup,
        endpoints: &[SocketAddrV4],
    ) -> Result<Agent> {
        Agent::start_with_args(topo, cgroup, endpoints, &[])
    }

    /// Like [`Agent::start`], with extra command-line arguments.
    pub fn start_with_args(
        topo: &Topology,
        cgroup: &TestCgroup,
        endpoints: &[SocketAddrV4],
        extra: &[&str],
    ) -> Result<Agent> {
        Agent::start_binary(&agent_binary()?, topo, cgroup, endpoints, extra)
    }

    /// Like [`Agent::start_with_args`], with an explicit binary (e.g. a stub in tests).
    pub fn start_binary(
        bin: &Path,
        topo: &Topology,
        cgroup: &TestCgroup,
        endpoints: &[SocketAddrV4],
        extra: &[&str],
    ) -> Result<Agent> {
        let config = topo.dir().join("rotor-agent.yaml");
        write_config(&config, endpoints)?;
        let source = [OsString::from("--config"), config.clone().into_os_string()];
        Agent::spawn(bin, topo, cgroup, cgroup, &source, extra, config, false)
    }

    /// Like [`Agent::start_with_args`], with a whole static configuration
    /// (`services:` …) instead of the one `echo` Service: for Services at
    /// other addresses (the IPv6 ones of a [`Topology::dual_stack`]).
    pub fn start_yaml(
        topo: &Topology,
        cgroup: &TestCgroup,
        yaml: &str,
        extra: &[&str],
    ) -> Result<Agent> {
        let config = topo.dir().join("rotor-agent.yaml");
        write_file(&config, yaml)?;
        let source = [OsString::from("--config"), config.clone().into_os_string()];
        Agent::spawn(
            &agent_binary()?,
            topo,
            cgroup,
            cgroup,
            &source,
            extra,
            config,
            false,
        )
    }

    /// Like [`Agent::start`], but the agent process runs in `own`, a cgroup
    /// outside `clients` (the one given with `--cgroup`): an agent started
    /// from a shell beside its clients' cgroup, or a pod whose `--cgroup` is
    /// a subtree of the node that does not hold the agent.
    pub fn start_outside(
        topo: &Topology,
        clients: &TestCgroup,
        own: &TestCgroup,
        endpoints: &[SocketAddrV4],
    ) -> Result<Agent> {
        let config = topo.dir().join("rotor-agent.yaml");
        write_config(&config, endpoints)?;
        let source = [OsString::from("--config"), config.clone().into_os_string()];
        Agent::spawn(
            &agent_binary()?,
            topo,
            clients,
            own,
            &source,
            &[],
            config,
            false,
        )
    }

    /// Starts `rotor-agent --source kubernetes --kubeconfig FILE --cgroup CG
    /// --listen 10.0.0.1:15001 --admin SOCK` in the node namespace and in
    /// `cgroup` (the API server must be reachable from the node namespace,
    /// e.g. [`crate::kube_api::KubeApi::start_in_netns`]) and waits for `ready`
    /// (printed once the Services and EndpointSlices are listed and applied).
    pub fn start_kubernetes(
        topo: &Topology,
        cgroup: &TestCgroup,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<Agent> {
        let mut agent = Agent::launch_kubernetes(topo, cgroup, kubeconfig, extra)?;
        agent.wait_ready(READY_TIMEOUT)?;
        Ok(agent)
    }

    /// Like [`Agent::start_kubernetes`], without waiting for `ready`: for
    /// tests that watch the agent start (readiness, a slow API server).
    pub fn launch_kubernetes(
        topo: &Topology,
        cgroup: &TestCgroup,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<Agent> {
        let source = [
            OsString::from("--source"),
            OsString::from("kubernetes"),
            OsString::from("--kubeconfig"),
            kubeconfig.as_os_str().to_owned(),
        ];
        let config = topo.dir().join("rotor-agent.yaml");
        Agent::launch(
            &agent_binary()?,
            topo,
            cgroup,
            cgroup,
            &source,
            extra,
            config,
            true,
        )
    }

    /// Waits for the agent's `ready` line.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        self.child
            .wait_for(
                Stream::Stdout,
                "a line `ready`",
                |l| l.trim() == "ready",
                limit,
            )
            .context("starting rotor-agent")?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        bin: &Path,
        topo: &Topology,
        cgroup: &TestCgroup,
        own: &TestCgroup,
        source: &[OsString],
        extra: &[&str],
        config: PathBuf,
        kubernetes: bool,
    ) -> Result<Agent> {
        let mut agent = Agent::launch(bin, topo, cgroup, own, source, extra, config, kubernetes)?;
        agent.wait_ready(READY_TIMEOUT)?;
        Ok(agent)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        bin: &Path,
        topo: &Topology,
        cgroup: &TestCgroup,
        own: &TestCgroup,
        source: &[OsString],
        extra: &[&str],
        config: PathBuf,
        kubernetes: bool,
    ) -> Result<Agent> {
        let admin = topo.dir().join("rotor-admin.sock");
        let mut cmd = netns_command(topo.node_ns(), Some(own.path()), bin);
        cmd.args(source)
            .arg("--cgroup")
            .arg(cgroup.path())
            .arg("--listen")
            .arg(topo.agent_listen().to_string())
            .arg("--admin")
            .arg(&admin);
        // ROTOR_TEST_NO_LISTEN6: the IPv6 tests run once without the
        // agent's IPv6 listener, to show that they fail without it.
        if let Some(six) = topo.agent_listen6() {
            if std::env::var_os("ROTOR_TEST_NO_LISTEN6").is_none() {
                cmd.arg("--listen6").arg(six.to_string());
            }
        }
        cmd.args(extra);
        cmd.args(env_args(extra));
        // An endpoint's handshake is given as long relative to the machine
        // as on the host: under QEMU the unscaled 3 s failed healthy
        // endpoints while 5,000 connections were opened. A test that needs
        // the agent's own bound passes --connect-timeout itself.
        if !extra.iter().any(|a| a.starts_with("--connect-timeout")) {
            let limit = crate::scaled(std::time::Duration::from_secs(3));
            cmd.arg(format!("--connect-timeout={}", limit.as_secs_f64()));
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            // Error values without backtraces (panics keep RUST_BACKTRACE's setting),
            // so the error message is what shows in test failures.
            cmd.env("RUST_LIB_BACKTRACE", "0");
        }
        // An agent started beside a running one (an upgrade) keeps its own
        // output files.
        let mut name = "rotor-agent".to_string();
        for k in 2.. {
            if !topo.dir().join(format!("{name}.stderr")).exists() {
                break;
            }
            name = format!("rotor-agent-{k}");
        }
        let child = Child::spawn(&name, cmd, topo.dir())?;
        Ok(Agent {
            child,
            config,
            admin,
            kubernetes,
        })
    }

    /// Rewrites the config with new endpoints, atomically (temp file + rename);
    /// the agent reloads it on change.
    pub fn set_endpoints(&self, endpoints: &[SocketAddrV4]) -> Result<()> {
        if self.kubernetes {
            bail!("the agent reads Kubernetes, not a config file: change the EndpointSlice");
        }
        write_config(&self.config, endpoints)
    }

    /// Rewrites the config with `endpoints` and the policy named `policy`
    /// (`policy:` of the static configuration, as the label's value).
    pub fn set_policy(&self, endpoints: &[SocketAddrV4], policy: &str) -> Result<()> {
        if self.kubernetes {
            bail!("the agent reads Kubernetes, not a config file: relabel the Service");
        }
        write_file(&self.config, &config_yaml_with(endpoints, policy))
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The admin Unix socket the agent serves.
    pub fn admin_socket(&self) -> &Path {
        &self.admin
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `rotor status --json`, read from the admin socket.
    /// The endpoints the agent balances for `vip` (its status), None if
    /// it does not balance that address (or does not answer).
    pub fn balanced_endpoints(&self, vip: impl Into<SocketAddr>) -> Option<Vec<String>> {
        let vip: SocketAddr = vip.into();
        let status = self.status().ok()?;
        let svc = (status["services"].as_array()?.iter()).find(|s| s["vip"] == vip.to_string())?;
        let eps = svc["endpoints"].as_array()?;
        Some(
            eps.iter()
                .filter_map(|e| e.as_str().map(str::to_string))
                .collect(),
        )
    }

    pub fn status(&self) -> Result<serde_json::Value> {
        use std::io::{Read, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(&self.admin)
            .with_context(|| format!("admin socket {}", self.admin.display()))?;
        // A client that writes nothing gets the status too, 200 ms later.
        sock.write_all(b"status\n")?;
        sock.shutdown(std::net::Shutdown::Write)?;
        let mut body = String::new();
        sock.read_to_string(&mut body)?;
        let mut v: serde_json::Value = serde_json::from_str(&body).context("admin status JSON")?;
        match v.get_mut("ok") {
            Some(ok) => Ok(ok.take()),
            None => bail!("the agent refused the status: {body}"),
        }
    }

    /// The status as a client that sends no request reads it (the admin
    /// socket before its requests).
    pub fn status_without_request(&self) -> Result<serde_json::Value> {
        use std::io::Read;
        let mut sock = std::os::unix::net::UnixStream::connect(&self.admin)
            .with_context(|| format!("admin socket {}", self.admin.display()))?;
        let mut body = String::new();
        sock.read_to_string(&mut body)?;
        serde_json::from_str(&body).context("admin status JSON")
    }

    /// One kernel counter from the status (summed over CPUs).
    pub fn kernel_counter(&self, name: &str) -> Result<u64> {
        let status = self.status()?;
        status["kernel"]
            .as_array()
            .and_then(|a| a.iter().find(|kv| kv[0] == name))
            .and_then(|kv| kv[1].as_u64())
            .with_context(|| format!("no kernel counter {name} in {status}"))
    }

    /// What the agent wrote to stdout / stderr so far.
    pub fn stdout(&self) -> String {
        self.child.output(Stream::Stdout)
    }

    pub fn stderr(&self) -> String {
        self.child.output(Stream::Stderr)
    }

    /// stderr without the terminal colours tracing puts around fields.
    pub fn stderr_plain(&self) -> String {
        without_colours(&self.stderr())
    }

    /// Fails (with stderr) if the agent has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "rotor-agent exited ({status}); stderr:\n{}",
                self.child.stderr_tail()
            );
        }
        Ok(())
    }

    /// Stops the agent now (SIGTERM, then SIGKILL after 3 s).
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// `GET http://ADDR/PATH` from inside network namespace `netns` (where
/// the agent's `--health-addr` listens): the status code and the body; 0
/// when nothing answered.
pub fn http_get(netns: &str, addr: SocketAddrV4, path: &str) -> Result<(u16, String)> {
    let mut cmd = netns_command(netns, None, "curl");
    cmd.args(["-s", "-m", "3", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"));
    let out = cmd.output().context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// The YAML config the agent reads.
pub fn config_yaml(endpoints: &[SocketAddrV4]) -> String {
    config_yaml_with(endpoints, POLICY)
}

fn config_yaml_with(endpoints: &[SocketAddrV4], policy: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
    let mut y = String::from("services:\n");
    let _ = writeln!(y, "  - name: echo");
    let _ = writeln!(y, "    vip: {VIP}");
    let _ = writeln!(y, "    policy: {policy}");
    let _ = writeln!(y, "    endpoints: [{}]", eps.join(", "));
    y
}

fn write_config(path: &Path, endpoints: &[SocketAddrV4]) -> Result<()> {
    write_file(path, &config_yaml(endpoints))
}

fn write_file(path: &Path, yaml: &str) -> Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    fs::write(&tmp, yaml).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn yaml_shape() {
        let y = super::config_yaml(&[
            crate::topology::backend_addr(1),
            crate::topology::backend_addr(2),
        ]);
        assert_eq!(
            y,
            "services:\n  - name: echo\n    vip: 10.96.0.10:8080\n    policy: round-robin\n    endpoints: [10.1.1.2:8080, 10.1.2.2:8080]\n"
        );
    }
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`).
pub fn without_colours(text: &str) -> String {
    let mut parts = text.split('\u{1b}');
    let mut out = parts.next().unwrap_or_default().to_string();
    for p in parts {
        out.push_str(p.split_once('m').map_or(p, |(_, rest)| rest));
    }
    out
}

#[cfg(test)]
mod colour_tests {
    #[test]
    fn sgr_sequences_go_and_the_text_stays() {
        let line = "mixed \u{1b}[2m2026\u{1b}[0m \u{1b}[3mendpoint\u{1b}[0m\u{1b}[2m=\u{1b}[0m10.1.2.2:9000";
        assert_eq!(
            super::without_colours(line),
            "mixed 2026 endpoint=10.1.2.2:9000"
        );
    }
}

/// ROTOR_TEST_AGENT_ARGS: arguments every agent of the tests gets besides
/// its test's own, e.g. `--dedicated-upstreams 0` to run a target with
/// every stream through the multiplexers (README, "Connections to each
/// endpoint"). An option the test passes itself keeps the test's value.
fn env_args(extra: &[&str]) -> Vec<String> {
    let given = std::env::var("ROTOR_TEST_AGENT_ARGS").unwrap_or_default();
    extra_args_from(&given, extra)
}

fn extra_args_from(given: &str, extra: &[&str]) -> Vec<String> {
    let flag = |a: &str| a.split('=').next().unwrap_or(a).to_string();
    let taken: Vec<String> = (extra.iter())
        .filter(|a| a.starts_with("--"))
        .map(|a| flag(a))
        .collect();
    let mut out = Vec::new();
    let mut keep = true;
    for token in given.split_whitespace() {
        if token.starts_with("--") {
            keep = !taken.contains(&flag(token));
        }
        if keep {
            out.push(token.to_string());
        }
    }
    out
}

#[cfg(test)]
mod env_args_tests {
    use super::extra_args_from;

    #[test]
    fn the_tests_own_options_win() {
        let got = extra_args_from(
            "--dedicated-upstreams 0 --shared-upstreams=2 --log-format json",
            &["--shared-upstreams", "4"],
        );
        assert_eq!(got, ["--dedicated-upstreams", "0", "--log-format", "json"]);
        assert!(extra_args_from("", &[]).is_empty());
    }
}
