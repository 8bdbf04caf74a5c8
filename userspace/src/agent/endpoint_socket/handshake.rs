//! The agent's HTTP/2 handshake with an endpoint, in plain user space
//! before the socket joins `upstream_socks`, within `--connect-timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::h2::frame::{self, flag, kind, setting, DEFAULT_WINDOW, PREFACE};
use crate::h2::message::{Expect, Message, MessageReader};

/// What the endpoint told us during the handshake.
#[derive(Debug)]
pub struct Handshake {
    pub stream: TcpStream,
    /// Connection window the endpoint granted us beyond the default.
    pub extra_window: u32,
    /// Its SETTINGS_MAX_CONCURRENT_STREAMS (u32::MAX when it set none).
    pub max_streams: u32,
    /// Its SETTINGS_INITIAL_WINDOW_SIZE: what it lets a client send per stream.
    pub stream_window: u32,
    /// Bytes the agent read itself before the socket joined the kernel's maps.
    pub read_bytes: u64,
}

/// The endpoint's concurrent stream limit in a SETTINGS payload, if it sets one.
pub fn max_streams_in(payload: &[u8]) -> Option<u32> {
    frame::setting_in(payload, setting::MAX_CONCURRENT_STREAMS)
}

/// Our settings for every endpoint: response header blocks of all endpoints
/// reach one client decoder, so none may use the dynamic table; no push.
pub fn our_settings(initial_window: u32) -> Vec<(u16, u32)> {
    let mut s = vec![(setting::HEADER_TABLE_SIZE, 0), (setting::ENABLE_PUSH, 0)];
    if initial_window != DEFAULT_WINDOW {
        s.push((setting::INITIAL_WINDOW_SIZE, initial_window));
    }
    s
}

/// The connect and the handshake within `limit` (`--connect-timeout`).
/// The limit is the endpoint's: what it sent before the deadline counts,
/// however late the agent reads it. An agent short of CPU (a CPU quota,
/// QEMU) took its turns seconds apart with a thousand handshakes at once,
/// and failed endpoints whose SETTINGS ACK had long been in the socket.
pub async fn connect(
    endpoint: SocketAddr,
    initial_window: u32,
    limit: Duration,
) -> anyhow::Result<Handshake> {
    let deadline = Instant::now() + limit;
    let late = || format!("{endpoint}: HTTP/2 handshake timed out after {limit:?}");
    let mut stream = tokio::time::timeout_at(deadline, crate::ebpf::own_socks::connect(endpoint))
        .await
        .with_context(|| format!("{} (TCP connect)", late()))?
        .with_context(|| format!("connect {endpoint}"))?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::from(&PREFACE[..]);
    frame::settings(&mut out, &our_settings(initial_window));
    write_by(&mut stream, &out, deadline)
        .await
        .with_context(late)?;
    handshake(endpoint, stream, deadline)
        .await
        .with_context(late)
}

/// Writes within the deadline; past it, once more (a write into a fresh
/// socket's empty send buffer does not wait on the endpoint).
async fn write_by(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> anyhow::Result<()> {
    tokio::time::timeout_at(deadline, stream.write_all(bytes))
        .await
        .context("the endpoint did not take our bytes")??;
    Ok(())
}

/// Reads within the deadline; past it, only what the socket already holds
/// (a recv that does not trust tokio's readiness, which an agent that has
/// not run for a while has not brought up to date), and only LATE_READS
/// times: an endpoint that keeps sending (PINGs) cannot stretch the limit.
async fn read_by(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    late_reads: &mut u32,
) -> anyhow::Result<usize> {
    if Instant::now() < deadline {
        tokio::select! {
            biased;
            r = stream.read(buf) => return Ok(r?),
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    *late_reads += 1;
    if *late_reads > LATE_READS {
        bail!("the endpoint was still sending");
    }
    crate::sys::recv_dontwait(&*stream, buf)?
        .context("the endpoint's SETTINGS and ACK had not come")
}

/// A handshake's bytes fit one read (SETTINGS, WINDOW_UPDATE, the ACK).
const LATE_READS: u32 = 4;

async fn handshake(
    endpoint: SocketAddr,
    mut stream: TcpStream,
    deadline: Instant,
) -> anyhow::Result<Handshake> {
    let mut reader = MessageReader::new(Expect::Frames);
    let (mut got_settings, mut got_ack, mut extra_window) = (false, false, 0u32);
    let mut max_streams = u32::MAX;
    let mut stream_window = DEFAULT_WINDOW;
    let mut buf = vec![0u8; 16384];
    let (mut read_bytes, mut late_reads) = (0u64, 0);
    while !(got_settings && got_ack) {
        let n = read_by(&mut stream, &mut buf, deadline, &mut late_reads).await?;
        if n == 0 {
            bail!("{endpoint} closed the connection during the HTTP/2 handshake");
        }
        read_bytes += n as u64;
        reader.push(&buf[..n]);
        while let Some(m) = reader.next_message()? {
            let Message::Frame { header, .. } = &m else {
                continue;
            };
            match header.kind {
                kind::SETTINGS if header.has(flag::ACK) => got_ack = true,
                kind::SETTINGS => {
                    max_streams = max_streams_in(m.payload()).unwrap_or(max_streams);
                    stream_window = frame::setting_in(m.payload(), setting::INITIAL_WINDOW_SIZE)
                        .unwrap_or(stream_window);
                    let mut ack = BytesMut::new();
                    frame::settings_ack(&mut ack);
                    write_by(&mut stream, &ack, deadline).await?;
                    got_settings = true;
                }
                kind::WINDOW_UPDATE if header.stream == 0 => {
                    extra_window = extra_window
                        .saturating_add(frame::parse_window_update(m.payload()).unwrap_or(0));
                }
                kind::PING if !header.has(flag::ACK) => {
                    let mut ack = BytesMut::new();
                    frame::ping_ack(&mut ack, m.payload());
                    write_by(&mut stream, &ack, deadline).await?;
                }
                kind::GOAWAY => bail!("{endpoint} sent GOAWAY during the handshake"),
                _ => {}
            }
        }
    }
    if reader.buffered() > 0 {
        bail!("{endpoint} sent a partial frame during the handshake");
    }
    Ok(Handshake {
        stream,
        extra_window,
        max_streams,
        stream_window,
        read_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A connected pair: the endpoint's side (std, written from the test)
    /// and the agent's (tokio).
    async fn pair() -> (std::net::TcpStream, TcpStream, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let ours = TcpStream::connect(addr).await.expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        (theirs, ours, addr)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn past_the_deadline_what_the_socket_holds_still_counts() {
        let (mut endpoint, mut ours, _) = pair().await;
        let deadline = Instant::now();
        endpoint.write_all(b"settings").expect("write");
        // The bytes arrive while this runtime does not run: its readiness
        // for `ours` is out of date, as a starved agent's is.
        std::thread::sleep(Duration::from_millis(50));
        let (mut buf, mut late) = ([0u8; 64], 0);
        let n = read_by(&mut ours, &mut buf, deadline, &mut late)
            .await
            .expect("queued bytes");
        assert_eq!(&buf[..n], b"settings");
        let e = read_by(&mut ours, &mut buf, deadline, &mut late)
            .await
            .expect_err("nothing queued, past the deadline");
        assert!(format!("{e:#}").contains("had not come"), "{e:#}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_endpoint_that_keeps_sending_cannot_stretch_the_deadline() {
        let (mut endpoint, mut ours, _) = pair().await;
        endpoint.write_all(&[0u8; 64]).expect("write");
        std::thread::sleep(Duration::from_millis(50));
        let deadline = Instant::now();
        let (mut buf, mut late) = ([0u8; 1], 0);
        for _ in 0..LATE_READS {
            read_by(&mut ours, &mut buf, deadline, &mut late)
                .await
                .expect("a late read of queued bytes");
        }
        let e = read_by(&mut ours, &mut buf, deadline, &mut late)
            .await
            .expect_err("one late read too many");
        assert!(format!("{e:#}").contains("still sending"), "{e:#}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_handshake_completes_or_names_what_the_endpoint_owed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut answers, _) = listener.accept().expect("accept");
            let mut out = BytesMut::new();
            frame::settings(&mut out, &[(setting::MAX_CONCURRENT_STREAMS, 7)]);
            frame::settings_ack(&mut out);
            answers.write_all(&out).expect("write");
            let (silent, _) = listener.accept().expect("accept");
            (answers, silent)
        });
        let hs = connect(addr, DEFAULT_WINDOW, Duration::from_secs(5))
            .await
            .expect("handshake");
        assert_eq!(hs.max_streams, 7);
        let e = connect(addr, DEFAULT_WINDOW, Duration::from_millis(100))
            .await
            .expect_err("a silent endpoint");
        assert!(
            format!("{e:#}").contains("SETTINGS and ACK had not come"),
            "{e:#}"
        );
        drop(server.join());
    }
}
