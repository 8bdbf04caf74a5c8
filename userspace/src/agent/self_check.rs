//! `ready` means redirecting. Before the agent says it is ready, a process
//! in the balanced cgroup connects to a Service address only the agent
//! knows, and that connection must take rotor's whole path: cgroup/connect4
//! sends it to the agent's listener, sockops puts both ends in their socket
//! hashes, the stream parser and the client verdict hand its preface and
//! SETTINGS to the agent, and the agent's answer reaches the process. A
//! half-attached data path (a program missing, sockops not running where
//! the agent's sockets are, a listener not accepting yet) then keeps the
//! agent from saying ready instead of leaving clients on kube-proxy's path
//! for the life of their connections.
//!
//! The Service address is on loopback (127.255.254.1, a port from the
//! agent's pid): if the connect is not redirected it is refused at once
//! and goes nowhere else.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sockmap_io::SockmapReader;
use crate::ebpf::Datapath;
use crate::h2::frame::{self, kind, FrameHeader, PREFACE};

/// Why the check failed; the chain of sources says what the kernel or the
/// child answered.
#[derive(Debug, thiserror::Error)]
pub enum SelfCheckError {
    #[error("adding the self-check address")]
    Map(#[source] aya::maps::MapError),
    #[error("a connect from the balanced cgroup is not redirected and served by the agent")]
    NotServed(#[source] Box<SelfCheckError>),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

/// `.or_io("what")`: an io::Error with what was being done.
trait OrIo<T> {
    fn or_io(self, what: impl Into<String>) -> Result<T, SelfCheckError>;
}

impl<T> OrIo<T> for std::io::Result<T> {
    fn or_io(self, what: impl Into<String>) -> Result<T, SelfCheckError> {
        self.map_err(|source| SelfCheckError::Io {
            what: what.into(),
            source,
        })
    }
}

fn failed<T>(why: impl Into<String>) -> Result<T, SelfCheckError> {
    Err(SelfCheckError::Failed(why.into()))
}

/// The service id connect4 records for the check's connections; real
/// Services count up from 1.
pub const SERVICE_ID: u32 = u32::MAX;

/// How long one attempt may take, and how long the agent keeps trying.
const ATTEMPT: Duration = Duration::from_secs(2);
const LIMIT: Duration = Duration::from_secs(10);

/// The address only the check dials.
pub fn vip() -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(127, 255, 254, 1),
        20_000 + (std::process::id() % 40_000) as u16,
    )
}

/// Runs the check until it passes, or fails after LIMIT with what went
/// wrong the last time.
pub async fn run(dp: &Datapath, cgroup: &Path) -> Result<(), SelfCheckError> {
    let vip = vip();
    dp.set_service(vip.into(), SERVICE_ID)
        .map_err(SelfCheckError::Map)?;
    let start = tokio::time::Instant::now();
    let result = loop {
        match attempt(vip, cgroup).await {
            Ok(()) => break Ok(()),
            Err(e) if start.elapsed() + ATTEMPT > LIMIT => break Err(e),
            Err(e) => {
                tracing::debug!(error = %chain(&e), "self-check failed; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let _ = dp.remove_service(vip.into());
    // `ready` follows, and means the self-check's socket has left the maps:
    // with `--max-sockets 5` the one a test's second client wanted was
    // still taken by it for a moment after the check's process had its
    // answer (tests/tests/isolation.rs, full socket maps).
    let _ = tokio::time::timeout(ATTEMPT, async {
        while ANSWERING.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    result.map_err(|e| SelfCheckError::NotServed(Box::new(e)))
}

/// Self-check connections the agent is answering now.
static ANSWERING: AtomicUsize = AtomicUsize::new(0);

struct Answering;

impl Answering {
    fn new() -> Answering {
        ANSWERING.fetch_add(1, Ordering::SeqCst);
        Answering
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        ANSWERING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An error and its sources on one line, for the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// One connect from a child process (connect4 leaves the agent's own
/// connects alone), moved into the balanced cgroup first when the agent
/// runs outside it.
async fn attempt(vip: SocketAddrV4, cgroup: &Path) -> Result<(), SelfCheckError> {
    let exe = std::env::current_exe().or_io("the agent's executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--self-check-connect")
        .arg(vip.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .or_io("starting the self-check process")?;
    let Some(pid) = child.id() else {
        return failed("the self-check process exited before it was moved");
    };
    let inside = crate::ebpf::own_cgroup(cgroup)
        .is_some_and(|own| crate::ebpf::cgroup_is_within(&own, cgroup));
    if !inside {
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).or_io(format!(
            "moving the self-check process into {}",
            cgroup.display()
        ))?;
    }
    let (Some(mut stdin), Some(mut stderr)) = (child.stdin.take(), child.stderr.take()) else {
        return failed("the self-check process has no stdin or stderr");
    };
    stdin
        .write_all(b"go\n")
        .await
        .or_io("telling the self-check process to go")?;
    drop(stdin);
    let waited = tokio::time::timeout(ATTEMPT, child.wait()).await;
    let mut why = String::new();
    let _ = tokio::time::timeout(Duration::from_millis(100), stderr.read_to_string(&mut why)).await;
    match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => failed(format!(
            "the self-check connect failed ({status}): {}",
            why.trim()
        )),
        Ok(Err(e)) => Err(e).or_io("waiting for the self-check process"),
        Err(_) => failed(format!(
            "the self-check connect got no answer within {ATTEMPT:?}"
        )),
    }
}

/// The agent's side: the connection came through the kernel's path if its
/// preface and SETTINGS arrive through the socket hash (the verdict hands
/// them over) and the parser has a state for the socket; the answer is a
/// SETTINGS frame.
/// `spare`: where the kernel handed its frames from the first, if sockops
/// gave it a spare tap (spare_taps.rs); else A's own ingress.
pub async fn answer(
    dp: &Datapath,
    a: TcpStream,
    spare: Option<super::tap::Tap>,
) -> Result<(), SelfCheckError> {
    let _answering = Answering::new();
    // sockops made its parser state; until it is forgotten it takes room
    // in the per-socket maps that a client could otherwise have
    let _room = dp.count_room(1);
    let cookie = crate::ebpf::socket_cookie(&a).or_io("SO_COOKIE")?;
    let answered = answer_on(dp, a, cookie, spare.as_ref()).await;
    dp.forget_cookie(cookie);
    answered
}

async fn answer_on(
    dp: &Datapath,
    a: TcpStream,
    cookie: u64,
    spare: Option<&super::tap::Tap>,
) -> Result<(), SelfCheckError> {
    let mut reader = SockmapReader::default();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let want = PREFACE.len() + frame::HEADER_LEN;
    while got.len() < want {
        let read = async {
            match spare {
                Some(tap) => reader.recv(tap.reader(), &mut buf).await,
                None => reader.recv(&a, &mut buf).await,
            }
        };
        let Ok(n) = tokio::time::timeout(ATTEMPT, read).await else {
            return failed("self-check client silent");
        };
        let n = n.or_io("reading the self-check client")?;
        if n == 0 {
            return failed("self-check client closed early");
        }
        got.extend_from_slice(&buf[..n]);
    }
    if &got[..PREFACE.len()] != PREFACE {
        return failed("self-check client sent no preface");
    }
    let parsed = dp
        .parse_state(cookie)
        .map_or(0, |st| crate::ebpf::verdict_bytes(&st));
    if (parsed as usize) < want {
        return failed(format!(
            "the stream parser did not see the self-check connection ({parsed} bytes parsed)"
        ));
    }
    let mut out = bytes::BytesMut::new();
    frame::settings(&mut out, &[]);
    a.writable().await.or_io("waiting to answer")?;
    let mut a = a;
    a.write_all(&out)
        .await
        .or_io("answering the self-check client")?;
    // The check's process closes first, so the TIME-WAIT is its, not the
    // listener's port.
    let _ = tokio::time::timeout(ATTEMPT, async {
        while reader
            .recv_confirmed(&a, &mut buf)
            .await
            .is_ok_and(|n| n > 0)
        {}
    })
    .await;
    Ok(())
}

/// The child's side (`rotor-agent --self-check-connect ADDR`): wait for the
/// agent's go (it may first move this process into the balanced cgroup),
/// connect, send a preface and SETTINGS, expect a SETTINGS back.
pub async fn connect(vip: SocketAddrV4) -> Result<(), SelfCheckError> {
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .or_io("waiting for the agent's go")?;
    let mut s = TcpStream::connect(vip)
        .await
        .or_io(format!("connect {vip}"))?;
    let mut out = bytes::BytesMut::from(&PREFACE[..]);
    frame::settings(&mut out, &[]);
    s.write_all(&out).await.or_io("sending a preface")?;
    let mut head = [0u8; frame::HEADER_LEN];
    s.read_exact(&mut head)
        .await
        .or_io("reading the agent's answer")?;
    match FrameHeader::parse(&head) {
        Some(h) if h.kind == kind::SETTINGS => Ok(()),
        other => failed(format!("unexpected answer {other:?}")),
    }
}
