//! A stream's bytes both ways: the request from the local connection to
//! the shared one, the response back, each as the other side's windows
//! take it, and how a stream the endpoint did not answer ends.

use std::future::poll_fn;

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Response, StatusCode};

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
pub(super) async fn forward_request(mut body: RecvStream, mut out: SendStream<Bytes>) {
    body_and_trailers(&mut body, &mut out).await;
}

/// DATA from `body` to `out` as `out`'s peer grants window, then the
/// trailers or the end of the stream; a reset on either side is passed to
/// the other (the one that reset it gets nothing more).
async fn body_and_trailers(body: &mut RecvStream, out: &mut SendStream<Bytes>) {
    loop {
        let next = tokio::select! {
            next = body.data() => next,
            _ = poll_fn(|cx| out.poll_reset(cx)) => return,
        };
        match next {
            Some(Ok(chunk)) => {
                let n = chunk.len();
                if send_all(out, chunk).await.is_err() {
                    return;
                }
                let _ = body.flow_control().release_capacity(n);
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
pub(super) async fn download(response: ResponseFuture, mut respond: SendResponse<Bytes>) {
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
        body_and_trailers(&mut body, &mut out).await;
    }
}

/// Sends `data` as the peer's windows allow.
async fn send_all(out: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        out.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| out.poll_capacity(cx)).await {
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
