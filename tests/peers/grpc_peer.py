#!/usr/bin/env python3
"""gRPC peer for rotor's tests, on grpcio (gRPC's C core HTTP/2 stack).

    grpc_peer.py server --name be1 --listen 0.0.0.0:50051 [--max-concurrent-streams N] [--grace S]
    grpc_peer.py client --target 10.96.0.10:8080 --unary 300 --streams 2 ...

The server serves rotor.test.Echo (echo.proto, compiled at start with
grpcio-tools: no protoc needed) and names itself in every reply; SIGTERM
stops it gracefully (GOAWAY, in-flight calls finish within --grace).
The client uses one channel (one HTTP/2 connection, gRPC's transparent
retries on) and prints a JSON report with the same shape as
`rotor-peer grpc-client` (tonic).
"""

import argparse
import collections
import json
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures


def load_stubs():
    """echo_pb2 / echo_pb2_grpc, generated once per echo.proto content into
    $TMPDIR/rotor-grpc-stubs-<hash> (shared by every peer process)."""
    import hashlib
    import shutil

    from grpc_tools import protoc

    here = os.path.dirname(os.path.abspath(__file__))
    proto = os.path.join(here, "echo.proto")
    with open(proto, "rb") as f:
        digest = hashlib.sha256(f.read() + protoc.__file__.encode()).hexdigest()[:16]
    final = os.path.join(tempfile.gettempdir(), f"rotor-grpc-stubs-{digest}")
    if not os.path.isdir(final):
        work = tempfile.mkdtemp(prefix="rotor-grpc-stubs-tmp-")
        rc = protoc.main(["protoc", f"-I{here}", f"--python_out={work}", f"--grpc_python_out={work}", proto])
        if rc != 0:
            sys.exit(f"grpc_tools.protoc failed ({rc})")
        try:
            os.rename(work, final)
        except OSError:  # another peer got there first
            shutil.rmtree(work, ignore_errors=True)
    sys.path.insert(0, final)
    import echo_pb2
    import echo_pb2_grpc
    return echo_pb2, echo_pb2_grpc


MSG_LIMIT = 64 << 20


def serve(args):
    import grpc
    pb2, pb2_grpc = load_stubs()
    name = args.name

    def logged():
        if args.log_calls:
            print("call", flush=True)

    class Echo(pb2_grpc.EchoServicer):
        def Unary(self, req, ctx):
            logged()
            if args.die_on_delay_ms and req.delay_ms == args.die_on_delay_ms:
                # a request that kills the pod that takes it (a query of death)
                print(f"dying on a call with delay_ms {req.delay_ms}", file=sys.stderr, flush=True)
                os._exit(3)
            if req.delay_ms:
                time.sleep(req.delay_ms / 1000)
            return pb2.Msg(backend=name, seq=req.seq, payload=req.payload)

        def ServerStream(self, req, ctx):
            logged()
            for i in range(req.count):
                if i and req.delay_ms:
                    time.sleep(req.delay_ms / 1000)
                yield pb2.Msg(backend=name, seq=i, payload=req.payload)

        def ClientStream(self, it, ctx):
            logged()
            n = b = 0
            for m in it:
                n += 1
                b += len(m.payload)
            return pb2.Msg(backend=name, received=n, seq=b)

        def Bidi(self, it, ctx):
            logged()
            for m in it:
                yield pb2.Msg(backend=name, seq=m.seq, payload=m.payload)

    options = [("grpc.max_receive_message_length", MSG_LIMIT), ("grpc.max_send_message_length", MSG_LIMIT),
               ("grpc.so_reuseport", 0)]
    if args.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", args.max_concurrent_streams))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=256), options=options,
                         maximum_concurrent_rpcs=None)
    pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"cannot bind {args.listen}")
    server.start()
    print(f"listening {args.listen}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    print("SIGTERM: graceful shutdown", file=sys.stderr, flush=True)
    server.stop(grace=args.grace).wait()
    print("stopped", file=sys.stderr, flush=True)


class Kind:
    def __init__(self):
        self.lock = threading.Lock()
        self.r = dict(calls=0, ok=0, failed=0, errors=collections.Counter(), refused=0, answered_failed=0,
                      backends=collections.Counter(), mixed=0, calls_by_backend=collections.Counter(), corrupt=0)

    def call(self):
        with self.lock:
            self.r["calls"] += 1

    def fail(self, err, answered=False):
        with self.lock:
            self.r["failed"] += 1
            if "REFUSED_STREAM" in err or "error code 7" in err or "refused" in err.lower():
                self.r["refused"] += 1
            if answered:
                self.r["answered_failed"] += 1
            if len(self.r["errors"]) < 20 or err in self.r["errors"]:
                self.r["errors"][err] += 1

    def unary_ok(self, backend, intact):
        with self.lock:
            self.r["ok"] += 1
            self.r["backends"][backend] += 1
            if not intact:
                self.r["corrupt"] += 1

    def stream_done(self, backends, intact):
        with self.lock:
            self.r["ok"] += 1
            for b in backends:
                self.r["backends"][b] += 1
            distinct = set(backends)
            if len(distinct) > 1:
                self.r["mixed"] += 1
            if len(distinct) == 1:
                self.r["calls_by_backend"][backends[0]] += 1
            if not intact:
                self.r["corrupt"] += 1

    def report(self):
        with self.lock:
            return {k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in self.r.items()}


def describe(e):
    try:
        text = f"{e.code().name}: {e.details()}"
    except Exception:  # not an RpcError
        text = f"{type(e).__name__}: {e}"
    return text[:240]


def payload(n, seq):
    return bytes(((i * 31 + seq) & 0xFF) for i in range(n))


def client(args):
    import grpc
    pb2, pb2_grpc = load_stubs()
    start = time.monotonic()
    target = args.target.removeprefix("http://")
    channel = grpc.insecure_channel(target, options=[
        ("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", MSG_LIMIT), ("grpc.max_send_message_length", MSG_LIMIT)])
    stub = pb2_grpc.EchoStub(channel)
    kinds = {k: Kind() for k in ("unary", "server_stream", "client_stream", "bidi")}
    timeout = args.timeout
    connect_error = None
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except Exception as e:  # report, don't crash
        connect_error = describe(e)

    def server_stream(i):
        k = kinds["server_stream"]
        k.call()
        body = payload(args.payload, i)
        backends, intact = [], True
        try:
            for m in stub.ServerStream(pb2.Msg(count=args.stream_msgs, delay_ms=args.stream_delay_ms, payload=body),
                                       timeout=timeout):
                intact &= m.seq == len(backends) and m.payload == body
                backends.append(m.backend)
            k.stream_done(backends, intact and len(backends) == args.stream_msgs)
        except Exception as e:
            k.fail(describe(e), bool(backends))

    def client_stream(i):
        k = kinds["client_stream"]
        k.call()

        def gen():
            for j in range(args.stream_msgs):
                if j and args.stream_delay_ms:
                    time.sleep(args.stream_delay_ms / 1000)
                yield pb2.Msg(seq=j, payload=payload(args.payload, j))
        try:
            m = stub.ClientStream(gen(), timeout=timeout)
            intact = m.received == args.stream_msgs and m.seq == args.stream_msgs * args.payload
            k.stream_done([m.backend], intact)
        except Exception as e:
            k.fail(describe(e))

    def bidi(i):
        k = kinds["bidi"]
        k.call()
        q = collections.deque()
        cv = threading.Condition()
        done = [False]

        def gen():
            for j in range(args.stream_msgs):
                with cv:
                    while not done[0] and len(q) < j:
                        cv.wait(0.1)
                    if done[0]:
                        return
                if j and args.stream_delay_ms:
                    time.sleep(args.stream_delay_ms / 1000)
                yield pb2.Msg(seq=j, payload=payload(args.payload, j))
        backends, intact = [], True
        try:
            for m in stub.Bidi(gen(), timeout=timeout):
                intact &= m.seq == len(backends) and m.payload == payload(args.payload, len(backends))
                backends.append(m.backend)
                with cv:
                    q.append(m)
                    cv.notify_all()
            k.stream_done(backends, intact and len(backends) == args.stream_msgs)
        except Exception as e:
            k.fail(describe(e), bool(backends))
        finally:
            with cv:
                done[0] = True
                cv.notify_all()

    threads = []
    if connect_error is None:
        for i in range(args.streams):
            for kind, fn in (("server", server_stream), ("client", client_stream), ("bidi", bidi)):
                if kind in args.kinds.split(","):
                    t = threading.Thread(target=fn, args=(i,))
                    t.start()
                    threads.append(t)
        lock = threading.Lock()
        counter = [0]
        deadline = start + args.duration if args.duration else None

        def unary_worker():
            k = kinds["unary"]
            while True:
                with lock:
                    seq = counter[0]
                    counter[0] += 1
                if deadline is not None:
                    if time.monotonic() >= deadline:
                        return
                elif seq >= args.unary:
                    return
                body = payload(args.payload, seq)
                k.call()
                try:
                    m = stub.Unary(pb2.Msg(seq=seq, payload=body, delay_ms=args.unary_delay_ms), timeout=timeout)
                    k.unary_ok(m.backend, m.seq == seq and m.payload == body)
                except Exception as e:
                    k.fail(describe(e))
        if args.unary > 0 or args.duration:
            for _ in range(max(1, args.concurrency)):
                t = threading.Thread(target=unary_worker)
                t.start()
                threads.append(t)
    for t in threads:
        t.join()
    report = {k: v.report() for k, v in kinds.items()}
    report["elapsed_s"] = time.monotonic() - start
    report["connect_error"] = connect_error
    print(json.dumps(report), flush=True)
    channel.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--name", required=True)
    s.add_argument("--listen", default="0.0.0.0:50051")
    s.add_argument("--max-concurrent-streams", type=int, default=0)
    s.add_argument("--grace", type=float, default=10.0)
    s.add_argument("--log-calls", action="store_true", help="print a line `call` per call")
    s.add_argument("--die-on-delay-ms", type=int, default=0,
                   help="exit at once on a unary call with this delay_ms, without answering")
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--unary", type=int, default=0)
    c.add_argument("--duration", type=float, default=0)
    c.add_argument("--concurrency", type=int, default=8)
    c.add_argument("--unary-delay-ms", type=int, default=0)
    c.add_argument("--payload", type=int, default=16)
    c.add_argument("--streams", type=int, default=0)
    c.add_argument("--kinds", default="server,client,bidi")
    c.add_argument("--stream-msgs", type=int, default=20)
    c.add_argument("--stream-delay-ms", type=int, default=10)
    c.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    serve(args) if args.cmd == "server" else client(args)


if __name__ == "__main__":
    main()
