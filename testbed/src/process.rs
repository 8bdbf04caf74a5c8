//! `Child`: a process we started, with its output in files; killed by pid on drop.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{describe, kill_with_parent, tail};

/// Which output stream of a child to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A command that runs `program` inside network namespace `netns` and, when
/// `cgroup` is given, inside that cgroup too.
///
/// It enters the namespace with `nsenter --net=/var/run/netns/NAME`, which only
/// switches the network namespace. `ip netns exec` would also remount /sys, so
/// the cgroup tree would not be visible inside, and the agent must open its
/// `--cgroup` directory. For the cgroup, the wrapper shell first writes its own
/// pid into `cgroup.procs`, then execs nsenter, which execs the program
/// (membership is inherited; the spawned pid stays the program's pid).
pub fn netns_command<S: AsRef<OsStr>>(netns: &str, cgroup: Option<&Path>, program: S) -> Command {
    let ns_path = format!("--net={NETNS_RUN_DIR}/{netns}");
    match cgroup {
        None => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(ns_path).arg("--").arg(program);
            cmd
        }
        Some(cg) => {
            // sh: $0 = cgroup dir, $1 = --net=PATH, then the program and its arguments.
            let script = r#"cg=$0; ns=$1; shift; echo $$ > "$cg/cgroup.procs" && exec nsenter "$ns" -- "$@""#;
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(script).arg(cg).arg(ns_path).arg(program);
            cmd
        }
    }
}

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// A child process whose stdout/stderr go to `<dir>/<name>.stdout|stderr`.
/// Dropping it sends SIGTERM to its pid, then SIGKILL after 3 s, and reaps it.
#[derive(Debug)]
pub struct Child {
    name: String,
    desc: String,
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Child {
    /// Spawns `cmd` with stdin from /dev/null and output into files under `dir`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Child> {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let desc = describe(&cmd);
        let out =
            File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err =
            File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        kill_with_parent(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {name}: `{desc}`"))?;
        Ok(Child {
            name: name.to_string(),
            desc,
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, stream: Stream) -> &Path {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    /// Everything the child wrote to `stream` so far.
    pub fn output(&self, stream: Stream) -> String {
        fs::read(self.path(stream))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of stderr (for error messages).
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr, 15)
    }

    /// `Some(status)` once the child has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.status)
    }

    /// Waits until a line of `stream` contains `needle`; returns that line.
    /// Fails when the child exits first or `timeout` passes (stderr included).
    pub fn wait_for_line(
        &mut self,
        stream: Stream,
        needle: &str,
        timeout: Duration,
    ) -> Result<String> {
        self.wait_for(stream, needle, |l| l.contains(needle), timeout)
    }

    /// Waits until a line of `stream` satisfies `pred` (`what` names it in errors).
    pub fn wait_for(
        &mut self,
        stream: Stream,
        what: &str,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let needle = what;
        let timeout = crate::scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.output(stream);
            if let Some(line) = text.lines().find(|l| pred(l)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.try_wait()? {
                // One more read: the line may have been written just before exit.
                if let Some(line) = self.output(stream).lines().find(|l| pred(l)) {
                    return Ok(line.to_string());
                }
                bail!(
                    "{} exited ({status}) before printing {needle:?}\n`{}`\nstderr:\n{}",
                    self.name,
                    self.desc,
                    self.stderr_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}\n`{}`\nstderr:\n{}",
                    self.name,
                    self.desc,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit; kills it and fails after `timeout`
    /// (scaled to the machine, like every bound of the waits here).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let timeout = crate::scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "{} still running after {timeout:?}: killed\nstderr:\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the child's pid (only if it has not been reaped).
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: plain syscall on the pid of our own unreaped child.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL; reaps the child. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.try_wait() {
            return Some(status);
        }
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(3));
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill(); // SIGKILL to this pid only
        self.status = self.child.wait().ok();
        self.status
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}
