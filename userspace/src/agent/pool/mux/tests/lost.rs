//! A local connection is a client connection's upstream to the endpoint:
//! it must be up only while the endpoint is, or the client connection's
//! task and the kernel keep sending it streams the multiplexer can only
//! refuse (`failures.rs` with every stream shared: 67 of 249 gRPC calls
//! refused after an endpoint was killed, against at most the 6 in flight).

use std::time::Duration;

use h2::Reason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{answer, goaway_code, limits, unbounded};
use crate::agent::pool::mux::Mux;

/// A local connection opened by hand: the preface and empty SETTINGS.
async fn local(mux: &Mux) -> TcpStream {
    let mut io = TcpStream::connect(mux.addr()).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    io.write_all(&out).await.unwrap();
    io
}

/// What `io` reads until `done` holds of it, EOF, or 5 s.
async fn read_until(io: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let eof = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if done(&seen) {
                return false;
            }
        }
    })
    .await;
    let eof = eof.unwrap_or(false);
    (seen, eof)
}

#[tokio::test]
async fn local_connections_go_away_with_the_endpoint_and_are_refused_while_it_is_down() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (die, dies) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (io, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(io).await.unwrap();
        let serve = async {
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(answer(req, respond));
            }
        };
        tokio::select! {
            () = serve => {}
            _ = dies => {}
        }
        // the connection and the listener close here: the endpoint is gone
    });
    let mux = Mux::start(addr, limits(1), unbounded()).unwrap();
    let mut up = local(&mux).await;
    // the multiplexer's SETTINGS: the local connection is up
    let (hello, eof) = read_until(&mut up, |b| b.len() >= 9).await;
    assert!(
        !eof && hello.len() >= 9 && hello[3] == 4,
        "no SETTINGS: {hello:?}"
    );

    die.send(()).unwrap();
    let (seen, _) = read_until(&mut up, |b| goaway_code(b).is_some()).await;
    assert_eq!(
        goaway_code(&seen),
        Some(u32::from(Reason::NO_ERROR)),
        "the local connection was not told to go away when the endpoint went: {seen:?}"
    );

    // While the endpoint is down a new local connection does not come up:
    // closed before the multiplexer says anything, as a connect fails.
    let mut next = local(&mux).await;
    let (said, eof) = read_until(&mut next, |_| false).await;
    assert!(
        eof && said.is_empty(),
        "a local connection came up with the endpoint down: eof {eof}, {said:?}"
    );
}
