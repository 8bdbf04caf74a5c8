//! `Netns`: a named network namespace that is deleted on drop.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

use crate::util::run;

/// A network namespace created with `ip netns add`, deleted with `ip netns del`
/// on drop (which also destroys the veth ends inside it and its iptables rules).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `iptables-restore --noflush` inside this namespace.
    pub fn iptables_restore(&self, rules: &str) -> Result<()> {
        self.restore("iptables-restore", rules)
    }

    /// `ip6tables-restore --noflush` inside this namespace.
    pub fn ip6tables_restore(&self, rules: &str) -> Result<()> {
        self.restore("ip6tables-restore", rules)
    }

    fn restore(&self, program: &str, rules: &str) -> Result<()> {
        let mut child = self
            .command(program)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {program}"))?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(rules.as_bytes())
            .context("writing rules")?;
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}\n{rules}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Creates the namespace and brings up its `lo`. Names must start with `rotor-`.
    pub fn create(name: &str) -> Result<Netns> {
        if !name.starts_with("rotor-") || name.contains('/') {
            bail!("netns name {name:?} must start with `rotor-` and contain no `/`");
        }
        if Path::new("/var/run/netns").join(name).exists() {
            bail!("netns {name} already exists: refusing to take it over");
        }
        run(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("creating netns {name}"))?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` running `program args...` inside this namespace
    /// (`ip netns exec NAME program args...`; `ip` execs in place, so the
    /// spawned pid is the program's pid).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args...` inside the namespace; fails if it exits non-zero.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        run(self.command(program).args(args)).with_context(|| format!("in netns {}", self.name))
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
            .with_context(|| format!("in netns {}", self.name))
    }

    /// Sets a sysctl inside the namespace (e.g. `net.ipv4.ip_forward`, `1`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let res = run(Command::new("ip").args(["netns", "del", &self.name]));
        if let Err(e) = res {
            eprintln!("rotor-testbed: deleting netns {}: {e:#}", self.name);
        }
    }
}

/// Names of all namespaces `ip netns list` shows.
pub fn list() -> Result<Vec<String>> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}
