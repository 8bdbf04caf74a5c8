//! An upstream: the agent's HTTP/2 connection to one endpoint for one client
//! connection. The handshake happens in plain user space (handshake.rs),
//! before the socket joins `upstream_socks`: once it is in, bytes queued
//! before the insertion would wait for more data (ebpf/README.md R1), and
//! every write has to go through the injector.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::budget::{Charge, Holder, MESSAGE_OVERHEAD};

use crate::h2::frame;
use crate::h2::message::{Expect, Message, MessageReader};

mod handback;
mod handshake;
mod joined;
use handback::asked;
pub use handback::{Handback, HandbackAsk, Resume};
pub use handshake::{connect, max_streams_in, our_settings, Handshake};
pub use joined::Joined;

/// Bytes of messages one upstream's reader may have handed its connection
/// that the connection's task has not taken yet. Past it the reader stops
/// reading: a reader ahead of a busy connection task buffered a flood
/// without limit (82 MiB of a 64 MiB flood, and the endpoint's GOAWAY was
/// never written: the reader had read it all before the task saw the first
/// frame over its bound). Four times the largest message, so a correct
/// endpoint never waits on it.
pub const READ_AHEAD: usize = 1 << 20;

/// A message on its way from a reader to its connection: its share of
/// READ_AHEAD and of the node's budget, given back when the task drops it.
pub struct InFlight {
    _permit: OwnedSemaphorePermit,
    _charge: Charge,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

/// What an upstream's reader task reports to its connection.
#[derive(Debug)]
pub enum UpstreamEvent {
    Message {
        slot: u32,
        message: Message,
        held: InFlight,
    },
    /// The endpoint closed (or broke) the connection. The socket stays open
    /// until `Settled`.
    Closed { slot: u32, reason: String },
    /// The endpoint's bytes wait unparsed: it should be made to send more.
    Unparsed { slot: u32 },
    /// The reader was asked for its socket but the connection stopped
    /// waiting before it answered: it reads on, and this asks it again.
    ReadsOn {
        slot: u32,
        cookie: u64,
        ask: HandbackAsk,
    },
    /// After `Closed`: the kernel has carried every byte the endpoint sent
    /// (or SETTLE_LIMIT passed); what is still open of its streams never
    /// got its end.
    Settled { slot: u32 },
}

/// How long the kernel may take to carry an endpoint's last bytes after
/// its FIN (a parser deferred to a work item under load).
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// Reads the messages the kernel passes to the agent (stream 0, diverted
/// frames) until the endpoint closes; then waits until the kernel has
/// carried all the endpoint sent, and holds the socket until the task is
/// aborted: closing it earlier drops the bytes its parser has not seen yet
/// (the trailers of a response, say). A non-zero value on `dropped` is the
/// error code of a connection error the agent gives the endpoint (it
/// flooded, or it was cut for the node's budget): the reader says goodbye.
pub fn spawn_reader(
    stream: TcpStream,
    tap: Option<super::tap::Tap>,
    joined: Joined,
    tx: mpsc::UnboundedSender<UpstreamEvent>,
    dropped: watch::Receiver<u32>,
    holder: Arc<Holder>,
    resume: Resume,
) -> (tokio::task::JoinHandle<()>, HandbackAsk) {
    let slot = joined.slot;
    let (ask, handback) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut reader = MessageReader::new(Expect::Frames);
        reader.push(&resume.buffered);
        let mut buf = vec![0u8; 32 * 1024];
        let mut fwd = Forward {
            slot,
            tx,
            ahead: Arc::new(Semaphore::new(READ_AHEAD)),
            holder,
            dropped,
            messages: resume.messages,
        };
        let mut handback = Some(handback);
        let mut input = super::tap::SourceInput::new(tap, true);
        let mut stream = stream;
        let reason = loop {
            let reply = match read_until_closed(
                &stream,
                &mut input,
                &joined,
                &mut reader,
                &mut buf,
                &mut fwd,
                &mut handback,
            )
            .await
            {
                Stop::HandBack(reply) => reply,
                Stop::Closed(reason) => break reason,
                Stop::Dropped(code) => {
                    goodbye(&stream, &mut input, code, &mut buf).await;
                    let _ = fwd.tx.send(UpstreamEvent::Settled { slot });
                    return std::future::pending::<()>().await;
                }
            };
            let back = Handback {
                stream,
                read_bytes: joined.read_bytes,
                messages: fwd.messages,
                buffered: reader.take_buffered(),
            };
            let Err(back) = reply.send(back) else {
                return;
            };
            // The connection stopped waiting for the socket (its tap's
            // read-out took longer): dropped here, it would close under
            // the connection's streams. It is read on, from its own
            // ingress now, and the connection may ask again.
            stream = back.stream;
            reader.push(&back.buffered);
            let (ask, asked) = oneshot::channel();
            handback = Some(asked);
            let cookie = joined.cookie;
            if fwd
                .tx
                .send(UpstreamEvent::ReadsOn { slot, cookie, ask })
                .is_err()
            {
                return;
            }
        };
        if fwd.tx.send(UpstreamEvent::Closed { slot, reason }).is_err() {
            return;
        }
        joined.settle(&stream).await;
        // Every byte has been through the verdict, but what it passed to
        // the agent reaches this socket through the psock's backlog work
        // item, which a loaded machine runs late: an endpoint's GOAWAY over
        // a client's bad frame, read after `Settled`, was lost, and the
        // client got REFUSED_STREAM instead (5 of 10,000 bad_input cases
        // at load 4). Read until every message the verdict counted is in.
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            while let Ok(Some(n)) = input.recv_now(&stream, &mut buf) {
                if n == 0 {
                    break;
                }
                if fwd.forward(&mut reader, &buf[..n]).await.is_err() {
                    let _ = fwd.tx.send(UpstreamEvent::Settled { slot });
                    return std::future::pending::<()>().await;
                }
            }
            let behind = joined.passed().wrapping_sub(fwd.messages) as i32 > 0;
            if !behind || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let _ = fwd.tx.send(UpstreamEvent::Settled { slot });
        std::future::pending::<()>().await;
    });
    (task, ask)
}

/// Why a reader stopped reading.
enum Stop {
    /// Its connection is handed over: the socket goes back to it.
    HandBack(oneshot::Sender<Handback>),
    /// The endpoint closed, broke framing, or the connection is gone.
    Closed(String),
    /// The agent dropped the endpoint with this error code.
    Dropped(u32),
}

async fn read_until_closed(
    stream: &TcpStream,
    input: &mut super::tap::SourceInput,
    joined: &Joined,
    reader: &mut MessageReader,
    buf: &mut [u8],
    fwd: &mut Forward,
    handback: &mut Option<oneshot::Receiver<oneshot::Sender<Handback>>>,
) -> Stop {
    let mut watch = super::liveness::ParserWatch::default();
    // Looks for bytes left unparsed (liveness.rs), soon after the join
    // and less often once the parser has caught up (pace.rs).
    let mut pace = super::pace::Pace::default();
    let look = tokio::time::sleep(super::pace::FIRST);
    tokio::pin!(look);
    loop {
        let mut looked = false;
        // messages read so far, against what the verdict passed
        let read = fwd.messages;
        let due = || joined.passed().wrapping_sub(read) as i32 > 0;
        tokio::select! {
            // Polled only between messages: what was read is forwarded
            // first, so the socket goes back at a message boundary.
            r = asked(handback) => {
                match r {
                    Ok(reply) => {
                        // What the tap holds goes to the connection first;
                        // what comes after is in the socket (agent/tap.rs).
                        if let Some(tap) = input.untap(&joined.dp, joined.cookie) {
                            let mut out = tap.read_out();
                            loop {
                                let Some(bytes) = out.next(stream).await else {
                                    tracing::warn!(cookie = joined.cookie, "handover: an upstream's tap did not give every frame the verdict passed");
                                    break;
                                };
                                if let Err(stop) = fwd.forward(reader, &bytes).await {
                                    return stop;
                                }
                                let read = fwd
                                    .messages
                                    .wrapping_add(reader.whole_messages())
                                    .wrapping_add(out.own_messages());
                                if joined.passed().wrapping_sub(read) as i32 <= 0 {
                                    break;
                                }
                            }
                            if let Err(stop) = fwd.forward(reader, &out.own()).await {
                                return stop;
                            }
                        }
                        return Stop::HandBack(reply);
                    }
                    // nobody will ask: the slot was dropped
                    Err(_) => *handback = None,
                }
            }
            // at once, not at the next read: a flood may be all read by then
            r = fwd.dropped.changed() => {
                if r.is_err() {
                    return Stop::Closed("connection gone".to_string());
                }
                let code = *fwd.dropped.borrow_and_update();
                if code != 0 {
                    return Stop::Dropped(code - 1);
                }
            }
            r = input.recv(stream, buf, &due, &|| true) => {
                let n = match r {
                    Ok(0) => return Stop::Closed("closed by the endpoint".to_string()),
                    Ok(n) => n,
                    Err(e) => return Stop::Closed(e.to_string()),
                };
                if let Err(stop) = fwd.forward(reader, &buf[..n]).await {
                    return stop;
                }
            }
            () = &mut look => {
                looked = true;
                if joined.unparsed(stream, &mut watch)
                    && fwd.tx.send(UpstreamEvent::Unparsed { slot: fwd.slot }).is_err()
                {
                    return Stop::Closed("connection gone".to_string());
                }
                let wait = pace.next(!watch.waiting(), watch.progress());
                look.as_mut().reset(tokio::time::Instant::now() + wait);
            }
        }
        if !looked && pace.stir() {
            look.as_mut()
                .reset(tokio::time::Instant::now() + super::pace::FIRST);
        }
    }
}

/// How long a dropped endpoint gets to take its GOAWAY before its socket
/// closes anyway.
const GOODBYE_LIMIT: Duration = Duration::from_secs(1);

/// A connection error for an endpoint the agent drops: GOAWAY, written on
/// the socket itself, then FIN, and the socket stays open until the
/// endpoint has acknowledged both (or GOODBYE_LIMIT). Through the injector
/// the GOAWAY would queue in the socket's psock behind the flood. Closed at
/// once, or while the GOAWAY still waited in the send queue, the socket's
/// unread bytes made the close a reset that discarded it: the endpoint never
/// learned why. What the endpoint still sends meanwhile is read and
/// discarded, or its psock queue would stall. A psock work item that had
/// sent part of an agent frame into a full send buffer would see the GOAWAY
/// land after that part; only an endpoint that reads nothing fills it, and
/// that one does not read the GOAWAY either.
async fn goodbye(
    stream: &TcpStream,
    input: &mut super::tap::SourceInput,
    code: u32,
    buf: &mut [u8],
) {
    let deadline = tokio::time::Instant::now() + GOODBYE_LIMIT;
    let mut out = BytesMut::new();
    frame::goaway(&mut out, 0, code);
    let mut rest = &out[..];
    while !rest.is_empty() {
        tokio::select! {
            r = stream.writable() => if r.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
        }
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
    // Best effort: a socket that cannot be shut down is closed below anyway.
    let _ = crate::sys::shutdown_write(stream);
    while !crate::ebpf::tcp_fin_acked(stream).unwrap_or(true) {
        tokio::select! {
            r = input.recv(stream, buf, &|| false, &|| true) => if !matches!(r, Ok(n) if n > 0) { return },
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// A reader's way to its connection.
struct Forward {
    slot: u32,
    tx: mpsc::UnboundedSender<UpstreamEvent>,
    ahead: Arc<Semaphore>,
    holder: Arc<Holder>,
    dropped: watch::Receiver<u32>,
    /// Messages handed to the connection (the verdict counts what it
    /// passed in `upstream.passed`).
    messages: u32,
}

impl Forward {
    /// Passes the whole messages in `bytes` (after what `reader` holds) to
    /// the connection, each once READ_AHEAD has room for it.
    async fn forward(&mut self, reader: &mut MessageReader, bytes: &[u8]) -> Result<(), Stop> {
        reader.push(bytes);
        loop {
            let message = match reader.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Stop::Closed(e.to_string())),
            };
            let cost = message.payload().len() + 9 + MESSAGE_OVERHEAD;
            let permits = cost.min(READ_AHEAD) as u32;
            let permit = tokio::select! {
                p = self.ahead.clone().acquire_many_owned(permits) => {
                    p.map_err(|_| Stop::Closed("connection gone".to_string()))?
                }
                r = self.dropped.wait_for(|c| *c != 0) => {
                    return Err(match r.map(|c| *c) {
                        Ok(code) => Stop::Dropped(code - 1),
                        Err(_) => Stop::Closed("connection gone".to_string()),
                    });
                }
            };
            let held = InFlight {
                _permit: permit,
                _charge: Charge::new(&self.holder, cost),
            };
            let ev = UpstreamEvent::Message {
                slot: self.slot,
                message,
                held,
            };
            self.tx
                .send(ev)
                .map_err(|_| Stop::Closed("connection gone".to_string()))?;
            self.messages = self.messages.wrapping_add(1);
        }
    }
}
