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
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::sockmap_io::SockmapReader;
use crate::ebpf::Datapath;
use crate::h2::frame::{self, kind, FrameHeader, PREFACE};

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
pub async fn run(dp: &Datapath, cgroup: &Path) -> anyhow::Result<()> {
    let vip = vip();
    dp.set_service(vip, SERVICE_ID)
        .context("adding the self-check address")?;
    let start = tokio::time::Instant::now();
    let result = loop {
        match attempt(vip, cgroup).await {
            Ok(()) => break Ok(()),
            Err(e) if start.elapsed() + ATTEMPT > LIMIT => break Err(e),
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "self-check failed; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let _ = dp.remove_service(vip);
    result.context("a connect from the balanced cgroup is not redirected and served by the agent")
}

/// One connect from a child process (connect4 leaves the agent's own
/// connects alone), moved into the balanced cgroup first when the agent
/// runs outside it.
async fn attempt(vip: SocketAddrV4, cgroup: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("the agent's executable")?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--self-check-connect")
        .arg(vip.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the self-check process")?;
    let pid = child.id().context("self-check process pid")?;
    let inside = crate::ebpf::own_cgroup(cgroup)
        .is_some_and(|own| crate::ebpf::cgroup_is_within(&own, cgroup));
    if !inside {
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving the self-check process into {}", cgroup.display()))?;
    }
    let mut stdin = child.stdin.take().context("self-check stdin")?;
    stdin.write_all(b"go\n").await?;
    drop(stdin);
    let mut stderr = child.stderr.take().context("self-check stderr")?;
    let waited = tokio::time::timeout(ATTEMPT, child.wait()).await;
    let mut why = String::new();
    let _ = tokio::time::timeout(Duration::from_millis(100), stderr.read_to_string(&mut why)).await;
    match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => bail!("the self-check connect failed ({status}): {}", why.trim()),
        Ok(Err(e)) => Err(e).context("waiting for the self-check process"),
        Err(_) => bail!("the self-check connect got no answer within {ATTEMPT:?}"),
    }
}

/// The agent's side: the connection came through the kernel's path if its
/// preface and SETTINGS arrive through the socket hash (the verdict hands
/// them over) and the parser has a state for the socket; the answer is a
/// SETTINGS frame.
pub async fn answer(dp: &Datapath, a: TcpStream) -> anyhow::Result<()> {
    let cookie = crate::ebpf::socket_cookie(&a)?;
    let mut reader = SockmapReader::default();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let want = PREFACE.len() + frame::HEADER_LEN;
    while got.len() < want {
        let n = tokio::time::timeout(ATTEMPT, reader.recv(&a, &mut buf))
            .await
            .context("self-check client silent")??;
        if n == 0 {
            bail!("self-check client closed early");
        }
        got.extend_from_slice(&buf[..n]);
    }
    if &got[..PREFACE.len()] != PREFACE {
        bail!("self-check client sent no preface");
    }
    let parsed = dp
        .parse_state(cookie)
        .map_or(0, |st| crate::ebpf::verdict_bytes(&st));
    if (parsed as usize) < want {
        bail!("the stream parser did not see the self-check connection ({parsed} bytes parsed)");
    }
    let mut out = bytes::BytesMut::new();
    frame::settings(&mut out, &[]);
    a.writable().await?;
    let mut a = a;
    a.write_all(&out).await?;
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
pub async fn connect(vip: SocketAddrV4) -> anyhow::Result<()> {
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    let mut s = TcpStream::connect(vip)
        .await
        .with_context(|| format!("connect {vip}"))?;
    let mut out = bytes::BytesMut::from(&PREFACE[..]);
    frame::settings(&mut out, &[]);
    s.write_all(&out).await?;
    let mut head = [0u8; frame::HEADER_LEN];
    s.read_exact(&mut head)
        .await
        .context("reading the agent's answer")?;
    match FrameHeader::parse(&head) {
        Some(h) if h.kind == kind::SETTINGS => Ok(()),
        other => bail!("unexpected answer {other:?}"),
    }
}
