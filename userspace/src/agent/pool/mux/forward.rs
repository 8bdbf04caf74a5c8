//! A stream's bytes both ways: the request from the local connection to
//! the shared one, the response back, each as the other side's windows
//! take it, and how a stream the endpoint did not answer ends.
//!
//! What a body holds here (h2's count of bytes received and not yet given
//! back, `used_capacity`: its buffer and the chunk on its way) is charged
//! to the local connection's budget holder, read again after each chunk
//! and every HELD_LOOK while the other side has no window. Bounded by the
//! windows (256 KiB a shared stream, 2 MiB a shared connection), but many
//! slow clients' streams together are not: the node's --max-queued-bytes
//! is (budget.rs).

use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Response, StatusCode};

use crate::agent::budget::Holder;

/// How often what a waiting body holds is looked at again.
const HELD_LOOK: Duration = Duration::from_millis(100);

/// One body's bytes held here, as charged to its local connection.
struct Held<'a> {
    holder: &'a Holder,
    charged: usize,
}

impl<'a> Held<'a> {
    fn new(holder: &'a Holder) -> Self {
        Held { holder, charged: 0 }
    }

    fn set(&mut self, n: usize) {
        if n > self.charged {
            self.holder.add(n - self.charged);
        } else if n < self.charged {
            self.holder.sub(self.charged - n);
        }
        self.charged = n;
    }

    fn look(&mut self, body: &mut RecvStream) {
        self.set(body.flow_control().used_capacity());
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// How a stream the endpoint did not answer ends for the client. Refused
/// (the client may retry it) only where the endpoint cannot have processed
/// it: never sent, refused by the endpoint itself, or above the last id of
/// its graceful GOAWAY. A connection lost under a stream it may have
/// processed answers 502, as for a connection's own upstream
/// (client/stream_end.rs).
pub(super) fn unanswered(e: &h2::Error) -> End {
    if e.is_reset() && e.is_remote() {
        return End::Reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
    }
    if e.is_go_away() && e.is_remote() && e.reason() == Some(Reason::NO_ERROR) {
        return End::Reset(Reason::REFUSED_STREAM);
    }
    End::BadGateway
}

pub(super) enum End {
    Reset(Reason),
    BadGateway,
}

/// The client's DATA and trailers, as the endpoint's windows take them.
pub(super) async fn forward_request(
    mut body: RecvStream,
    mut out: SendStream<Bytes>,
    holder: std::sync::Arc<Holder>,
) {
    body_and_trailers(&mut body, &mut out, &holder).await;
}

/// DATA from `body` to `out` as `out`'s peer grants window, then the
/// trailers or the end of the stream; a reset on either side is passed to
/// the other (the one that reset it gets nothing more).
async fn body_and_trailers(body: &mut RecvStream, out: &mut SendStream<Bytes>, holder: &Holder) {
    let mut held = Held::new(holder);
    loop {
        let next = tokio::select! {
            next = body.data() => next,
            _ = poll_fn(|cx| out.poll_reset(cx)) => return,
        };
        held.look(body);
        match next {
            Some(Ok(chunk)) => {
                let n = chunk.len();
                if send_all(out, chunk, body, &mut held).await.is_err() {
                    return;
                }
                let _ = body.flow_control().release_capacity(n);
                held.look(body);
            }
            Some(Err(e)) => {
                out.send_reset(e.reason().unwrap_or(Reason::CANCEL));
                return;
            }
            None => break,
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => {
            let _ = out.send_trailers(trailers);
        }
        Ok(None) => {
            let _ = out.send_data(Bytes::new(), true);
        }
        Err(e) => out.send_reset(e.reason().unwrap_or(Reason::CANCEL)),
    }
}

/// The endpoint's response, DATA and trailers, as the client's windows take them.
pub(super) async fn download(
    response: ResponseFuture,
    mut respond: SendResponse<Bytes>,
    holder: &Holder,
) {
    let response = tokio::select! {
        r = response => r,
        _ = poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            match unanswered(&e) {
                End::Reset(reason) => respond.send_reset(reason),
                End::BadGateway => {
                    let mut bad = Response::new(());
                    *bad.status_mut() = StatusCode::BAD_GATEWAY;
                    let _ = respond.send_response(bad, true);
                }
            }
            return;
        }
    };
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    let Ok(mut out) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return;
    };
    if !end {
        body_and_trailers(&mut body, &mut out, holder).await;
    }
}

/// Sends `data` as the peer's windows allow; while it waits, what `body`
/// holds is charged again every HELD_LOOK.
async fn send_all(
    out: &mut SendStream<Bytes>,
    mut data: Bytes,
    body: &mut RecvStream,
    held: &mut Held<'_>,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        out.reserve_capacity(data.len());
        let granted = loop {
            tokio::select! {
                granted = poll_fn(|cx| out.poll_capacity(cx)) => break granted,
                () = tokio::time::sleep(HELD_LOOK) => held.look(body),
            }
        };
        let granted = match granted {
            Some(r) => r?,
            None => return Err(h2::Error::from(Reason::CANCEL)),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        out.send_data(chunk, false)?;
    }
    Ok(())
}
