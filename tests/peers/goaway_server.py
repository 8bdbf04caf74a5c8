#!/usr/bin/env python3
"""An HTTP/2 server (h2c, python-h2) that starts a graceful shutdown on SIGUSR1.

    goaway_server.py --name be2 --port 8081

Every request gets 200 with the server's name as body. On SIGUSR1 the server
sends each connection the first GOAWAY of a graceful shutdown (last stream id
2^31-1, RFC 9113 §6.8: "the server is going away; streams already on their
way are still processed") and keeps serving, as grpc-core and Go's net/http do
between their two GOAWAYs. It prints `goaway after N streams` when it has sent
them (N: streams served before), then
`after N` whenever a stream opens after its GOAWAY (N: how many so far): a
client that read the GOAWAY opens none, so N counts the streams that were
already on their way, and those its balancer sent after the GOAWAY arrived.
`goaways N` follows each GOAWAY sent (N: how many so far, all connections).

Prints `listening PORT` once bound.
"""

import argparse
import os
import selectors
import signal
import socket
import struct
import sys

import h2.config
import h2.connection
import h2.events

MAX_STREAM_ID = 2**31 - 1
# Written raw: python-h2 closes its state machine on a GOAWAY it sends and
# would refuse the streams a graceful shutdown still serves.
GOAWAY = struct.pack(">I", 8)[1:] + bytes([0x7, 0]) + struct.pack(">III", 0, MAX_STREAM_ID, 0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    body = args.name.encode()

    # SIGUSR1 wakes the selector through a pipe; the GOAWAYs go out from the loop.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGUSR1, lambda *_: os.write(wake_w, b"x"))

    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", args.port))
    lsock.listen(128)
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, "listen")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    print(f"listening {args.port}", flush=True)

    conns = {}  # socket -> H2Connection
    going_away = False
    after = 0
    served = 0
    goaways = 0

    def flush(sock, conn):
        data = conn.data_to_send()
        if data:
            sock.setblocking(True)
            sock.sendall(data)
            sock.setblocking(False)

    def close(sock):
        sel.unregister(sock)
        conns.pop(sock, None)
        sock.close()

    while True:
        for key, _ in sel.select():
            if key.data == "listen":
                sock, _ = lsock.accept()
                sock.setblocking(False)
                conn = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
                )
                conn.initiate_connection()
                conns[sock] = conn
                sel.register(sock, selectors.EVENT_READ, "conn")
                flush(sock, conn)
                if going_away:
                    sock.sendall(GOAWAY)
                    goaways += 1
                    print(f"goaways {goaways}", flush=True)
            elif key.data == "wake":
                os.read(wake_r, 64)
                if not going_away:
                    going_away = True
                    for sock in list(conns):
                        sock.setblocking(True)
                        sock.sendall(GOAWAY)
                        sock.setblocking(False)
                    goaways += len(conns)
                    print(f"goaway after {served} streams", flush=True)
                    print(f"goaways {goaways}", flush=True)
            else:
                sock = key.fileobj
                conn = conns[sock]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    close(sock)
                    continue
                try:
                    events = conn.receive_data(data)
                except Exception as e:  # a broken peer loses only its connection
                    sys.stderr.write(f"connection error: {e}\n")
                    flush(sock, conn)
                    close(sock)
                    continue
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        served += 1
                        if going_away:
                            after += 1
                            print(f"after {after}", flush=True)
                        conn.send_headers(
                            ev.stream_id,
                            [(":status", "200"), ("content-length", str(len(body)))],
                        )
                        conn.send_data(ev.stream_id, body, end_stream=True)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                flush(sock, conn)


if __name__ == "__main__":
    main()
