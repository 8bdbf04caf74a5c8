#!/usr/bin/env python3
"""An HTTP/2 endpoint (h2c) that resets some streams.

    reset_server.py --name be1 --port 9004 --code 2

Every request gets 200 with the server's name as body, except those whose
path starts with /reset: the server answers them with RST_STREAM(--code)
and nothing else. It prints `request PATH` for every request it receives
and `reset STREAM` for every stream it resets, so a test counts what it
served from its output.

Prints `listening PORT` once bound.
"""

import argparse
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions

OUT = threading.Lock()


def say(line):
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def serve(sock, args):
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    conn.initiate_connection()
    try:
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65536)
            if not data:
                return
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    path = dict(ev.headers).get(":path", "")
                    say(f"request {path}")
                    if path.startswith("/reset"):
                        conn.reset_stream(ev.stream_id, error_code=args.code)
                        say(f"reset {ev.stream_id}")
                        continue
                    body = args.name.encode()
                    conn.send_headers(
                        ev.stream_id, [(":status", "200"), ("content-length", str(len(body)))]
                    )
                    conn.send_data(ev.stream_id, body, end_stream=True)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except OSError:
        return
    finally:
        sock.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--code", type=int, default=2)
    args = p.parse_args()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", args.port))
    srv.listen(128)
    say(f"listening {args.port}")
    while True:
        sock, _ = srv.accept()
        threading.Thread(target=serve, args=(sock, args), daemon=True).start()


if __name__ == "__main__":
    main()
