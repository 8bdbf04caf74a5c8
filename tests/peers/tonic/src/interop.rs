//! tonic server for `rotor.interop.TestService` (`tests/peers/interop.proto`),
//! the server side of rotor's differential gRPC suite, as
//! `grpc_interop.py server` (grpcio) and `node/interop_server.js` (grpc-js) serve it.
//!
//! tonic has no API for custom trailing metadata on a successful call, so the
//! echo of `x-grpc-test-echo-initial` / `x-grpc-test-echo-trailing-bin` is a
//! service wrapper around the generated server that adds the header to the
//! response headers and the trailer to the trailers (as tonic's own interop
//! server does).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("rotor.interop");
}

use pb::test_service_server::{TestService, TestServiceServer};
use pb::*;

pub(crate) const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
pub(crate) const ECHO_TRAILING: &str = "x-grpc-test-echo-trailing-bin";
pub(crate) const MSG_LIMIT: usize = 64 << 20;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Name put in every reply (`server_id`).
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
}

/// A payload body of `n` bytes: byte i = (i * 31 + 7) mod 256.
pub(crate) fn pattern(n: i32) -> Vec<u8> {
    (0..n.max(0) as usize)
        .map(|i| (i.wrapping_mul(31).wrapping_add(7)) as u8)
        .collect()
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[n] = c;
        n += 1;
    }
    t
};

/// CRC-32 (IEEE, as zlib's crc32) of `data`, continuing from `crc`.
pub(crate) fn crc32(data: &[u8], crc: u32) -> u32 {
    let mut c = !crc;
    for b in data {
        c = CRC_TABLE[((c ^ *b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

fn body(p: &Option<Payload>) -> &[u8] {
    p.as_ref().map_or(&[], |p| p.body.as_slice())
}

/// The status a request asks the call to end with, if any.
fn requested(st: &Option<EchoStatus>) -> Option<Status> {
    let st = st.as_ref().filter(|s| s.code != 0)?;
    let code = Code::from_i32(st.code);
    Some(if st.details.is_empty() {
        Status::new(code, st.message.clone())
    } else {
        Status::with_details(code, st.message.clone(), Bytes::from(st.details.clone()))
    })
}

struct Svc {
    name: String,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<StreamingOutputCallResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TestService for Svc {
    async fn empty_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }

    async fn unary_call(
        &self,
        req: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let req = req.into_inner();
        if req.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.sleep_ms as u64)).await;
        }
        if let Some(s) = requested(&req.response_status) {
            return Err(s);
        }
        let got = body(&req.payload);
        Ok(Response::new(SimpleResponse {
            payload: Some(Payload {
                body: pattern(req.response_size),
            }),
            server_id: self.name.clone(),
            received_size: got.len() as i32,
            received_crc: crc32(got, 0),
        }))
    }

    type StreamingOutputCallStream = ReplyStream;

    async fn streaming_output_call(
        &self,
        req: Request<StreamingOutputCallRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let req = req.into_inner();
        if let Some(s) = requested(&req.response_status) {
            return Err(s);
        }
        let (tx, rx) = mpsc::channel(4);
        let name = self.name.clone();
        tokio::spawn(async move {
            for p in req.response_parameters {
                if p.interval_us > 0 {
                    tokio::time::sleep(Duration::from_micros(p.interval_us as u64)).await;
                }
                let reply = StreamingOutputCallResponse {
                    payload: Some(Payload {
                        body: pattern(p.size),
                    }),
                    server_id: name.clone(),
                    ..Default::default()
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn streaming_input_call(
        &self,
        req: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let mut s = req.into_inner();
        let (mut size, mut crc) = (0i32, 0u32);
        while let Some(m) = s.message().await? {
            let b = body(&m.payload);
            size += b.len() as i32;
            crc = crc32(b, crc);
        }
        Ok(Response::new(StreamingInputCallResponse {
            aggregated_payload_size: size,
            aggregated_crc: crc,
            server_id: self.name.clone(),
        }))
    }

    type FullDuplexCallStream = ReplyStream;

    async fn full_duplex_call(
        &self,
        req: Request<Streaming<StreamingOutputCallRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let mut s = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let name = self.name.clone();
        tokio::spawn(async move {
            loop {
                let m = match s.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if let Some(st) = requested(&m.response_status) {
                    let _ = tx.send(Err(st)).await;
                    return;
                }
                let got = body(&m.payload);
                let (size, crc) = (got.len() as i32, crc32(got, 0));
                for p in m.response_parameters {
                    if p.interval_us > 0 {
                        tokio::time::sleep(Duration::from_micros(p.interval_us as u64)).await;
                    }
                    let reply = StreamingOutputCallResponse {
                        payload: Some(Payload {
                            body: pattern(p.size),
                        }),
                        server_id: name.clone(),
                        received_size: size,
                        received_crc: crc,
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn unimplemented_call(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(""))
    }
}

/// Echoes the interop metadata around the generated server.
#[derive(Clone)]
struct EchoMetadata<S> {
    inner: S,
}

impl<S: NamedService> NamedService for EchoMetadata<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for EchoMetadata<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let initial = req.headers().get(ECHO_INITIAL).cloned();
        let trailer = req.headers().get(ECHO_TRAILING).cloned();
        let call = self.inner.call(req);
        Box::pin(async move {
            let mut res = call.await?;
            if let Some(v) = initial {
                res.headers_mut().insert(ECHO_INITIAL, v);
            }
            Ok(res.map(|inner| tonic::body::Body::new(MergeTrailers { inner, trailer })))
        })
    }
}

/// A response body whose trailers (grpc-status …) get one more entry.
struct MergeTrailers {
    inner: tonic::body::Body,
    trailer: Option<HeaderValue>,
}

impl HttpBody for MergeTrailers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    if let Some(v) = this.trailer.take() {
                        trailers.insert(ECHO_TRAILING, v);
                    }
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves until SIGTERM.
pub async fn serve(a: ServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(a.listen).await?;
    println!("listening {}", listener.local_addr()?);
    let svc = TestServiceServer::new(Svc { name: a.name })
        .max_decoding_message_size(MSG_LIMIT)
        .max_encoding_message_size(MSG_LIMIT);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        term.recv().await;
    };
    Server::builder()
        .add_service(EchoMetadata { inner: svc })
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
