#!/usr/bin/env python3
"""HTTP/2 clients for rotor's tests, from PyPI: the `h2` protocol library
(hyper-h2, driven over a plain socket) and `httpx` (HTTP/2 prior knowledge).

    h2_client.py h2    --addr 10.96.0.10:8080 --path /whoami --requests 50 [--concurrency 10]
                       [--upload BYTES] [--headers K --header-bytes B]
                       [--stream-window BYTES] [--conn-window BYTES] [--digest fnv|sha256]
    h2_client.py httpx --addr ... (same options)

Prints a JSON report: requests, ok, failed, errors, bodies (short bodies as
text, long ones as `<LEN bytes fnv FNV>`, or `<LEN bytes sha256 HEX>` with
`--digest sha256`), corrupt (echoed uploads that differ). `--no-ack` (h2) never
grants window back, so a response larger than the window waits. `--half-close`
(h2) shuts down its sending side once every request is sent, then only reads.
`--stream-window`
is the h2 client's SETTINGS_INITIAL_WINDOW_SIZE from its first SETTINGS on
(default 65,535); `--conn-window` its connection window (default 2**30 more
than 65,535).
`h2` splits a header block larger than the peer's frame size into HEADERS +
CONTINUATION frames, and uses HPACK's dynamic table until the server's
SETTINGS say otherwise.
"""

import argparse
import collections
import hashlib
import json
import select
import socket
import sys
import time


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


DIGEST = "fnv"


def label(body):
    if len(body) <= 64:
        try:
            return body.decode().strip()
        except UnicodeDecodeError:
            pass
    if DIGEST == "sha256":
        return f"<{len(body)} bytes sha256 {hashlib.sha256(body).hexdigest()[:16]}>"
    return f"<{len(body)} bytes fnv {fnv1a64(body):016x}>"


def upload_body(n, seq):
    # Byte i is ((i ^ seq) * 2654435761) & 0xFF: it depends on i mod 256 only.
    period = bytes((((i ^ seq) * 2654435761) & 0xFF) for i in range(256))
    return (period * (n // 256 + 1))[:n]


def extra_headers(args, seq):
    out = []
    for k in range(args.headers):
        seed = f"{seq}-{k}-"
        out.append((f"x-rotor-{k}", (seed * (args.header_bytes // len(seed) + 1))[: args.header_bytes]))
    return out


class Report:
    def __init__(self):
        self.requests = self.ok = self.failed = self.corrupt = 0
        self.errors = collections.Counter()
        self.bodies = collections.Counter()

    def done(self, status, body, sent):
        self.requests += 1
        if status != 200:
            self.fail(f"status {status}", count=False)
            return
        self.ok += 1
        if sent is not None and sent != body:
            self.corrupt += 1
        self.bodies[label(body)] += 1

    def fail(self, err, count=True):
        if count:
            self.requests += 1
        self.failed += 1
        self.errors[str(err)[:240]] += 1

    def dump(self, start):
        print(json.dumps(dict(requests=self.requests, ok=self.ok, failed=self.failed, errors=dict(self.errors),
                              bodies=dict(self.bodies), corrupt=self.corrupt,
                              elapsed_s=time.monotonic() - start)), flush=True)


def run_h2(args, rep):
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    host, port = args.addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.local_settings.max_header_list_size = 1 << 20
    if args.stream_window is not None:
        # In the first SETTINGS, and h2's own view of the window from the start.
        conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: args.stream_window,
        })
    conn.initiate_connection()
    conn_increment = (1 << 30) if args.conn_window is None else args.conn_window - 65535
    if conn_increment > 0:
        conn.increment_flow_control_window(conn_increment)
    sock.sendall(conn.data_to_send())

    next_seq = 0
    active = {}  # stream id -> dict(seq, body, status, upload, sent)
    deadline = time.monotonic() + args.timeout

    def open_stream():
        nonlocal next_seq
        seq = next_seq
        next_seq += 1
        sid = conn.get_next_available_stream_id()
        body = upload_body(args.upload, seq) if args.upload is not None else None
        headers = [(":method", "POST" if body is not None else "GET"), (":scheme", "http"),
                   (":path", args.path), (":authority", args.addr)] + extra_headers(args, seq)
        conn.send_headers(sid, headers, end_stream=body is None)
        active[sid] = dict(seq=seq, body=bytearray(), status=None, upload=body, sent=0)

    def pump_uploads():
        for sid, st in list(active.items()):
            up = st["upload"]
            if up is None or st["sent"] >= len(up):
                continue
            while st["sent"] < len(up):
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = up[st["sent"]: st["sent"] + window]
                st["sent"] += len(chunk)
                conn.send_data(sid, chunk, end_stream=st["sent"] >= len(up))
            if len(up) == 0 and st["sent"] == 0:
                conn.end_stream(sid)
                st["sent"] = 1

    while next_seq < args.requests and len(active) < args.concurrency:
        open_stream()
    pump_uploads()
    sock.sendall(conn.data_to_send())
    if args.half_close:
        # Everything is sent: close the sending side, as a client that
        # writes its requests and then only reads does. Responses must fit
        # the initial windows: nothing can be granted after this.
        sock.shutdown(socket.SHUT_WR)
    sock.setblocking(False)
    while active:
        if time.monotonic() > deadline:
            for _ in active:
                rep.fail("timeout")
            break
        r, _, _ = select.select([sock], [], [], 0.5)
        if not r:
            continue
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        except OSError as e:
            for _ in active:
                rep.fail(f"recv: {e}")
            break
        if not data:
            for _ in active:
                rep.fail("connection closed")
            break
        try:
            events = conn.receive_data(data)
        except Exception as e:  # protocol error detected by h2
            for _ in active:
                rep.fail(f"h2: {type(e).__name__}: {e}")
            break
        for ev in events:
            sid = getattr(ev, "stream_id", None)
            st = active.get(sid)
            if isinstance(ev, h2.events.ResponseReceived) and st is not None:
                st["status"] = int(dict(ev.headers).get(b":status", b"0"))
            elif isinstance(ev, h2.events.DataReceived):
                if st is not None:
                    st["body"] += ev.data
                if not args.no_ack:
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and st is not None:
                rep.done(st["status"], bytes(st["body"]), st["upload"])
                del active[sid]
                if next_seq < args.requests:
                    open_stream()
            elif isinstance(ev, h2.events.StreamReset) and st is not None:
                rep.fail(f"RST_STREAM {ev.error_code!r}")
                del active[sid]
                if next_seq < args.requests:
                    open_stream()
            elif isinstance(ev, h2.events.ConnectionTerminated):
                for _ in active:
                    rep.fail(f"GOAWAY {ev.error_code!r} last_stream={ev.last_stream_id}")
                active.clear()
        pump_uploads()
        out = conn.data_to_send()
        if out and not args.half_close:
            sock.setblocking(True)
            sock.sendall(out)
            sock.setblocking(False)
    sock.close()


def run_httpx(args, rep):
    import httpx
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(http1=False, http2=True, timeout=args.timeout, trust_env=False) as client:
        url = f"http://{args.addr}{args.path}"

        def one(seq):
            body = upload_body(args.upload, seq) if args.upload is not None else None
            headers = extra_headers(args, seq)
            try:
                if body is None:
                    r = client.get(url, headers=headers)
                else:
                    r = client.post(url, headers=headers, content=body)
                if r.http_version != "HTTP/2":
                    return ("fail", f"spoke {r.http_version}")
                return ("done", r.status_code, r.content, body)
            except Exception as e:
                return ("fail", f"{type(e).__name__}: {e}")

        with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
            for res in pool.map(one, range(args.requests)):
                if res[0] == "done":
                    rep.done(res[1], res[2], res[3])
                else:
                    rep.fail(res[1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("client", choices=["h2", "httpx"])
    p.add_argument("--addr", required=True)
    p.add_argument("--path", default="/whoami")
    p.add_argument("--requests", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--upload", type=int)
    p.add_argument("--headers", type=int, default=0)
    p.add_argument("--header-bytes", type=int, default=32)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--stream-window", type=int)
    p.add_argument("--conn-window", type=int)
    p.add_argument("--digest", choices=["fnv", "sha256"], default="fnv")
    # never grant window back: what the server sends beyond it must wait
    p.add_argument("--no-ack", action="store_true")
    p.add_argument("--half-close", action="store_true",
                   help="h2: send every request, then shut down the sending side and only read")
    args = p.parse_args()
    global DIGEST
    DIGEST = args.digest
    start = time.monotonic()
    rep = Report()
    try:
        (run_h2 if args.client == "h2" else run_httpx)(args, rep)
    except Exception as e:
        rep.fail(f"{type(e).__name__}: {e}")
    rep.dump(start)


if __name__ == "__main__":
    main()
