//! The endpoint's GOAWAY: which streams are refused to the client, which
//! get a 502, and a shared connection going away under a slow stream.

use std::sync::atomic::Ordering;
use std::time::Duration;

use h2::Reason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{client, endpoint_going_away, exchange, get, limits, unbounded};
use crate::agent::pool::mux::Mux;

/// An endpoint that sends its SETTINGS, reads up to the first HEADERS,
/// answers with GOAWAY(`last`, `code`), and closes 200 ms later without
/// answering anything.
async fn goaway_endpoint(last: u32, code: Reason) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut io, _) = listener.accept().await.unwrap();
        // SETTINGS, the server's preface (RFC 9113 §3.4)
        io.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // the preface (24 bytes), then frames until a HEADERS (type 1)
        loop {
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "the multiplexer closed before a HEADERS");
            seen.extend_from_slice(&buf[..n]);
            let mut frames = seen.get(24..).unwrap_or_default();
            let mut headers = false;
            while frames.len() >= 9 {
                let len = u32::from_be_bytes([0, frames[0], frames[1], frames[2]]) as usize;
                headers |= frames[3] == 1;
                frames = frames.get(9 + len..).unwrap_or_default();
            }
            if headers {
                break;
            }
        }
        let mut out = vec![0, 0, 8, 7, 0, 0, 0, 0, 0]; // GOAWAY
        out.extend_from_slice(&last.to_be_bytes());
        out.extend_from_slice(&u32::from(code).to_be_bytes());
        io.write_all(&out).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    addr
}

/// What the client got for one request through a multiplexer whose
/// endpoint answers with `goaway_endpoint(last, code)`.
async fn through_goaway(last: u32, code: Reason) -> Result<(u16, String), Reason> {
    let mux = Mux::start(goaway_endpoint(last, code).await, limits(1), unbounded()).unwrap();
    let send = client(&mux).await;
    let mut send = send.ready().await.unwrap();
    let (response, _) = send.send_request(get("/x"), true).unwrap();
    let response = response.await.map_err(|e| e.reason().unwrap())?;
    Ok((response.status().as_u16(), String::new()))
}

#[tokio::test]
async fn a_stream_above_the_last_id_of_a_graceful_goaway_is_refused() {
    // the shared connection's first stream is 1: last 0 means "not processed"
    assert_eq!(
        through_goaway(0, Reason::NO_ERROR).await.unwrap_err(),
        Reason::REFUSED_STREAM
    );
}

#[tokio::test]
async fn a_stream_the_endpoint_may_have_processed_is_not_refused() {
    // stream 1 is within the GOAWAY: the endpoint may have acted on it
    // before its connection closed, so a client must not retry it blindly
    for code in [Reason::NO_ERROR, Reason::PROTOCOL_ERROR] {
        let got = through_goaway(1, code).await;
        assert_eq!(got, Ok((502, String::new())), "GOAWAY(1, {code:?})");
    }
}

#[tokio::test]
async fn a_shared_connection_going_away_finishes_its_streams_and_its_local_connections_go_too() {
    let (addr, accepted) = endpoint_going_away(true).await;
    let mux = Mux::start(addr, limits(1), unbounded()).unwrap();
    let send = client(&mux).await;
    let mut slow = get("/slow");
    slow.headers_mut()
        .insert("x-delay-ms", "600".parse().unwrap());
    let first = {
        let send = send.clone();
        tokio::spawn(async move { exchange(&send, slow, None).await })
    };
    // the endpoint's GOAWAY has come by now; its connection stays open
    // for the slow stream. It was the only one: the local connection goes
    // away too, as a connection's own upstream would, and the client
    // connection's next upstream to the endpoint opens a new one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = send
        .clone()
        .ready()
        .await
        .and_then(|mut s| s.send_request(get("/late"), true).map(|_| ()));
    assert!(
        refused.as_ref().is_err_and(|e| e.is_go_away()),
        "the local connection took a stream after the endpoint's GOAWAY: {refused:?}"
    );
    let next = client(&mux).await;
    assert_eq!(
        exchange(&next, get("/next"), None).await.unwrap().0,
        "/next 0"
    );
    assert_eq!(first.await.unwrap().unwrap().0, "/slow 0");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the next stream opened a new connection"
    );
    assert_eq!(mux.counts().refused, 0);
}
