//! The pool's tickets: seats, the multiplexer's start and stop, parking.

use super::*;

fn limits(dedicated: usize, shared: usize) -> PoolLimits {
    PoolLimits {
        dedicated,
        shared,
        connect_timeout: Duration::from_secs(1),
    }
}

/// Endpoint addresses on loopback where nothing listens: a multiplexer
/// that dials one is refused at once, and nothing leaves the machine.
fn closed_ports<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|k| held[k].local_addr().unwrap())
}

#[tokio::test]
async fn past_the_dedicated_limit_upstreams_dial_the_multiplexer() {
    let pools = Pools::new(limits(2, 4), crate::agent::budget::Budget::new(usize::MAX));
    let [be1, be2] = closed_ports();
    let a = pools.ticket(be1, None).unwrap();
    let b = pools.ticket(be1, None).unwrap();
    let other = pools.ticket(be2, None).unwrap();
    assert_eq!((a.dial(), b.dial(), other.dial()), (be1, be1, be2));
    assert!(!a.is_shared() && !other.is_shared());
    let c = pools.ticket(be1, None).unwrap();
    let d = pools.ticket(be1, None).unwrap();
    assert!(c.is_shared() && d.is_shared());
    assert_eq!(c.dial(), d.dial(), "one multiplexer per endpoint");
    assert!(c.dial().ip().is_loopback());
    assert_ne!(c.dial(), be1);
    assert_eq!(pools.started(), 1);
    let conns = pools.connections();
    assert_eq!(conns.len(), 2);
    let of = |be: SocketAddr| {
        let e = (conns.iter().find(|e| e.endpoint == be.to_string())).unwrap();
        (e.dedicated, e.via_shared)
    };
    assert_eq!((of(be1), of(be2)), ((2, 2), (1, 0)));
}

#[tokio::test]
async fn a_dedicated_upstream_that_ends_frees_its_place() {
    let pools = Pools::new(limits(1, 4), crate::agent::budget::Budget::new(usize::MAX));
    let [be] = closed_ports();
    let a = pools.ticket(be, None).unwrap();
    let b = pools.ticket(be, None).unwrap();
    assert!(b.is_shared());
    drop(a);
    let c = pools.ticket(be, None).unwrap();
    assert!(!c.is_shared(), "the place a's end freed");
    assert_eq!(pools.connections()[0].dedicated, 1);
    assert_eq!(pools.connections()[0].via_shared, 1);
}

#[tokio::test]
async fn a_busy_upstream_on_the_multiplexer_gets_the_seat_an_idle_holder_gives_up() {
    let pools = Pools::new(limits(1, 4), crate::agent::budget::Budget::new(usize::MAX));
    let [be] = closed_ports();
    let (holder_wake, busy_wake) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let mut held = pools.ticket(be, Some(&holder_wake)).unwrap();
    let mut busy = pools.ticket(be, Some(&busy_wake)).unwrap();
    assert!(!held.is_shared() && busy.is_shared());
    assert!(!held.seat_wanted());
    assert!(
        pools.promote(&mut held, None).is_none(),
        "a seat asks for none"
    );
    assert!(
        pools.promote(&mut busy, Some(&busy_wake)).is_none(),
        "no seat free"
    );
    assert!(busy.waits_for_seat());
    // the holder is asked to look, once
    tokio::time::timeout(Duration::from_secs(1), holder_wake.notified())
        .await
        .expect("the holder is asked");
    assert!(pools.promote(&mut busy, Some(&busy_wake)).is_none());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), holder_wake.notified())
            .await
            .is_err(),
        "asked again at a later look"
    );
    assert!(held.seat_wanted());
    assert!(held.give_up());
    assert!(!held.seat_wanted(), "given up already");
    // the holder's place through the multiplexer, while its upstream drains
    let replacement = pools.ticket(be, Some(&holder_wake)).unwrap();
    assert!(replacement.is_shared());
    drop(held);
    // a fresh connection does not take the freed seat
    let fresh = pools.ticket(be, None).unwrap();
    assert!(fresh.is_shared());
    let seat = pools
        .promote(&mut busy, Some(&busy_wake))
        .expect("the freed seat");
    assert!(!seat.is_shared() && !busy.waits_for_seat());
    assert_eq!(seat.dial(), be);
    assert_eq!(
        (
            pools.connections()[0].dedicated,
            pools.connections()[0].via_shared
        ),
        (1, 3)
    );
    drop(busy);
    drop(seat);
    assert!(!pools.ticket(be, None).unwrap().is_shared(), "free again");
}

#[tokio::test]
async fn a_wait_ends_with_its_upstream() {
    let pools = Pools::new(limits(1, 4), crate::agent::budget::Budget::new(usize::MAX));
    let [be] = closed_ports();
    let held = pools.ticket(be, None).unwrap();
    let mut busy = pools.ticket(be, None).unwrap();
    assert!(pools.promote(&mut busy, None).is_none());
    assert!(held.seat_wanted());
    drop(busy);
    assert!(!held.seat_wanted(), "nobody waits");
    let mut quiet = pools.ticket(be, None).unwrap();
    assert!(pools.promote(&mut quiet, None).is_none());
    quiet.unwant();
    assert!(!held.seat_wanted());
    drop(held);
    assert!(!pools.ticket(be, None).unwrap().is_shared());
}

#[tokio::test]
async fn the_multiplexer_stops_with_its_last_upstream() {
    let pools = Pools::new(limits(0, 4), crate::agent::budget::Budget::new(usize::MAX));
    let [be] = closed_ports();
    let a = pools.ticket(be, None).unwrap();
    let first = a.dial();
    drop(a);
    assert!(
        pools.connections().is_empty(),
        "nothing left for the endpoint"
    );
    // the first one's listener went with it: its port refuses
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(first).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "{first} still accepts after its multiplexer stopped"
    );
    let b = pools.ticket(be, None).unwrap();
    assert!(b.is_shared());
    assert_eq!(pools.started(), 2, "a new multiplexer");
}

#[tokio::test]
async fn a_parked_ticket_keeps_the_multiplexer_and_an_inherited_one_counts_nothing() {
    let pools = Pools::new(limits(0, 4), crate::agent::budget::Budget::new(usize::MAX));
    // an endpoint that accepts and holds its connections: the local
    // connection is up only while a shared one is (mux.rs)
    let endpoint = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let be = endpoint.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = endpoint.accept().await {
            held.push(s);
        }
    });
    let a = pools.ticket(be, None).unwrap();
    let at = a.dial();
    let local = tokio::net::TcpStream::connect(at).await.unwrap();
    pools.park(a);
    // what the successor holds meanwhile: the local connection
    let mut seen = 0;
    for _ in 0..100 {
        seen = pools.local_connections();
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 1, "the parked upstream's local connection");
    assert_eq!(pools.connections()[0].via_shared, 1);
    drop(local);
    let mut left = 1;
    for _ in 0..100 {
        left = pools.local_connections();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(left, 0, "the local connection closed");
    let inherited = Pools::inherited(be);
    assert!(inherited.is_shared());
    drop(inherited);
    assert_eq!(pools.connections()[0].via_shared, 1, "the parked one stays");
}

#[tokio::test]
async fn no_sharing_when_shared_is_zero() {
    let pools = Pools::new(limits(1, 0), crate::agent::budget::Budget::new(usize::MAX));
    let [be] = closed_ports();
    let tickets: Vec<_> = (0..5).map(|_| pools.ticket(be, None).unwrap()).collect();
    assert!(tickets.iter().all(|t| !t.is_shared()));
    assert_eq!(pools.connections()[0].dedicated, 5);
}
