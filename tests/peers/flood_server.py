#!/usr/bin/env python3
"""A hostile HTTP/2 endpoint (h2c): correct for every path but /flood.

    flood_server.py --name be2 --port 8081 --mode control|data --bytes N

Every request gets 200 with the server's name as body, except GET /flood:
its response starts with 70,000 bytes of DATA (more than a client with
HTTP/2's default 65,535-byte window may receive before it grants more), then
  --mode control: N bytes of HEADERS frames on the stream (trailers, again
                  and again), which no flow control limits (frames of
                  unknown types would not do: the kernel discards those);
  --mode data:    N more bytes of DATA, ignoring every window.
It prints `flood sent N` when done (or `flood cut after N` when the
connection broke), `goaway CODE` for a GOAWAY it receives, and `closed
after flood` when a connection it flooded ends (the peer closed or reset it).

Prints `listening PORT` once bound.
"""

import argparse
import socket
import struct
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions

HEADERS = 0x1
END_HEADERS = 0x4


OUT = threading.Lock()


def say(line):
    """One whole line: print() from two threads (the flood's and the
    reader's) wrote `flood cut after N` and `goaway 3` onto one line."""
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def serve(sock, args):
    lock = threading.Lock()  # whole frames only: the flood and h2's output share the socket
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()

    def flush():
        data = conn.data_to_send()
        if data:
            with lock:
                sock.sendall(data)

    def flood(stream):
        sent = 0
        try:
            with lock:
                sock.sendall(frame(0x1, 0x4, stream, b"\x88"))  # HEADERS :status 200
            for _ in range(0, 70_000, 10_000):
                with lock:
                    sock.sendall(frame(0x0, 0, stream, bytes(10_000)))
            if args.mode == "control":
                chunk = frame(HEADERS, END_HEADERS, stream, bytes(16_000))
            else:
                chunk = frame(0x0, 0, stream, bytes(16_000))
            while sent < args.bytes:
                with lock:
                    sock.sendall(chunk)
                sent += len(chunk)
            say(f"flood sent {sent}")
        except OSError:
            say(f"flood cut after {sent}")

    flooding = threading.Event()
    raw = bytearray()  # the peer's frames, read beside h2, which may give up on them
    preface = 24
    try:
        flush()
        while True:
            data = sock.recv(65536)
            if not data:
                return
            raw += data
            while True:
                if preface:
                    take = min(preface, len(raw))
                    del raw[:take]
                    preface -= take
                    if preface:
                        break
                if len(raw) < 9:
                    break
                length = int.from_bytes(raw[:3], "big")
                if len(raw) < 9 + length:
                    break
                if raw[3] == 0x7 and length >= 8:
                    say(f"goaway {int.from_bytes(raw[13:17], 'big')}")
                del raw[: 9 + length]
            if flooding.is_set():
                # The flood holds the socket's send side (blocked once the
                # agent stops reading): only look for the agent's GOAWAY.
                continue
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                # h2 does not know the flooded stream's state: frames for it
                # (a WINDOW_UPDATE, an RST_STREAM) may look wrong to it.
                events = []
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    path = dict(ev.headers).get(":path", "")
                    if path == "/flood":
                        flooding.set()
                        threading.Thread(target=flood, args=(ev.stream_id,), daemon=True).start()
                        continue
                    body = args.name.encode()
                    conn.send_headers(
                        ev.stream_id, [(":status", "200"), ("content-length", str(len(body)))]
                    )
                    conn.send_data(ev.stream_id, body, end_stream=True)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if flooding.is_set():
                continue  # the flood may hold the send side (see above)
            try:
                flush()
            except OSError:
                return
    except OSError:
        return
    finally:
        if flooding.is_set():
            say("closed after flood")
        sock.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["control", "data"], required=True)
    p.add_argument("--bytes", type=int, required=True)
    args = p.parse_args()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", args.port))
    lsock.listen(128)
    say(f"listening {args.port}")
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=serve, args=(sock, args), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
