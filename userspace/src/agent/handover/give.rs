//! The old agent's side of a live handover: its kernel generation first
//! (`Message::Generation`), then each connection as its task reaches its
//! quiet point (agent/client/handover.rs) and offers it here. A thread
//! carries the offers over the channel one at a time and brings back the
//! successor's verdict.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::state::ConnState;
use super::wire::{self, WireError};
use super::Message;
use crate::agent::Shared;

/// How long the successor may take to answer one offer on the channel.
const ANSWER_LIMIT: Duration = Duration::from_secs(4);
/// How long the old agent waits for its connections to be handed over or
/// to give up (each gives up after its QUIET_LIMIT; the rest is margin for
/// the offers themselves).
const HAND_OVER_LIMIT: Duration = Duration::from_secs(3);

/// A connection at its quiet point, on its way to the successor: the
/// client's socket, then the upstreams' in `state.slots` order.
pub struct Offer {
    pub id: u32,
    pub state: ConnState,
    pub fds: Vec<OwnedFd>,
    pub reply: oneshot::Sender<Verdict>,
}

#[derive(Debug)]
pub enum Verdict {
    Adopted,
    /// The successor cannot: the old agent drains the connection.
    Refused(String),
    /// The channel failed after the offer left: the successor may run it.
    Unknown(String),
}

/// Where connections offer themselves, and what became of them.
pub struct Sink {
    tx: Mutex<Option<mpsc::Sender<Offer>>>,
    /// The successor adopts upstreams through this agent's multiplexers
    /// (its hello said so): a connection with one is handed over too.
    pub adopts_shared: bool,
    /// Each connection that has decided: true if it was handed over.
    decided: Mutex<HashMap<u32, bool>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sink {
    pub fn offer(&self, offer: Offer) {
        let tx = lock(&self.tx).clone();
        let Some(tx) = tx else {
            let _ = offer
                .reply
                .send(Verdict::Refused("the handover is over".into()));
            return;
        };
        if let Err(mpsc::SendError(offer)) = tx.send(offer) {
            let _ = offer
                .reply
                .send(Verdict::Refused("the handover channel is gone".into()));
        }
    }

    pub fn handed(&self, id: u32) {
        lock(&self.decided).insert(id, true);
    }

    pub fn drained(&self, id: u32) {
        lock(&self.decided).insert(id, false);
    }

    fn decided(&self, id: u32) -> bool {
        lock(&self.decided).contains_key(&id)
    }

    fn was_handed(&self, id: u32) -> bool {
        lock(&self.decided).get(&id) == Some(&true)
    }
}

/// What a handover came to.
#[derive(Debug, Default)]
pub struct Summary {
    pub handed_over: u64,
    /// Connections left to the GOAWAY drain (refused, not quiet in time,
    /// not HTTP/2).
    pub drained: u64,
    /// The channel, held until the agent exits: the successor reads the
    /// adopted generation's events once it closes (two readers of one ring
    /// buffer would race).
    pub channel: Option<UnixStream>,
}

/// Hands the generation and every connection that gets to its quiet point
/// over to the successor on `stream`; returns once each has been handed
/// over or has given up (or HAND_OVER_LIMIT). What is left is drained.
/// `adopts_shared`: the successor's hello says it takes upstreams through
/// this agent's multiplexers.
pub async fn hand_over(shared: &Arc<Shared>, stream: UnixStream, adopts_shared: bool) -> Summary {
    // New connects take the successor's path from now on.
    shared.dp.stop_redirecting();
    let (names, fds) = shared.dp.generation();
    let generation = Message::Generation {
        maps: names,
        links: 0,
    };
    let _ = stream.set_write_timeout(Some(ANSWER_LIMIT));
    if let Err(e) = wire::send(&stream, &generation, &fds) {
        tracing::warn!(error = %e, "handover: the generation could not be sent; draining");
        return Summary {
            drained: shared.registry.conns().len() as u64,
            ..Default::default()
        };
    }
    let channel = stream.try_clone().ok();
    let (tx, rx) = mpsc::channel();
    let sink = Arc::new(Sink {
        tx: Mutex::new(Some(tx)),
        adopts_shared,
        decided: Default::default(),
    });
    let carrier = std::thread::Builder::new()
        .name("handover-give".into())
        .spawn(move || carry(stream, rx));
    if let Err(e) = carrier {
        tracing::warn!(error = %e, "handover: no thread for the channel; draining");
        return Summary {
            drained: shared.registry.conns().len() as u64,
            ..Default::default()
        };
    }
    shared.handover.send_replace(Some(sink.clone()));
    let start = tokio::time::Instant::now();
    loop {
        let undecided = (shared.registry.conns().iter())
            .filter(|c| c.spliced.is_none() && !c.adopted && !sink.decided(c.id))
            .count();
        if undecided == 0 || start.elapsed() > HAND_OVER_LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.handover.send_replace(None);
    // The carrier sends what was offered, then Done, and ends.
    lock(&sink.tx).take();
    let handed_over = lock(&sink.decided).values().filter(|&&h| h).count() as u64;
    // A connection handed over leaves the registry when its task ends, a
    // moment after its verdict: counted here it was "drained" too (4
    // handed over and 1 drained of 4 connections, handover.rs on 7.3 under
    // emulation).
    let drained = (shared.registry.conns().iter())
        .filter(|c| !sink.was_handed(c.id))
        .count() as u64;
    Summary {
        handed_over,
        drained,
        channel,
    }
}

/// The channel's thread: one offer at a time, each answered before the next.
fn carry(stream: UnixStream, rx: mpsc::Receiver<Offer>) {
    let _ = stream.set_read_timeout(Some(ANSWER_LIMIT));
    let mut broken: Option<String> = None;
    for offer in rx {
        if let Some(why) = &broken {
            let _ = offer.reply.send(Verdict::Refused(why.clone()));
            continue;
        }
        let (verdict, fault) = ask(&stream, &offer);
        broken = fault;
        let _ = offer.reply.send(verdict);
    }
    if broken.is_none() {
        let _ = wire::send(&stream, &Message::Done, &[]);
    }
}

/// One offer and its answer; the second value says why the channel cannot
/// be used again, if it cannot.
fn ask(stream: &UnixStream, offer: &Offer) -> (Verdict, Option<String>) {
    let state = match serde_json::to_value(&offer.state) {
        Ok(v) => v,
        Err(e) => return (Verdict::Refused(e.to_string()), None),
    };
    let msg = Message::Conn {
        id: offer.id,
        slots: offer.state.slots.iter().map(|s| s.slot).collect(),
        state,
    };
    let fds: Vec<BorrowedFd<'_>> = offer.fds.iter().map(|f| f.as_fd()).collect();
    if let Err(e) = wire::send(stream, &msg, &fds) {
        // A message cut off leaves the channel without framing; one refused
        // whole (too long, wrong count) went nowhere.
        let fault = matches!(e, WireError::Io(_)).then(|| e.to_string());
        return (Verdict::Refused(e.to_string()), fault);
    }
    match wire::recv(stream) {
        Ok((Message::Adopted { id }, _)) if id == offer.id => (Verdict::Adopted, None),
        Ok((Message::Refused { id, reason }, _)) if id == offer.id => {
            (Verdict::Refused(reason), None)
        }
        Ok((other, _)) => {
            let why = format!("the successor answered {other:?}");
            (Verdict::Unknown(why.clone()), Some(why))
        }
        Err(e) => (Verdict::Unknown(e.to_string()), Some(e.to_string())),
    }
}
