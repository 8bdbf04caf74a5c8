//! `Backend`: an nghttpd serving files in a backend namespace, with a real
//! per-backend request count taken from its verbose log.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::content;
use crate::process::{netns_command, Child, Stream};

/// Port every backend serves on.
pub const BACKEND_PORT: u16 = 8080;

/// Files under every backend's document root.
pub const FILES: [&str; 4] = ["whoami", "big", "100b", "64k"];

/// nghttpd in a namespace, serving `whoami` (its name), `big` (8 MiB, the same on
/// every backend), `100b` and `64k`; it echoes POST/PUT bodies (`--echo-upload`).
#[derive(Debug)]
pub struct Backend {
    name: String,
    netns: String,
    addr: SocketAddrV4,
    child: Child,
    counter: Mutex<LogCounter>,
    count_requests: bool,
}

impl Backend {
    /// Writes the document root under `dir`, starts nghttpd in `netns` and waits
    /// until it listens (10 s). Requests are counted (nghttpd `-v`).
    pub fn start(name: &str, netns: &str, addr: SocketAddrV4, dir: &Path) -> Result<Backend> {
        Backend::start_with(name, netns, addr, dir, true)
    }

    /// Like [`Backend::start`]; with `count_requests` false nghttpd runs without
    /// `-v`, about twice as fast (for benchmarks), and [`Backend::requests`] fails.
    pub fn start_with(
        name: &str,
        netns: &str,
        addr: SocketAddrV4,
        dir: &Path,
        count_requests: bool,
    ) -> Result<Backend> {
        Backend::start_on(name, netns, addr, dir, count_requests, false)
    }

    /// Like [`Backend::start_with`]; with `ipv6` nghttpd listens on every
    /// address of both families (two sockets: `listen 0.0.0.0` and
    /// `listen :::`), not on IPv4 alone.
    pub fn start_on(
        name: &str,
        netns: &str,
        addr: SocketAddrV4,
        dir: &Path,
        count_requests: bool,
        ipv6: bool,
    ) -> Result<Backend> {
        let htdocs = dir.join(format!("htdocs-{name}"));
        write_htdocs(&htdocs, name)?;
        let mut cmd = netns_command(netns, None, "nghttpd");
        // -v prints every frame with its header fields: the ":path" lines are the
        // request count. It flushes per frame, so the count is current. It costs:
        // ~1 KB of log per request and about half of nghttpd's request rate.
        cmd.args(["--no-tls", "--echo-upload"]);
        if !ipv6 {
            cmd.args(["-a", "0.0.0.0"]);
        }
        if count_requests {
            cmd.arg("-v");
        }
        cmd.arg("-d").arg(&htdocs).arg(BACKEND_PORT.to_string());
        let mut child = Child::spawn(&format!("nghttpd-{name}"), cmd, dir)?;
        if count_requests {
            child
                .wait_for_line(Stream::Stdout, "listen 0.0.0.0", Duration::from_secs(10))
                .with_context(|| format!("starting backend {name}"))?;
            if ipv6 {
                child
                    .wait_for_line(Stream::Stdout, "listen :::", Duration::from_secs(10))
                    .with_context(|| format!("starting backend {name} on IPv6"))?;
            }
        } else {
            // Without -v nghttpd prints nothing: wait for its listening socket.
            wait_listening(&mut child, addr.port(), Duration::from_secs(10))
                .with_context(|| format!("starting backend {name}"))?;
        }
        let log = child.path(Stream::Stdout).to_path_buf();
        Ok(Backend {
            name: name.to_string(),
            netns: netns.to_string(),
            addr,
            child,
            counter: Mutex::new(LogCounter::new(log)),
            count_requests,
        })
    }

    /// `be1`, `be2`, …: also the body of `/whoami`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `10.1.k.2:8080`.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Requests this backend has received so far (request HEADERS with a `:path`).
    pub fn requests(&self) -> Result<u64> {
        if !self.count_requests {
            anyhow::bail!("backend {} runs without request counting", self.name);
        }
        let mut counter = self
            .counter
            .lock()
            .map_err(|_| anyhow::anyhow!("counter lock poisoned"))?;
        counter.update()
    }

    /// The verbose nghttpd log (stdout).
    pub fn log_path(&self) -> &Path {
        self.child.path(Stream::Stdout)
    }

    /// Stops nghttpd (SIGTERM, then SIGKILL), as when a pod goes away.
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// Waits until the namespace of `child` has a TCP socket listening on `port`
/// (`/proc/PID/net/tcp` shows the sockets of the process's namespace).
fn wait_listening(child: &mut Child, port: u16, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let needle = format!(":{port:04X} 00000000:0000 0A");
    loop {
        let tcp = fs::read_to_string(format!("/proc/{}/net/tcp", child.pid())).unwrap_or_default();
        if tcp.lines().any(|l| l.contains(&needle)) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}):\n{}",
                child.name(),
                child.stderr_tail()
            );
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "{} not listening on port {port} within {timeout:?}",
                child.name()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_htdocs(htdocs: &Path, name: &str) -> Result<()> {
    fs::create_dir_all(htdocs).with_context(|| format!("creating {}", htdocs.display()))?;
    let files: [(&str, Vec<u8>); 4] = [
        ("whoami", name.as_bytes().to_vec()),
        ("big", content::big()),
        ("100b", content::pseudo_random(100, 100)),
        ("64k", content::pseudo_random(64 * 1024, 64)),
    ];
    for (file, body) in files {
        let p = htdocs.join(file);
        fs::write(&p, body).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Counts `:path` request lines in a growing log, reading only new bytes.
#[derive(Debug)]
struct LogCounter {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    count: u64,
}

impl LogCounter {
    fn new(path: PathBuf) -> LogCounter {
        LogCounter {
            path,
            offset: 0,
            partial: Vec::new(),
            count: 0,
        }
    }

    fn update(&mut self) -> Result<u64> {
        let mut f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        // Count complete lines only; keep the unterminated tail for next time.
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(self.count);
        };
        let complete: Vec<u8> = self.partial.drain(..=last_nl).collect();
        self.count += count_requests(&complete);
        Ok(self.count)
    }
}

/// Request lines in nghttpd -v output look like
/// `[id=1] [  0.504] recv (stream_id=1) :path: /whoami`.
fn count_requests(log: &[u8]) -> u64 {
    log.split(|&b| b == b'\n')
        .filter(|line| contains(line, b"] recv (stream_id=") && contains(line, b") :path: "))
        .count() as u64
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_path_lines() {
        let log = b"[id=1] [  0.504] recv (stream_id=1) :method: GET\n\
[id=1] [  0.504] recv (stream_id=1) :path: /whoami\n\
[id=1] [  0.504] recv HEADERS frame <length=36, flags=0x05, stream_id=1>\n\
[id=2] [  0.604] recv (stream_id=3) :path: /big\n";
        assert_eq!(super::count_requests(log), 2);
    }
}
