//! HAProxy (Debian's) as the L7 reference: an h2c proxy in the node namespace,
//! round robin per request, with its runtime API on a Unix socket.

use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use rotor_testbed::process::{netns_command, Child};

/// One HAProxy backend section: `name`, the address its frontend binds, servers.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub bind: SocketAddrV4,
    pub servers: Vec<SocketAddrV4>,
    /// How many of `servers` are enabled at start (the rest are `disabled`,
    /// to be enabled through the runtime API).
    pub enabled: usize,
}

/// A running `haproxy -db` (foreground); stopped on drop.
#[derive(Debug)]
pub struct HaProxy {
    child: Child,
    socket: PathBuf,
    pools: Vec<Pool>,
}

/// Server `k` (0-based) of a pool is called `s{k+1}`.
fn server_name(k: usize) -> String {
    format!("s{}", k + 1)
}

/// The configuration: h2c on both sides, round robin per request, connection
/// reuse towards the servers (`http-reuse always`), no logging.
pub fn config(pools: &[Pool], socket: &Path) -> String {
    let mut c = format!(
        "global\n    nbthread 2\n    maxconn 4000\n    stats socket {} mode 600 level admin\n\n\
defaults\n    mode http\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n    http-reuse always\n\n",
        socket.display()
    );
    for p in pools {
        c.push_str(&format!(
            "frontend fe_{n}\n    bind {b} proto h2\n    default_backend {n}\n\nbackend {n}\n    balance roundrobin\n",
            n = p.name,
            b = p.bind
        ));
        for (k, s) in p.servers.iter().enumerate() {
            let disabled = if k >= p.enabled { " disabled" } else { "" };
            c.push_str(&format!(
                "    server {} {s} proto h2{disabled}\n",
                server_name(k)
            ));
        }
        c.push('\n');
    }
    c
}

impl HaProxy {
    /// Writes the config under `dir` and starts haproxy in `netns`; waits until
    /// its runtime API answers (10 s).
    pub fn start(netns: &str, dir: &Path, pools: Vec<Pool>) -> Result<HaProxy> {
        let cfg = dir.join("haproxy.cfg");
        let socket = dir.join("haproxy.sock");
        std::fs::write(&cfg, config(&pools, &socket))
            .with_context(|| format!("writing {}", cfg.display()))?;
        let mut cmd = netns_command(netns, None, "haproxy");
        cmd.arg("-db").arg("-f").arg(&cfg);
        let mut child = Child::spawn("haproxy", cmd, dir)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut hp = loop {
            if let Some(status) = child.try_wait()? {
                bail!("haproxy exited ({status}):\n{}", child.stderr_tail());
            }
            if socket.exists() {
                break HaProxy {
                    child,
                    socket,
                    pools,
                };
            }
            if Instant::now() > deadline {
                bail!(
                    "haproxy did not open {} within 10 s:\n{}",
                    socket.display(),
                    child.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        hp.command("show info").context("haproxy runtime API")?;
        Ok(hp)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends one runtime-API command and returns the answer.
    pub fn command(&mut self, cmd: &str) -> Result<String> {
        let mut last = None;
        for _ in 0..50 {
            match UnixStream::connect(&self.socket) {
                Ok(mut s) => {
                    s.write_all(format!("{cmd}\n").as_bytes())?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    return Ok(out);
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("haproxy runtime API {}: {:?}", self.socket.display(), last)
    }

    /// Enables exactly the first `n` servers of pool `pool` (runtime API).
    pub fn set_enabled(&mut self, pool: &str, n: usize) -> Result<()> {
        let count = self
            .pools
            .iter()
            .find(|p| p.name == pool)
            .with_context(|| format!("no haproxy pool {pool}"))?
            .servers
            .len();
        let mut cmds = Vec::new();
        for k in 0..count {
            let verb = if k < n { "enable" } else { "disable" };
            cmds.push(format!("{verb} server {pool}/{}", server_name(k)));
        }
        // One connection, commands separated by `;`.
        let out = self.command(&cmds.join(";"))?;
        if !out.trim().is_empty() {
            bail!("haproxy: {out}");
        }
        Ok(())
    }

    /// Fails with stderr if haproxy exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("haproxy exited ({status}):\n{}", self.child.stderr_tail());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_shape() {
        let p = super::Pool {
            name: "rust".into(),
            bind: "10.0.0.1:9080".parse().unwrap(),
            servers: vec![
                "10.1.1.2:8081".parse().unwrap(),
                "10.1.2.2:8081".parse().unwrap(),
            ],
            enabled: 1,
        };
        let c = super::config(&[p], std::path::Path::new("/tmp/x.sock"));
        assert!(c.contains("bind 10.0.0.1:9080 proto h2"));
        assert!(c.contains("server s1 10.1.1.2:8081 proto h2\n"));
        assert!(c.contains("server s2 10.1.2.2:8081 proto h2 disabled\n"));
        assert!(c.contains("balance roundrobin"));
    }
}
