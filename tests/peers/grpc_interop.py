#!/usr/bin/env python3
"""gRPC interop-style case suite for rotor's differential test, on grpcio
(gRPC's C core HTTP/2 stack).

    grpc_interop.py server --name be1 --listen 0.0.0.0:50051
    grpc_interop.py client --target 10.96.0.10:8080 --rounds 10 [--cases a,b]

The server serves rotor.interop.TestService (interop.proto, compiled at
start with grpcio-tools: no protoc needed).

The client runs every case of CASES, in order, `--rounds` times over ONE
channel (one HTTP/2 connection, as a long-lived client keeps it) and prints
one JSON report:

    {"cases": {"large_unary": {"results": {"<signature>": rounds}, "passed": N,
                                "failures": {"<why>": n}}, ...},
     "server_ids": {"be1": n, ...}, "connect_error": null, "elapsed_s": ...}

A signature is what the client saw, minus what may differ from one run to
the next (timings, which backend answered): status code, the server's
message, sizes, whether bodies came back intact, echoed metadata. The same
suite run straight to one backend and through rotor must give the same
signatures; `passed` counts rounds whose result is what the interop case
descriptions require.
"""

import argparse
import collections
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import zlib
from concurrent import futures


def load_stubs():
    """interop_pb2 / interop_pb2_grpc, generated once per interop.proto
    content into $TMPDIR/rotor-interop-stubs-<hash> (shared by every peer)."""
    import hashlib
    import shutil

    from grpc_tools import protoc

    here = os.path.dirname(os.path.abspath(__file__))
    proto = os.path.join(here, "interop.proto")
    with open(proto, "rb") as f:
        digest = hashlib.sha256(f.read() + protoc.__file__.encode()).hexdigest()[:16]
    final = os.path.join(tempfile.gettempdir(), f"rotor-interop-stubs-{digest}")
    if not os.path.isdir(final):
        work = tempfile.mkdtemp(prefix="rotor-interop-stubs-tmp-")
        rc = protoc.main(["protoc", f"-I{here}", f"--python_out={work}", f"--grpc_python_out={work}", proto])
        if rc != 0:
            sys.exit(f"grpc_tools.protoc failed ({rc})")
        try:
            os.rename(work, final)
        except OSError:  # another peer got there first
            shutil.rmtree(work, ignore_errors=True)
    sys.path.insert(0, final)
    import interop_pb2
    import interop_pb2_grpc
    return interop_pb2, interop_pb2_grpc


MSG_LIMIT = 64 << 20
ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
DETAILS = "grpc-status-details-bin"

_PERIOD = bytes(((i * 31 + 7) & 0xFF) for i in range(256))


def pattern(n):
    """The payload body of n bytes every peer sends: byte i = (i*31 + 7) mod 256."""
    return (_PERIOD * (n // 256 + 1))[:n]


def serve(args):
    import grpc
    pb2, pb2_grpc = load_stubs()
    name = args.name
    codes = {c.value[0]: c for c in grpc.StatusCode}

    def echo_metadata(ctx):
        """Initial metadata now; returns the trailing metadata to send."""
        md = dict(ctx.invocation_metadata())
        if ECHO_INITIAL in md:
            ctx.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
        trailing = ((ECHO_TRAILING, md[ECHO_TRAILING]),) if ECHO_TRAILING in md else ()
        ctx.set_trailing_metadata(trailing)
        return trailing

    def end_with(ctx, trailing, st):
        """Ends the call with the requested status, if one was requested."""
        if st.code == 0:
            return
        if st.details:
            ctx.set_trailing_metadata(trailing + ((DETAILS, st.details),))
        ctx.abort(codes.get(st.code, grpc.StatusCode.UNKNOWN), st.message)

    class TestService(pb2_grpc.TestServiceServicer):
        def EmptyCall(self, req, ctx):
            echo_metadata(ctx)
            return pb2.Empty()

        def UnaryCall(self, req, ctx):
            trailing = echo_metadata(ctx)
            if req.sleep_ms:
                time.sleep(req.sleep_ms / 1000)
            end_with(ctx, trailing, req.response_status)
            body = req.payload.body
            return pb2.SimpleResponse(payload=pb2.Payload(body=pattern(req.response_size)), server_id=name,
                                      received_size=len(body), received_crc=zlib.crc32(body))

        def StreamingOutputCall(self, req, ctx):
            trailing = echo_metadata(ctx)
            end_with(ctx, trailing, req.response_status)
            for p in req.response_parameters:
                if p.interval_us:
                    time.sleep(p.interval_us / 1e6)
                yield pb2.StreamingOutputCallResponse(payload=pb2.Payload(body=pattern(p.size)), server_id=name)

        def StreamingInputCall(self, it, ctx):
            echo_metadata(ctx)
            size, crc = 0, 0
            for m in it:
                size += len(m.payload.body)
                crc = zlib.crc32(m.payload.body, crc)
            return pb2.StreamingInputCallResponse(aggregated_payload_size=size, aggregated_crc=crc, server_id=name)

        def FullDuplexCall(self, it, ctx):
            trailing = echo_metadata(ctx)
            for m in it:
                end_with(ctx, trailing, m.response_status)
                body = m.payload.body
                for p in m.response_parameters:
                    if p.interval_us:
                        time.sleep(p.interval_us / 1e6)
                    yield pb2.StreamingOutputCallResponse(payload=pb2.Payload(body=pattern(p.size)), server_id=name,
                                                          received_size=len(body), received_crc=zlib.crc32(body))

        # UnimplementedCall: left to the generated base class (UNIMPLEMENTED).

    options = [("grpc.max_receive_message_length", MSG_LIMIT), ("grpc.max_send_message_length", MSG_LIMIT),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=options)
    pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"cannot bind {args.listen}")
    server.start()
    print(f"listening {args.listen}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    server.stop(grace=2).wait()


# ---------------------------------------------------------------- client

CLIENT_STREAM_SIZES = [27182, 8, 1828, 45904]
SERVER_STREAM_SIZES = [31415, 9, 2653, 58979]
LARGE_REQUEST = 271828
LARGE_RESPONSE = 314159
INITIAL_VALUE = "test_initial_metadata_value"
TRAILING_VALUE = b"\x0a\x0b\x0a\x0b\x0a\x0b"
STATUS_MESSAGE = "test status message"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
SLEEP_MS = 2000
DEADLINE_S = 0.5


class Failed(Exception):
    """A result the case description does not allow: (signature, why)."""

    def __init__(self, sig, why):
        super().__init__(why)
        self.sig = sig
        self.why = why


def code_of(e):
    try:
        return e.code().name
    except Exception:  # not an RpcError
        return type(e).__name__


def rpc_text(e):
    """`CODE: details` of an RpcError (what a failed call shows)."""
    try:
        return f"{e.code().name}: {e.details()}"[:200]
    except Exception:
        return f"{type(e).__name__}: {e}"[:200]


class Client:
    def __init__(self, args):
        import grpc
        self.grpc = grpc
        self.pb2, pb2_grpc = load_stubs()
        self.args = args
        target = args.target.removeprefix("http://")
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_receive_message_length", MSG_LIMIT), ("grpc.max_send_message_length", MSG_LIMIT)])
        self.stub = pb2_grpc.TestServiceStub(self.channel)
        pb2 = self.pb2
        self.unknown_service = self.channel.unary_unary(
            "/rotor.interop.UnimplementedService/UnimplementedCall",
            request_serializer=lambda m: m.SerializeToString(), response_deserializer=pb2.Empty.FromString)
        self.server_ids = collections.Counter()
        self.timeout = args.timeout

    def seen(self, server_id):
        if server_id:
            self.server_ids[server_id] += 1

    def payload(self, n):
        return self.pb2.Payload(body=pattern(n))

    # Each case returns its signature, or raises Failed(signature, why).

    def empty_unary(self, r):
        resp = self.stub.EmptyCall(self.pb2.Empty(), timeout=self.timeout)
        if resp.ByteSize() != 0:
            raise Failed(f"OK non-empty({resp.ByteSize()})", "EmptyCall answered a non-empty message")
        return "OK"

    def _unary_body(self, resp, sent):
        body = resp.payload.body
        intact = body == pattern(len(body))
        crc_ok = resp.received_crc == zlib.crc32(pattern(sent))
        sig = f"OK response={len(body)} intact={intact} received={resp.received_size} crc_ok={crc_ok}"
        return sig, intact and crc_ok and resp.received_size == sent

    def large_unary(self, r):
        req = self.pb2.SimpleRequest(response_size=LARGE_RESPONSE, payload=self.payload(LARGE_REQUEST))
        resp = self.stub.UnaryCall(req, timeout=self.timeout)
        self.seen(resp.server_id)
        sig, good = self._unary_body(resp, LARGE_REQUEST)
        if not (good and len(resp.payload.body) == LARGE_RESPONSE):
            raise Failed(sig, "wrong response size, body or received size/CRC")
        return sig

    def client_streaming(self, r):
        reqs = [self.pb2.StreamingInputCallRequest(payload=self.payload(n)) for n in CLIENT_STREAM_SIZES]
        resp = self.stub.StreamingInputCall(iter(reqs), timeout=self.timeout)
        self.seen(resp.server_id)
        crc = 0
        for n in CLIENT_STREAM_SIZES:
            crc = zlib.crc32(pattern(n), crc)
        sig = f"OK aggregated={resp.aggregated_payload_size} crc_ok={resp.aggregated_crc == crc}"
        if resp.aggregated_payload_size != sum(CLIENT_STREAM_SIZES) or resp.aggregated_crc != crc:
            raise Failed(sig, "wrong aggregated size or CRC")
        return sig

    def _stream_sig(self, responses, want):
        sizes = [len(m.payload.body) for m in responses]
        intact = all(m.payload.body == pattern(len(m.payload.body)) for m in responses)
        ids = {m.server_id for m in responses}
        for m in responses:
            self.seen(m.server_id)
        sig = f"OK sizes={sizes} intact={intact} servers_per_call={len(ids)}"
        if sizes != want or not intact or len(ids) > 1:
            raise Failed(sig, "wrong sizes or bodies, or more than one server in one call")
        return sig

    def server_streaming(self, r):
        req = self.pb2.StreamingOutputCallRequest(
            response_parameters=[self.pb2.ResponseParameters(size=n) for n in SERVER_STREAM_SIZES])
        return self._stream_sig(list(self.stub.StreamingOutputCall(req, timeout=self.timeout)), SERVER_STREAM_SIZES)

    def _duplex(self, metadata=None, timeout=None):
        """A FullDuplexCall fed from a queue (None ends the request stream)."""
        q = queue.Queue()

        def requests():
            while True:
                m = q.get()
                if m is None:
                    return
                yield m
        call = self.stub.FullDuplexCall(requests(), timeout=timeout or self.timeout, metadata=metadata)
        return q, call

    def ping_pong(self, r):
        q, call = self._duplex()
        responses = []
        try:
            for out, back in zip(CLIENT_STREAM_SIZES, SERVER_STREAM_SIZES):
                q.put(self.pb2.StreamingOutputCallRequest(
                    response_parameters=[self.pb2.ResponseParameters(size=back)], payload=self.payload(out)))
                m = next(call)
                responses.append(m)
                if m.received_size != out or m.received_crc != zlib.crc32(pattern(out)):
                    raise Failed(f"OK received={m.received_size} crc_ok=False", "server got a wrong request")
            q.put(None)
            extra = list(call)
        finally:
            q.put(None)
            call.cancel()
        if extra:
            raise Failed(f"OK extra_responses={len(extra)}", "responses after the last request")
        return self._stream_sig(responses, SERVER_STREAM_SIZES)

    def empty_stream(self, r):
        responses = list(self.stub.FullDuplexCall(iter([]), timeout=self.timeout))
        if responses:
            raise Failed(f"OK responses={len(responses)}", "responses to an empty request stream")
        return "OK responses=0"

    def _metadata(self):
        return ((ECHO_INITIAL, INITIAL_VALUE), (ECHO_TRAILING, TRAILING_VALUE))

    def _check_metadata(self, initial, trailing, body_sig):
        init = dict(initial or ()).get(ECHO_INITIAL)
        trail = dict(trailing or ()).get(ECHO_TRAILING)
        sig = f"{body_sig} initial={init!r} trailing={trail.hex() if isinstance(trail, bytes) else trail!r}"
        if init != INITIAL_VALUE or trail != TRAILING_VALUE:
            raise Failed(sig, "metadata not echoed")
        return sig

    def custom_metadata_unary(self, r):
        req = self.pb2.SimpleRequest(response_size=LARGE_RESPONSE, payload=self.payload(LARGE_REQUEST))
        resp, call = self.stub.UnaryCall.with_call(req, timeout=self.timeout, metadata=self._metadata())
        self.seen(resp.server_id)
        body_sig, good = self._unary_body(resp, LARGE_REQUEST)
        sig = self._check_metadata(call.initial_metadata(), call.trailing_metadata(), body_sig)
        if not good:
            raise Failed(sig, "wrong body")
        return sig

    def custom_metadata_bidi(self, r):
        req = self.pb2.StreamingOutputCallRequest(
            response_parameters=[self.pb2.ResponseParameters(size=LARGE_RESPONSE)],
            payload=self.payload(LARGE_REQUEST))
        call = self.stub.FullDuplexCall(iter([req]), timeout=self.timeout, metadata=self._metadata())
        responses = list(call)
        body_sig = self._stream_sig(responses, [LARGE_RESPONSE])
        return self._check_metadata(call.initial_metadata(), call.trailing_metadata(), body_sig)

    def _expect_status(self, fn, code, message, details=b""):
        try:
            fn()
        except self.grpc.RpcError as e:
            got_details = dict(e.trailing_metadata() or ()).get(DETAILS, b"")
            sig = f"{e.code().name}: {e.details()!r}"
            if details:
                sig += f" details_echoed={got_details == details}"
            if e.code().name != code or e.details() != message or got_details != details:
                raise Failed(sig, f"want {code}: {message!r}")
            return sig
        raise Failed("OK", f"want {code}, the call succeeded")

    def _status(self, code, message, details=b""):
        return self.pb2.EchoStatus(code=self.grpc.StatusCode[code].value[0], message=message, details=details)

    def status_code_and_message_unary(self, r):
        req = self.pb2.SimpleRequest(response_status=self._status("UNKNOWN", STATUS_MESSAGE))
        return self._expect_status(lambda: self.stub.UnaryCall(req, timeout=self.timeout), "UNKNOWN", STATUS_MESSAGE)

    def status_code_and_message_bidi(self, r):
        req = self.pb2.StreamingOutputCallRequest(response_status=self._status("UNKNOWN", STATUS_MESSAGE))
        return self._expect_status(lambda: list(self.stub.FullDuplexCall(iter([req]), timeout=self.timeout)),
                                   "UNKNOWN", STATUS_MESSAGE)

    def special_status_message(self, r):
        req = self.pb2.SimpleRequest(response_status=self._status("UNKNOWN", SPECIAL_MESSAGE))
        return self._expect_status(lambda: self.stub.UnaryCall(req, timeout=self.timeout), "UNKNOWN", SPECIAL_MESSAGE)

    def status_details(self, r):
        code, message = "INVALID_ARGUMENT", "test status message with details"
        details = self.pb2.RpcStatus(code=self.grpc.StatusCode[code].value[0], message=message).SerializeToString()
        req = self.pb2.SimpleRequest(response_status=self._status(code, message, details))
        return self._expect_status(lambda: self.stub.UnaryCall(req, timeout=self.timeout), code, message, details)

    def _expect_code(self, fn, code):
        try:
            fn()
        except self.grpc.RpcError as e:
            sig = e.code().name
            if sig != code:
                raise Failed(rpc_text(e), f"want {code}")
            return sig
        raise Failed("OK", f"want {code}, the call succeeded")

    def unimplemented_method(self, r):
        return self._expect_code(lambda: self.stub.UnimplementedCall(self.pb2.Empty(), timeout=self.timeout),
                                 "UNIMPLEMENTED")

    def unimplemented_service(self, r):
        return self._expect_code(lambda: self.unknown_service(self.pb2.Empty(), timeout=self.timeout),
                                 "UNIMPLEMENTED")

    def cancel_after_begin(self, r):
        q = queue.Queue()

        def requests():
            while q.get() is not None:
                yield self.pb2.StreamingInputCallRequest()
        fut = self.stub.StreamingInputCall.future(requests(), timeout=self.timeout)
        time.sleep(0.05)  # the stream's HEADERS are on the wire
        fut.cancel()
        q.put(None)
        try:
            fut.result(timeout=self.timeout)
        except self.grpc.FutureCancelledError:
            return "CANCELLED"
        except self.grpc.RpcError as e:
            raise Failed(rpc_text(e), "want CANCELLED")
        raise Failed("OK", "want CANCELLED, the call succeeded")

    def cancel_after_first_response(self, r):
        q, call = self._duplex()
        try:
            q.put(self.pb2.StreamingOutputCallRequest(
                response_parameters=[self.pb2.ResponseParameters(size=SERVER_STREAM_SIZES[0])],
                payload=self.payload(CLIENT_STREAM_SIZES[0])))
            first = next(call)
            self.seen(first.server_id)
            if len(first.payload.body) != SERVER_STREAM_SIZES[0]:
                raise Failed(f"OK first={len(first.payload.body)}", "wrong first response")
            call.cancel()
            try:
                for _ in call:
                    pass
            except self.grpc.RpcError as e:
                if e.code().name != "CANCELLED":
                    raise Failed(rpc_text(e), "want CANCELLED")
                return "CANCELLED"
            raise Failed("OK", "want CANCELLED, the call ended normally")
        finally:
            q.put(None)

    def timeout_on_sleeping_server(self, r):
        """The interop case: FullDuplexCall whose server sleeps past the deadline."""
        q, call = self._duplex(timeout=DEADLINE_S)
        try:
            q.put(self.pb2.StreamingOutputCallRequest(
                response_parameters=[self.pb2.ResponseParameters(size=SERVER_STREAM_SIZES[0],
                                                                 interval_us=SLEEP_MS * 1000)],
                payload=self.payload(CLIENT_STREAM_SIZES[0])))
            return self._expect_code(lambda: list(call), "DEADLINE_EXCEEDED")
        finally:
            q.put(None)

    def timeout_on_sleeping_server_unary(self, r):
        req = self.pb2.SimpleRequest(response_size=16, sleep_ms=SLEEP_MS)
        try:
            self.stub.UnaryCall(req, timeout=DEADLINE_S)
        except self.grpc.RpcError as e:
            # tonic's server enforces grpc-timeout on unary handlers itself and
            # ends the call with CANCELLED "Timeout expired"; whether that or
            # the client's own DEADLINE_EXCEEDED comes first is a race of two
            # timers, on either path. Both mean: the deadline ended the call.
            if e.code().name == "DEADLINE_EXCEEDED" or (e.code().name == "CANCELLED"
                                                         and e.details() == "Timeout expired"):
                return "DEADLINE_EXCEEDED (or the server's own timeout)"
            raise Failed(rpc_text(e), "want DEADLINE_EXCEEDED")
        raise Failed("OK", "want DEADLINE_EXCEEDED, the call succeeded")

    def slow_unary(self, r):
        """One call alone on the connection whose server answers after 1, 2 or 3 s."""
        sleep_ms = 1000 * (1 + r % 3)
        req = self.pb2.SimpleRequest(response_size=1024, payload=self.payload(512), sleep_ms=sleep_ms)
        resp = self.stub.UnaryCall(req, timeout=self.timeout)
        self.seen(resp.server_id)
        sig, good = self._unary_body(resp, 512)
        if not good or len(resp.payload.body) != 1024:
            raise Failed(sig, "wrong body")
        return sig


CASES = [
    "empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "empty_stream",
    "custom_metadata_unary", "custom_metadata_bidi", "status_code_and_message_unary",
    "status_code_and_message_bidi", "special_status_message", "status_details", "unimplemented_method",
    "unimplemented_service", "cancel_after_begin", "cancel_after_first_response", "timeout_on_sleeping_server",
    "timeout_on_sleeping_server_unary", "slow_unary",
]


def client(args):
    import grpc
    start = time.monotonic()
    c = Client(args)
    connect_error = None
    try:
        grpc.channel_ready_future(c.channel).result(timeout=10)
    except Exception as e:  # report, don't crash
        connect_error = f"{type(e).__name__}: {e}"
    cases = args.cases.split(",") if args.cases else CASES
    report = {name: {"results": collections.Counter(), "passed": 0, "failures": collections.Counter(),
                     "max_s": 0.0} for name in cases}
    if connect_error is None:
        for r in range(args.rounds):
            for name in cases:
                t0 = time.monotonic()
                try:
                    sig, why = getattr(c, name)(r), None
                except Failed as f:
                    sig, why = f.sig, f.why
                except grpc.RpcError as e:
                    sig, why = rpc_text(e), "the call failed"
                except Exception as e:  # a bug here, or a broken stack: report it
                    sig, why = f"{type(e).__name__}: {e}"[:200], "client exception"
                took = time.monotonic() - t0
                rep = report[name]
                rep["results"][sig] += 1
                rep["max_s"] = round(max(rep["max_s"], took), 3)
                if why is None:
                    rep["passed"] += 1
                else:
                    rep["failures"][f"round {r}: {why}"] += 1
                if args.verbose:
                    print(f"round {r} {name}: {sig} ({took:.3f} s){'' if why is None else ' FAILED: ' + why}",
                          file=sys.stderr, flush=True)
    out = {"cases": {k: {kk: (dict(vv) if isinstance(vv, collections.Counter) else vv) for kk, vv in v.items()}
                     for k, v in report.items()},
           "rounds": args.rounds, "server_ids": dict(c.server_ids), "connect_error": connect_error,
           "elapsed_s": round(time.monotonic() - start, 3)}
    print(json.dumps(out), flush=True)
    c.channel.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--name", required=True)
    s.add_argument("--listen", default="0.0.0.0:50051")
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--rounds", type=int, default=10)
    c.add_argument("--cases", default="", help="comma-separated subset of: " + ",".join(CASES))
    c.add_argument("--timeout", type=float, default=20.0, help="deadline of every call that should succeed")
    c.add_argument("--verbose", action="store_true", help="one line per case and round on stderr")
    args = p.parse_args()
    serve(args) if args.cmd == "server" else client(args)


if __name__ == "__main__":
    main()
