//! What the multiplexer holds counts against the node's --max-queued-bytes
//! (budget.rs): a client that reads nothing while the endpoint answers
//! leaves up to a shared stream window (256 KiB) per stream here, and many
//! such streams would take memory no bound of their own limits.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use tokio::net::TcpStream;

use super::{client, endpoint, exchange, get, limits};
use crate::agent::budget::Budget;
use crate::agent::pool::mux::Mux;

#[tokio::test]
async fn a_local_connection_holding_past_the_node_budget_is_cut_and_the_others_go_on() {
    let (addr, accepted) = endpoint().await;
    let budget = Budget::new(512 * 1024);
    let mux = Mux::start(addr, limits(1), budget.clone()).unwrap();
    let good = client(&mux).await;
    assert_eq!(exchange(&good, get("/a"), None).await.unwrap().0, "/a 0");

    // A client that grants no window: every byte of its responses waits
    // here, up to the shared stream window per stream.
    let io = TcpStream::connect(mux.addr()).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let ended = tokio::spawn(conn);
    let mut responses = Vec::new();
    for _ in 0..4 {
        let mut s = send.clone().ready().await.unwrap();
        responses.push(s.send_request(get("/big/1048576"), true).unwrap().0);
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the client that reads nothing was not cut within 5 s")
        .unwrap();
    let reason = ended.as_ref().err().and_then(h2::Error::reason);
    assert_eq!(
        reason,
        Some(Reason::ENHANCE_YOUR_CALM),
        "its connection ended with {ended:?}"
    );
    let status = budget.status();
    assert_eq!(status.cut_endpoints, 1, "{status:?}");
    assert!(
        status.peak_queued_bytes > 512 * 1024,
        "the held bytes were not charged: {status:?}"
    );
    // what it held is given back, and the other client goes on over the
    // same shared connection
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = budget.status().queued_bytes;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "bytes still charged after the cut");
    assert_eq!(exchange(&good, get("/b"), None).await.unwrap().0, "/b 0");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the shared connection stayed"
    );
}
