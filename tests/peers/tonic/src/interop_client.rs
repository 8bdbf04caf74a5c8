//! tonic client of rotor's differential gRPC suite: the cases of
//! `grpc_interop.py client` (grpcio), on hyper and the h2 crate, with the
//! same JSON report (`rotor-peer interop-client --target http://… --rounds N`).
//!
//! Every round runs every case in order over ONE channel. A case's
//! signature is what the client saw without what may differ between runs
//! (timings, which backend answered). Where tonic differs from grpcio:
//! a call is cancelled by dropping it (signature `CANCELLED (dropped)`), and
//! a deadline is `grpc-timeout` for the server plus a local timer.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

use crate::interop::pb::test_service_client::TestServiceClient;
use crate::interop::pb::unimplemented_service_client::UnimplementedServiceClient;
use crate::interop::pb::*;
use crate::interop::{crc32, pattern, ECHO_INITIAL, ECHO_TRAILING, MSG_LIMIT};

#[derive(clap::Args)]
pub struct ClientArgs {
    /// e.g. http://10.96.0.10:8080
    #[arg(long)]
    target: String,
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Comma-separated subset of the cases (default: all).
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Time limit of every call that should succeed, in seconds.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
    /// One line per case and round on stderr.
    #[arg(long)]
    verbose: bool,
}

const CLIENT_STREAM_SIZES: [i32; 4] = [27182, 8, 1828, 45904];
const SERVER_STREAM_SIZES: [i32; 4] = [31415, 9, 2653, 58979];
const LARGE_REQUEST: i32 = 271_828;
const LARGE_RESPONSE: i32 = 314_159;
const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: &[u8] = b"\x0a\x0b\x0a\x0b\x0a\x0b";
const STATUS_MESSAGE: &str = "test status message";
const SPECIAL_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n";
const SLEEP_MS: u32 = 2000;
const DEADLINE: Duration = Duration::from_millis(500);
/// How long after the deadline the client stops waiting for the server's status.
const DEADLINE_SLACK: Duration = Duration::from_millis(500);
const DEADLINE_SIG: &str = "DEADLINE_EXCEEDED (or the server's own timeout)";

const CASES: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata_unary",
    "custom_metadata_bidi",
    "status_code_and_message_unary",
    "status_code_and_message_bidi",
    "special_status_message",
    "status_details",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "timeout_on_sleeping_server_unary",
    "slow_unary",
];

/// A result the case does not allow.
struct Failed {
    sig: String,
    why: String,
}

fn failed(sig: impl Into<String>, why: impl Into<String>) -> Failed {
    Failed {
        sig: sig.into(),
        why: why.into(),
    }
}

/// `DEADLINE_EXCEEDED` from `Code::DeadlineExceeded`, as grpcio names codes.
fn code_name(code: Code) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{code:?}").chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn status_text(s: &Status) -> String {
    format!("{}: {}", code_name(s.code()), s.message())
        .chars()
        .take(200)
        .collect()
}

impl From<Status> for Failed {
    fn from(s: Status) -> Failed {
        failed(status_text(&s), "the call failed")
    }
}

type CaseResult = Result<String, Failed>;

fn payload(n: i32) -> Option<Payload> {
    Some(Payload { body: pattern(n) })
}

fn body(p: &Option<Payload>) -> &[u8] {
    p.as_ref().map_or(&[], |p| p.body.as_slice())
}

#[derive(Default, Serialize)]
struct CaseReport {
    results: BTreeMap<String, u64>,
    passed: u64,
    failures: BTreeMap<String, u64>,
    max_s: f64,
}

#[derive(Serialize)]
struct Report {
    cases: BTreeMap<String, CaseReport>,
    rounds: u32,
    server_ids: BTreeMap<String, u64>,
    connect_error: Option<String>,
    elapsed_s: f64,
}

struct Client {
    c: TestServiceClient<Channel>,
    unknown_service: UnimplementedServiceClient<Channel>,
    limit: Duration,
    server_ids: BTreeMap<String, u64>,
}

impl Client {
    fn seen(&mut self, id: &str) {
        if !id.is_empty() {
            *self.server_ids.entry(id.to_string()).or_default() += 1;
        }
    }

    /// `f` within the call time limit.
    async fn within<T>(&self, f: impl Future<Output = Result<T, Status>>) -> Result<T, Failed> {
        match tokio::time::timeout(self.limit, f).await {
            Err(_) => Err(failed("timeout (local)", "no answer within the time limit")),
            Ok(r) => Ok(r?),
        }
    }

    async fn run(&mut self, case: &str, round: u32) -> CaseResult {
        match case {
            "empty_unary" => self.empty_unary().await,
            "large_unary" => self.large_unary().await,
            "client_streaming" => self.client_streaming().await,
            "server_streaming" => self.server_streaming().await,
            "ping_pong" => self.ping_pong().await,
            "empty_stream" => self.empty_stream().await,
            "custom_metadata_unary" => self.custom_metadata_unary().await,
            "custom_metadata_bidi" => self.custom_metadata_bidi().await,
            "status_code_and_message_unary" => {
                let st = echo_status(Code::Unknown, STATUS_MESSAGE, b"");
                self.status_unary(st, Code::Unknown, STATUS_MESSAGE, b"")
                    .await
            }
            "status_code_and_message_bidi" => self.status_bidi().await,
            "special_status_message" => {
                let st = echo_status(Code::Unknown, SPECIAL_MESSAGE, b"");
                self.status_unary(st, Code::Unknown, SPECIAL_MESSAGE, b"")
                    .await
            }
            "status_details" => {
                let msg = "test status message with details";
                let details = prost::Message::encode_to_vec(&RpcStatus {
                    code: Code::InvalidArgument as i32,
                    message: msg.into(),
                });
                let st = echo_status(Code::InvalidArgument, msg, &details);
                self.status_unary(st, Code::InvalidArgument, msg, &details)
                    .await
            }
            "unimplemented_method" => {
                let r = self.c.unimplemented_call(Empty {}).await;
                expect_code(r.map(|_| ()), Code::Unimplemented)
            }
            "unimplemented_service" => {
                let r = self.unknown_service.unimplemented_call(Empty {}).await;
                expect_code(r.map(|_| ()), Code::Unimplemented)
            }
            "cancel_after_begin" => self.cancel_after_begin().await,
            "cancel_after_first_response" => self.cancel_after_first_response().await,
            "timeout_on_sleeping_server" => self.timeout_bidi().await,
            "timeout_on_sleeping_server_unary" => self.timeout_unary().await,
            "slow_unary" => self.slow_unary(round).await,
            other => Err(failed(format!("unknown case {other}"), "unknown case")),
        }
    }

    async fn empty_unary(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        self.within(c.empty_call(Empty {})).await?;
        Ok("OK".into())
    }

    fn unary_sig(&mut self, resp: &SimpleResponse, sent: i32) -> (String, bool) {
        self.seen(&resp.server_id);
        let b = body(&resp.payload);
        let intact = b == pattern(b.len() as i32).as_slice();
        let crc_ok = resp.received_crc == crc32(&pattern(sent), 0);
        let sig = format!(
            "OK response={} intact={} received={} crc_ok={}",
            b.len(),
            py_bool(intact),
            resp.received_size,
            py_bool(crc_ok)
        );
        (sig, intact && crc_ok && resp.received_size == sent)
    }

    async fn large_unary(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        let req = SimpleRequest {
            response_size: LARGE_RESPONSE,
            payload: payload(LARGE_REQUEST),
            ..Default::default()
        };
        let resp = self.within(c.unary_call(req)).await?.into_inner();
        let (sig, good) = self.unary_sig(&resp, LARGE_REQUEST);
        if !good || body(&resp.payload).len() != LARGE_RESPONSE as usize {
            return Err(failed(
                sig,
                "wrong response size, body or received size/CRC",
            ));
        }
        Ok(sig)
    }

    async fn client_streaming(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        let reqs: Vec<StreamingInputCallRequest> = CLIENT_STREAM_SIZES
            .iter()
            .map(|n| StreamingInputCallRequest {
                payload: payload(*n),
            })
            .collect();
        let resp = self
            .within(c.streaming_input_call(tokio_stream::iter(reqs)))
            .await?
            .into_inner();
        self.seen(&resp.server_id);
        let crc = CLIENT_STREAM_SIZES
            .iter()
            .fold(0, |crc, n| crc32(&pattern(*n), crc));
        let sig = format!(
            "OK aggregated={} crc_ok={}",
            resp.aggregated_payload_size,
            py_bool(resp.aggregated_crc == crc)
        );
        if resp.aggregated_payload_size != CLIENT_STREAM_SIZES.iter().sum::<i32>()
            || resp.aggregated_crc != crc
        {
            return Err(failed(sig, "wrong aggregated size or CRC"));
        }
        Ok(sig)
    }

    fn stream_sig(
        &mut self,
        responses: &[StreamingOutputCallResponse],
        want: &[i32],
    ) -> CaseResult {
        let sizes: Vec<i32> = responses
            .iter()
            .map(|m| body(&m.payload).len() as i32)
            .collect();
        let intact = responses
            .iter()
            .all(|m| body(&m.payload) == pattern(body(&m.payload).len() as i32).as_slice());
        let mut ids: Vec<&str> = responses.iter().map(|m| m.server_id.as_str()).collect();
        for id in &ids {
            if !id.is_empty() {
                *self.server_ids.entry(id.to_string()).or_default() += 1;
            }
        }
        ids.sort();
        ids.dedup();
        let sizes_text: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        let sig = format!(
            "OK sizes=[{}] intact={} servers_per_call={}",
            sizes_text.join(", "),
            py_bool(intact),
            ids.len()
        );
        if sizes != want || !intact || ids.len() > 1 {
            return Err(failed(
                sig,
                "wrong sizes or bodies, or more than one server in one call",
            ));
        }
        Ok(sig)
    }

    async fn collect(
        &self,
        s: &mut Streaming<StreamingOutputCallResponse>,
    ) -> Result<Vec<StreamingOutputCallResponse>, Failed> {
        let mut out = Vec::new();
        let all = async {
            while let Some(m) = s.message().await? {
                out.push(m);
            }
            Ok::<(), Status>(())
        };
        self.within(all).await?;
        Ok(out)
    }

    async fn server_streaming(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        let req = StreamingOutputCallRequest {
            response_parameters: SERVER_STREAM_SIZES
                .iter()
                .map(|n| ResponseParameters {
                    size: *n,
                    interval_us: 0,
                })
                .collect(),
            ..Default::default()
        };
        let mut s = self
            .within(c.streaming_output_call(req))
            .await?
            .into_inner();
        let responses = self.collect(&mut s).await?;
        self.stream_sig(&responses, &SERVER_STREAM_SIZES)
    }

    /// A FullDuplexCall whose first request is already queued (a server
    /// may send its headers only with its first response).
    async fn duplex(
        &self,
        first: StreamingOutputCallRequest,
        metadata: bool,
        timeout: Option<Duration>,
    ) -> Result<
        (
            mpsc::Sender<StreamingOutputCallRequest>,
            tonic::Response<Streaming<StreamingOutputCallResponse>>,
        ),
        Failed,
    > {
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.send(first).await;
        let mut req = Request::new(ReceiverStream::new(rx));
        if metadata {
            add_metadata(req.metadata_mut());
        }
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        let mut c = self.c.clone();
        let resp = self.within(c.full_duplex_call(req)).await?;
        Ok((tx, resp))
    }

    async fn ping_pong(&mut self) -> CaseResult {
        let req = |out: i32, back: i32| StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters {
                size: back,
                interval_us: 0,
            }],
            payload: payload(out),
            ..Default::default()
        };
        let (tx, resp) = self
            .duplex(
                req(CLIENT_STREAM_SIZES[0], SERVER_STREAM_SIZES[0]),
                false,
                None,
            )
            .await?;
        let mut s = resp.into_inner();
        let mut responses = Vec::new();
        for i in 0..4 {
            if i > 0 {
                let _ = tx
                    .send(req(CLIENT_STREAM_SIZES[i], SERVER_STREAM_SIZES[i]))
                    .await;
            }
            let Some(m) = self.within(s.message()).await? else {
                return Err(failed(
                    format!("OK ended after {i} responses"),
                    "stream ended early",
                ));
            };
            let out = CLIENT_STREAM_SIZES[i];
            if m.received_size != out || m.received_crc != crc32(&pattern(out), 0) {
                return Err(failed(
                    format!("OK received={} crc_ok=False", m.received_size),
                    "server got a wrong request",
                ));
            }
            responses.push(m);
        }
        drop(tx);
        let extra = self.collect(&mut s).await?;
        if !extra.is_empty() {
            return Err(failed(
                format!("OK extra_responses={}", extra.len()),
                "responses after the last request",
            ));
        }
        self.stream_sig(&responses, &SERVER_STREAM_SIZES)
    }

    async fn empty_stream(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        let none = tokio_stream::empty::<StreamingOutputCallRequest>();
        let mut s = self.within(c.full_duplex_call(none)).await?.into_inner();
        let responses = self.collect(&mut s).await?;
        if !responses.is_empty() {
            return Err(failed(
                format!("OK responses={}", responses.len()),
                "responses to an empty request stream",
            ));
        }
        Ok("OK responses=0".into())
    }

    async fn custom_metadata_unary(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        let mut req = Request::new(SimpleRequest {
            response_size: LARGE_RESPONSE,
            payload: payload(LARGE_REQUEST),
            ..Default::default()
        });
        add_metadata(req.metadata_mut());
        let resp = self.within(c.unary_call(req)).await?;
        // tonic merges a unary call's trailers into its response metadata.
        let md = resp.metadata().clone();
        let m = resp.into_inner();
        let (body_sig, good) = self.unary_sig(&m, LARGE_REQUEST);
        let sig = check_metadata(&md, &md, body_sig)?;
        if !good {
            return Err(failed(sig, "wrong body"));
        }
        Ok(sig)
    }

    async fn custom_metadata_bidi(&mut self) -> CaseResult {
        let first = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters {
                size: LARGE_RESPONSE,
                interval_us: 0,
            }],
            payload: payload(LARGE_REQUEST),
            ..Default::default()
        };
        let (tx, resp) = self.duplex(first, true, None).await?;
        drop(tx);
        let initial = resp.metadata().clone();
        let mut s = resp.into_inner();
        let responses = self.collect(&mut s).await?;
        let trailing = self.within(s.trailers()).await?.unwrap_or_default();
        let body_sig = self.stream_sig(&responses, &[LARGE_RESPONSE])?;
        check_metadata(&initial, &trailing, body_sig)
    }

    async fn status_unary(
        &mut self,
        st: EchoStatus,
        code: Code,
        message: &str,
        details: &[u8],
    ) -> CaseResult {
        let mut c = self.c.clone();
        let req = SimpleRequest {
            response_status: Some(st),
            ..Default::default()
        };
        match tokio::time::timeout(self.limit, c.unary_call(req)).await {
            Err(_) => Err(failed("timeout (local)", "no answer within the time limit")),
            Ok(Ok(_)) => Err(failed(
                "OK",
                format!("want {}, the call succeeded", code_name(code)),
            )),
            Ok(Err(s)) => expect_status(&s, code, message, details),
        }
    }

    async fn status_bidi(&mut self) -> CaseResult {
        let first = StreamingOutputCallRequest {
            response_status: Some(echo_status(Code::Unknown, STATUS_MESSAGE, b"")),
            ..Default::default()
        };
        let run = async {
            let (tx, resp) = self.duplex(first, false, None).await?;
            drop(tx);
            let mut s = resp.into_inner();
            self.collect(&mut s).await
        };
        match run.await {
            Ok(_) => Err(failed("OK", "want UNKNOWN, the call succeeded")),
            Err(f) if f.why == "the call failed" => {
                // The Status came back: compare it in full.
                let sig = f.sig;
                let want = format!("UNKNOWN: {STATUS_MESSAGE}");
                if sig != want {
                    return Err(failed(sig, format!("want {want:?}")));
                }
                Ok(sig)
            }
            Err(f) => Err(f),
        }
    }

    async fn cancel_after_begin(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        let (tx, rx) = mpsc::channel::<StreamingInputCallRequest>(1);
        // Poll the call long enough for its HEADERS to go out, then drop it
        // (tonic's cancel): RST_STREAM(CANCEL).
        let r = tokio::time::timeout(
            Duration::from_millis(50),
            c.streaming_input_call(ReceiverStream::new(rx)),
        )
        .await;
        drop(tx);
        match r {
            Err(_) => Ok("CANCELLED (dropped)".into()),
            Ok(Ok(_)) => Err(failed("OK", "the call ended before it was cancelled")),
            Ok(Err(s)) => Err(failed(
                status_text(&s),
                "the call failed before it was cancelled",
            )),
        }
    }

    async fn cancel_after_first_response(&mut self) -> CaseResult {
        let first = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters {
                size: SERVER_STREAM_SIZES[0],
                interval_us: 0,
            }],
            payload: payload(CLIENT_STREAM_SIZES[0]),
            ..Default::default()
        };
        let (tx, resp) = self.duplex(first, false, None).await?;
        let mut s = resp.into_inner();
        let Some(m) = self.within(s.message()).await? else {
            return Err(failed("OK no response", "no first response"));
        };
        self.seen(&m.server_id);
        if body(&m.payload).len() != SERVER_STREAM_SIZES[0] as usize {
            return Err(failed(
                format!("OK first={}", body(&m.payload).len()),
                "wrong first response",
            ));
        }
        drop(s);
        drop(tx);
        Ok("CANCELLED (dropped)".into())
    }

    async fn timeout_bidi(&mut self) -> CaseResult {
        let first = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters {
                size: SERVER_STREAM_SIZES[0],
                interval_us: (SLEEP_MS * 1000) as i32,
            }],
            payload: payload(CLIENT_STREAM_SIZES[0]),
            ..Default::default()
        };
        let run = async {
            let (_tx, resp) = self.duplex(first, false, Some(DEADLINE)).await?;
            let mut s = resp.into_inner();
            while s.message().await?.is_some() {}
            Ok::<(), Failed>(())
        };
        deadline_result(
            tokio::time::timeout(DEADLINE + DEADLINE_SLACK, run)
                .await
                .ok(),
        )
    }

    async fn timeout_unary(&mut self) -> CaseResult {
        let mut c = self.c.clone();
        let mut req = Request::new(SimpleRequest {
            response_size: 16,
            sleep_ms: SLEEP_MS,
            ..Default::default()
        });
        req.set_timeout(DEADLINE);
        let r = tokio::time::timeout(DEADLINE + DEADLINE_SLACK, c.unary_call(req)).await;
        deadline_result(r.ok().map(|r| r.map(|_| ()).map_err(Failed::from)))
    }

    async fn slow_unary(&mut self, round: u32) -> CaseResult {
        let mut c = self.c.clone();
        let req = SimpleRequest {
            response_size: 1024,
            payload: payload(512),
            sleep_ms: 1000 * (1 + round % 3),
            ..Default::default()
        };
        let resp = self.within(c.unary_call(req)).await?.into_inner();
        let (sig, good) = self.unary_sig(&resp, 512);
        if !good || body(&resp.payload).len() != 1024 {
            return Err(failed(sig, "wrong body"));
        }
        Ok(sig)
    }
}

/// Python's spelling, so both clients' signatures read alike.
fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn echo_status(code: Code, message: &str, details: &[u8]) -> EchoStatus {
    EchoStatus {
        code: code as i32,
        message: message.into(),
        details: details.to_vec(),
    }
}

fn add_metadata(md: &mut MetadataMap) {
    md.insert(ECHO_INITIAL, MetadataValue::from_static(INITIAL_VALUE));
    md.insert_bin(ECHO_TRAILING, MetadataValue::from_bytes(TRAILING_VALUE));
}

fn check_metadata(initial: &MetadataMap, trailing: &MetadataMap, body_sig: String) -> CaseResult {
    let init = initial
        .get(ECHO_INITIAL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let trail = trailing
        .get_bin(ECHO_TRAILING)
        .and_then(|v| v.to_bytes().ok());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let sig = format!(
        "{body_sig} initial={} trailing={}",
        init.as_deref().map_or("None".into(), |s| format!("'{s}'")),
        trail
            .as_deref()
            .map_or("None".into(), |b| format!("'{}'", hex(b)))
    );
    if init.as_deref() != Some(INITIAL_VALUE) || trail.as_deref() != Some(TRAILING_VALUE) {
        return Err(failed(sig, "metadata not echoed"));
    }
    Ok(sig)
}

fn expect_status(s: &Status, code: Code, message: &str, details: &[u8]) -> CaseResult {
    let mut sig = format!("{}: {:?}", code_name(s.code()), s.message());
    if !details.is_empty() {
        sig.push_str(&format!(
            " details_echoed={}",
            py_bool(s.details() == details)
        ));
    }
    if s.code() != code || s.message() != message || s.details() != details {
        return Err(failed(
            sig,
            format!("want {}: {message:?}", code_name(code)),
        ));
    }
    Ok(sig)
}

fn expect_code(r: Result<(), Status>, code: Code) -> CaseResult {
    match r {
        Ok(()) => Err(failed(
            "OK",
            format!("want {}, the call succeeded", code_name(code)),
        )),
        Err(s) if s.code() == code => Ok(code_name(code)),
        Err(s) => Err(failed(status_text(&s), format!("want {}", code_name(code)))),
    }
}

/// A call that should end at its deadline: `None` when the local timer ended
/// it. tonic's server ends a unary call at grpc-timeout itself with CANCELLED
/// "Timeout expired"; which of the timers wins is a race, on either path.
fn deadline_result(r: Option<Result<(), Failed>>) -> CaseResult {
    match r {
        None => Ok(DEADLINE_SIG.into()),
        Some(Ok(())) => Err(failed("OK", "want DEADLINE_EXCEEDED, the call succeeded")),
        Some(Err(f))
            if f.sig.starts_with("DEADLINE_EXCEEDED:") || f.sig == "CANCELLED: Timeout expired" =>
        {
            Ok(DEADLINE_SIG.into())
        }
        Some(Err(f)) => Err(failed(f.sig, "want DEADLINE_EXCEEDED")),
    }
}

pub async fn run(a: ClientArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let target = if a.target.starts_with("http") {
        a.target.clone()
    } else {
        format!("http://{}", a.target)
    };
    let cases: Vec<String> = if a.cases.is_empty() {
        CASES.iter().map(|s| s.to_string()).collect()
    } else {
        a.cases.clone()
    };
    let mut report = Report {
        cases: cases
            .iter()
            .map(|c| (c.clone(), CaseReport::default()))
            .collect(),
        rounds: a.rounds,
        server_ids: BTreeMap::new(),
        connect_error: None,
        elapsed_s: 0.0,
    };
    match Channel::from_shared(target)?.connect().await {
        Err(e) => report.connect_error = Some(format!("{e:?}")),
        Ok(channel) => {
            let mut client = Client {
                c: TestServiceClient::new(channel.clone())
                    .max_decoding_message_size(MSG_LIMIT)
                    .max_encoding_message_size(MSG_LIMIT),
                unknown_service: UnimplementedServiceClient::new(channel),
                limit: Duration::from_secs_f64(a.timeout),
                server_ids: BTreeMap::new(),
            };
            for round in 0..a.rounds {
                for name in &cases {
                    let t0 = Instant::now();
                    let r = client.run(name, round).await;
                    let took = t0.elapsed().as_secs_f64();
                    let rep = report.cases.entry(name.clone()).or_default();
                    rep.max_s = rep.max_s.max((took * 1000.0).round() / 1000.0);
                    let (sig, why) = match r {
                        Ok(sig) => (sig, None),
                        Err(f) => (f.sig, Some(f.why)),
                    };
                    if a.verbose {
                        let tail = why
                            .as_deref()
                            .map_or(String::new(), |w| format!(" FAILED: {w}"));
                        eprintln!("round {round} {name}: {sig} ({took:.3} s){tail}");
                    }
                    *rep.results.entry(sig).or_default() += 1;
                    match why {
                        None => rep.passed += 1,
                        Some(w) => {
                            *rep.failures
                                .entry(format!("round {round}: {w}"))
                                .or_default() += 1
                        }
                    }
                }
            }
            report.server_ids = client.server_ids;
        }
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
