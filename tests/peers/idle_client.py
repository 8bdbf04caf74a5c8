#!/usr/bin/env python3
"""An HTTP/2 client that idles between rounds on one connection (the `h2`
library from PyPI over a plain socket).

    idle_client.py --addr 10.96.0.10:8080 --rounds 4 --idle 10 --gets 3 [--path /whoami]
                   [--preface-after SECONDS]

Each round sends a PING and waits for its ACK, then sends `--gets` GETs one
after another, each waiting for its whole response; between rounds it sends
nothing for `--idle` seconds and prints `idle N` (N: the round that follows)
when an idle period starts, so a test can act while the connection idles.
`--preface-after` connects and waits that long before its preface (a
client slower than the agent's wait for a server-first protocol).
Prints a JSON report at the end: rounds (each: ping_ms, gets: [{status,
body, ms}]) and errors.
"""

import argparse
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


class Conn:
    def __init__(self, addr, limit, preface_after):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=limit)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        time.sleep(preface_after)
        self.h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.initiate_connection()
        self.flush()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def events(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the connection closed")
        evs = self.h2.receive_data(data)
        self.flush()
        return evs

    def ping(self):
        t0 = time.monotonic()
        self.h2.ping(b"rotoridl")
        self.flush()
        while True:
            for ev in self.events():
                if isinstance(ev, h2.events.PingAckReceived):
                    return (time.monotonic() - t0) * 1000
                if isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY {ev.error_code}")

    def get(self, authority, path):
        t0 = time.monotonic()
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            sid,
            [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)],
            end_stream=True,
        )
        self.flush()
        status, body = None, b""
        while True:
            for ev in self.events():
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = int(dict(ev.headers).get(":status", "0"))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                    self.flush()
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ConnectionError(f"stream {sid} reset: {ev.error_code}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY {ev.error_code}")
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ms = (time.monotonic() - t0) * 1000
                    return {"status": status, "body": body.decode(errors="replace").strip(), "ms": ms}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--path", default="/whoami")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--idle", type=float, default=10.0)
    p.add_argument("--gets", type=int, default=3)
    p.add_argument("--limit", type=float, default=30.0, help="socket timeout, seconds")
    p.add_argument("--preface-after", type=float, default=0.0)
    args = p.parse_args()
    report = {"rounds": [], "errors": []}
    try:
        conn = Conn(args.addr, args.limit, args.preface_after)
        for r in range(args.rounds):
            if r > 0:
                print(f"idle {r}", flush=True)
                time.sleep(args.idle)
            ping_ms = conn.ping()
            gets = [conn.get(args.addr, args.path) for _ in range(args.gets)]
            report["rounds"].append({"ping_ms": ping_ms, "gets": gets})
    except Exception as e:  # the report says what failed
        report["errors"].append(f"{type(e).__name__}: {e}")
    print(json.dumps(report), flush=True)
    sys.exit(0 if not report["errors"] else 1)


if __name__ == "__main__":
    main()
