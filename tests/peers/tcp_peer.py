#!/usr/bin/env python3
"""Peers that do not speak HTTP/2, for a balanced Service's non-HTTP/2 clients.

    tcp_peer.py http1 --name be1 --port 9000     HTTP/1.1 server (keep-alive): GET -> name, POST -> echo
    tcp_peer.py echo --port 9001 [--banner TEXT] TCP echo server; with --banner it speaks first
    tcp_peer.py silent --port 9002               accepts, reads and never answers (a hung server)
    tcp_peer.py echo-client --addr A:P --bytes N [--banner TEXT] [--timeout S]
                                                 sends N bytes, reads them back; prints a JSON report

Servers print `listening PORT` once bound.
"""

import argparse
import http.server
import json
import socket
import socketserver
import sys
import threading
import time


def pattern(n):
    return bytes(((i * 7 + (i >> 8)) & 0xFF) for i in range(n))


def http1(args):
    name = args.name.encode()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, body):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", args.name)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._reply(name)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            self._reply(self.rfile.read(n))

        def log_message(self, *a):
            sys.stderr.write(f"{self.address_string()} {a[0] % a[1:]}\n")

    srv = http.server.ThreadingHTTPServer(("0.0.0.0", args.port), H)
    print(f"listening {args.port}", flush=True)
    srv.serve_forever()


def echo(args):
    class H(socketserver.BaseRequestHandler):
        def handle(self):
            if args.banner:
                self.request.sendall(args.banner.encode() + b"\r\n")
            while True:
                d = self.request.recv(65536)
                if not d:
                    return
                self.request.sendall(d)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("0.0.0.0", args.port), H)
    srv.daemon_threads = True
    print(f"listening {args.port}", flush=True)
    srv.serve_forever()


def silent(args):
    class H(socketserver.BaseRequestHandler):
        def handle(self):
            while self.request.recv(65536):
                pass

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("0.0.0.0", args.port), H)
    srv.daemon_threads = True
    print(f"listening {args.port}", flush=True)
    srv.serve_forever()


def echo_client(args):
    start = time.monotonic()
    rep = dict(ok=False, sent=0, received=0, banner=None, error=None)
    try:
        host, port = args.addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=args.timeout)
        s.settimeout(args.timeout)
        if args.banner:
            want = args.banner.encode() + b"\r\n"
            got = b""
            while len(got) < len(want):
                d = s.recv(len(want) - len(got))
                if not d:
                    break
                got += d
            rep["banner"] = got.decode(errors="replace")
            if got != want:
                raise RuntimeError(f"banner {got!r}, want {want!r}")
        if args.first:
            # A first write, then wait for its echo before anything else.
            first = args.first.encode()
            s.sendall(first)
            got = b""
            while len(got) < len(first):
                d = s.recv(len(first) - len(got))
                if not d:
                    break
                got += d
            if got != first:
                raise RuntimeError(f"first write {first!r} echoed as {got!r}")
        data = pattern(args.bytes)
        back = bytearray()

        def reader():
            try:
                while len(back) < len(data):
                    d = s.recv(65536)
                    if not d:
                        return
                    back.extend(d)
            except OSError as e:
                rep["error"] = f"recv: {e}"

        t = threading.Thread(target=reader)
        t.start()
        for i in range(0, len(data), 4096):
            s.sendall(data[i:i + 4096])
            rep["sent"] = i + len(data[i:i + 4096])
        t.join(args.timeout)
        rep["received"] = len(back)
        rep["ok"] = bytes(back) == data
        if not rep["ok"] and rep["error"] is None:
            rep["error"] = f"echo differs: {len(back)} of {len(data)} bytes back"
        s.close()
    except Exception as e:
        rep["error"] = f"{type(e).__name__}: {e}"
    rep["elapsed_s"] = time.monotonic() - start
    print(json.dumps(rep), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("http1")
    h.add_argument("--name", required=True)
    h.add_argument("--port", type=int, default=9000)
    e = sub.add_parser("echo")
    e.add_argument("--port", type=int, default=9001)
    e.add_argument("--banner")
    q = sub.add_parser("silent")
    q.add_argument("--port", type=int, default=9002)
    c = sub.add_parser("echo-client")
    c.add_argument("--addr", required=True)
    c.add_argument("--bytes", type=int, default=100000)
    c.add_argument("--banner")
    c.add_argument("--first", help="send these bytes first and wait for their echo")
    c.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()
    {"http1": http1, "echo": echo, "silent": silent, "echo-client": echo_client}[args.cmd](args)


if __name__ == "__main__":
    main()
