//! The multiplexer against an in-process HTTP/2 endpoint (the `h2` crate's
//! server) and clients on loopback: what goes through, over how many
//! connections, and what one client's bad bytes can reach.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::PoolLimits;
use super::Mux;

mod budget;
mod goaway;
mod lost;

/// An endpoint that answers each request with "<path> <request bytes>",
/// after `x-delay-ms`, with trailers `x-got: <bytes>` if asked by
/// `x-trailers`, and resets a request to `/refuse` with REFUSED_STREAM.
/// Counts the TCP connections it accepted.
async fn endpoint() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    endpoint_going_away(false).await
}

/// Like [`endpoint`]; with `going_away`, each connection starts a graceful
/// shutdown (GOAWAY) as soon as it has its first stream, and answers that
/// one still.
async fn endpoint_going_away(going_away: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(io).await.unwrap();
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(answer(req, respond));
                    if going_away {
                        conn.graceful_shutdown();
                    }
                }
            });
        }
    });
    (addr, accepted)
}

async fn answer(req: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
    let (parts, mut body) = req.into_parts();
    if parts.uri.path() == "/refuse" {
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    }
    let mut got = 0usize;
    while let Some(Ok(chunk)) = body.data().await {
        got += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Some(ms) = parts.headers.get("x-delay-ms") {
        let ms: u64 = ms.to_str().unwrap().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = parts.uri.path().strip_prefix("/big/") {
        return answer_big(respond, n.parse().unwrap()).await;
    }
    let trailers = parts.headers.contains_key("x-trailers");
    let mut response = Response::new(());
    // a field no static entry has: an encoder free to index would
    response
        .headers_mut()
        .insert("x-served-by", "endpoint".parse().unwrap());
    let mut out = respond.send_response(response, false).unwrap();
    let text = Bytes::from(format!("{} {got}", parts.uri.path()));
    out.reserve_capacity(text.len());
    out.send_data(text, !trailers).unwrap();
    if trailers {
        let mut t = HeaderMap::new();
        t.insert("x-got", got.to_string().parse().unwrap());
        out.send_trailers(t).unwrap();
    }
}

/// `n` bytes of response body, sent as the client's windows take them.
async fn answer_big(mut respond: h2::server::SendResponse<Bytes>, mut n: usize) {
    let mut out = respond.send_response(Response::new(()), false).unwrap();
    while n > 0 {
        out.reserve_capacity(n.min(16_384));
        let Some(Ok(got)) = std::future::poll_fn(|cx| out.poll_capacity(cx)).await else {
            return;
        };
        let k = got.min(n);
        if k == 0 || out.send_data(Bytes::from(vec![0u8; k]), k == n).is_err() {
            return;
        }
        n -= k;
    }
}

/// A node budget nothing here reaches.
fn unbounded() -> Arc<crate::agent::budget::Budget> {
    crate::agent::budget::Budget::new(usize::MAX)
}

fn limits(shared: usize) -> PoolLimits {
    PoolLimits {
        dedicated: 0,
        shared,
        connect_timeout: Duration::from_secs(5),
    }
}

async fn client(mux: &Mux) -> h2::client::SendRequest<Bytes> {
    let io = TcpStream::connect(mux.addr()).await.unwrap();
    let (send, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("http://svc{path}")).body(()).unwrap()
}

/// Sends `req` with `body`; returns the response body, or the reset reason.
async fn exchange(
    send: &h2::client::SendRequest<Bytes>,
    req: Request<()>,
    body: Option<Bytes>,
) -> Result<(String, Option<HeaderMap>), Reason> {
    let mut send = send.clone().ready().await.unwrap();
    let (response, mut upload) = send.send_request(req, body.is_none()).unwrap();
    if let Some(mut b) = body {
        while !b.is_empty() {
            upload.reserve_capacity(b.len());
            let n = std::future::poll_fn(|cx| upload.poll_capacity(cx))
                .await
                .unwrap()
                .unwrap();
            upload.send_data(b.split_to(n.min(b.len())), false).unwrap();
        }
        upload.send_data(Bytes::new(), true).unwrap();
    }
    let response = response.await.map_err(|e| e.reason().unwrap())?;
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.reason().unwrap())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(|e| e.reason().unwrap())?;
    Ok((String::from_utf8(text).unwrap(), trailers))
}

/// The error code of the first GOAWAY among whole frames in `bytes`.
fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let frame = bytes.get(..9 + len)?;
        if frame[3] == 7 {
            return Some(u32::from_be_bytes(frame.get(13..17)?.try_into().ok()?));
        }
        bytes = &bytes[9 + len..];
    }
    None
}

#[tokio::test]
async fn streams_of_many_local_connections_share_at_most_the_limit() {
    let (addr, accepted) = endpoint().await;
    let mux = Mux::start(addr, limits(2), unbounded()).unwrap();
    let mut calls = Vec::new();
    for c in 0..10 {
        let send = client(&mux).await;
        for k in 0..5 {
            let send = send.clone();
            calls.push(tokio::spawn(async move {
                let path = format!("/c{c}/s{k}");
                let got = exchange(&send, get(&path), None).await;
                (path, got)
            }));
        }
    }
    for call in calls {
        let (path, got) = call.await.unwrap();
        assert_eq!(got.unwrap().0, format!("{path} 0"));
    }
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&n),
        "the endpoint accepted {n} connections"
    );
    let counts = mux.counts();
    assert_eq!(counts.streams, 50);
    assert_eq!(counts.refused, 0);
    assert_eq!(counts.connections_opened, n as u64);
}

#[tokio::test]
async fn request_and_response_bodies_and_trailers_pass_both_ways() {
    let (addr, _) = endpoint().await;
    let mux = Mux::start(addr, limits(1), unbounded()).unwrap();
    let send = client(&mux).await;
    // larger than every window on the way: it moves as they open
    let upload = Bytes::from(vec![7u8; 3 * 1024 * 1024 + 5]);
    let mut req = Request::post("http://svc/up").body(()).unwrap();
    req.headers_mut().insert("x-trailers", "1".parse().unwrap());
    let (text, trailers) = exchange(&send, req, Some(upload)).await.unwrap();
    assert_eq!(text, format!("/up {}", 3 * 1024 * 1024 + 5));
    assert_eq!(
        trailers.unwrap().get("x-got").unwrap(),
        &(3 * 1024 * 1024 + 5).to_string()
    );
}

#[tokio::test]
async fn a_stream_the_endpoint_refuses_is_refused_to_the_client() {
    let (addr, _) = endpoint().await;
    let mux = Mux::start(addr, limits(1), unbounded()).unwrap();
    let send = client(&mux).await;
    assert_eq!(
        exchange(&send, get("/refuse"), None).await.unwrap_err(),
        Reason::REFUSED_STREAM
    );
    // the shared connection carries on
    assert_eq!(exchange(&send, get("/ok"), None).await.unwrap().0, "/ok 0");
}

#[tokio::test]
async fn an_undecodable_header_block_ends_only_its_own_local_connection() {
    let (addr, accepted) = endpoint().await;
    let mux = Mux::start(addr, limits(1), unbounded()).unwrap();
    let good = client(&mux).await;
    let mut slow = get("/slow");
    slow.headers_mut()
        .insert("x-delay-ms", "300".parse().unwrap());
    let in_flight = tokio::spawn(async move { exchange(&good, slow, None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A client whose header block indexes entry 0 of the HPACK table,
    // which does not exist (RFC 7541 §6.1): a connection error.
    let mut bad = TcpStream::connect(mux.addr()).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
    out.extend_from_slice(&[0, 0, 1, 1, 5, 0, 0, 0, 1, 0x80]); // HEADERS, END_STREAM | END_HEADERS
    bad.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match bad.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the bad client's connection stayed open");
    // RFC 9113 §4.3's answer (h2 itself says PROTOCOL_ERROR: local_watch.rs),
    // of this connection only
    assert_eq!(
        goaway_code(&seen),
        Some(u32::from(Reason::COMPRESSION_ERROR)),
        "not GOAWAY(COMPRESSION_ERROR): {seen:?}"
    );

    assert_eq!(in_flight.await.unwrap().unwrap().0, "/slow 0");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the shared connection lived on"
    );
    assert_eq!(mux.counts().connections, 1);
}

/// The kernel passes the multiplexer's header blocks to the client as they
/// are, beside other upstreams' blocks, so they must not use the HPACK
/// dynamic table, which the agent turns off with SETTINGS_HEADER_TABLE_SIZE
/// 0 as for any endpoint: two responses carrying the same field decode with
/// a table of size 0.
#[tokio::test]
async fn response_header_blocks_leave_the_dynamic_table_alone() {
    let (addr, _) = endpoint().await;
    let mux = Mux::start(addr, limits(1), unbounded()).unwrap();
    let mut io = TcpStream::connect(mux.addr()).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]); // SETTINGS HEADER_TABLE_SIZE 0
                                                                           // GET / http, :authority "svc" (static entries and a literal only)
    let block = [0x82, 0x86, 0x84, 0x01, 3, b's', b'v', b'c'];
    for stream in [1u8, 3] {
        out.extend_from_slice(&[0, 0, block.len() as u8, 1, 5, 0, 0, 0, stream]);
        out.extend_from_slice(&block);
    }
    io.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    let mut blocks = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while blocks.len() < 2 {
            let n = io.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed after {} response header blocks",
                blocks.len()
            );
            seen.extend_from_slice(&buf[..n]);
            blocks.clear();
            let mut frames = &seen[..];
            while frames.len() >= 9 {
                let len = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]) as usize;
                let Some(frame) = frames.get(..9 + len) else {
                    break;
                };
                // HEADERS with END_HEADERS, no padding or priority (h2 sends neither)
                if frame[3] == 1 && frame[4] & 4 != 0 {
                    blocks.push(frame[9..].to_vec());
                }
                frames = &frames[9 + len..];
            }
        }
    })
    .await
    .expect("two responses");
    let mut decoder = crate::h2::hpack::Decoder::new(0);
    for block in &blocks {
        let decoded = decoder
            .decode(block, 1 << 16)
            .expect("a block a size-0 table decodes");
        let crate::h2::hpack::Decoded::Fields(fields) = decoded else {
            panic!("over the limit")
        };
        assert!(
            fields
                .iter()
                .any(|(n, v)| n == b"x-served-by" && v == b"endpoint"),
            "{:?}",
            fields.iter().collect::<Vec<_>>()
        );
    }
}

/// A header list over what the agent carries for clients is turned away
/// at the local connection and never decoded into memory whole; the next
/// request on the same connection goes through.
#[tokio::test]
async fn a_header_list_over_the_limit_is_turned_away() {
    let (addr, accepted) = endpoint().await;
    let mux = Mux::start(addr, limits(1), unbounded()).unwrap();
    let send = client(&mux).await;
    let mut big = get("/big");
    let value = "v".repeat(crate::h2::header_block::MAX_HEADER_LIST_SIZE as usize + 1);
    big.headers_mut().insert("x-big", value.parse().unwrap());
    let got = exchange(&send, big, None).await;
    assert!(
        !matches!(&got, Ok((body, _)) if body.starts_with("/big")),
        "the endpoint answered a request over the limit: {got:?}"
    );
    assert_eq!(exchange(&send, get("/ok"), None).await.unwrap().0, "/ok 0");
    assert!(accepted.load(Ordering::SeqCst) <= 1);
}
