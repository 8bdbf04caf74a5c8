"""An HTTP/2 client the way threaded programs are written: one thread blocks
in recv() on the socket while another writes requests to it.

A blocking recv() must only return data, EOF or a real error. On a socket
in a BPF socket map it could return EAGAIN: tcp_bpf_recvmsg gives up when
the socket's wait queue is woken without data, and a writer's ACKed bytes
wake it. Prints one JSON line: responses counted, errors seen.

usage: blocking_reader.py HOST PORT REQUESTS PATH
"""
import json
import socket
import struct
import sys
import threading
import time

host, port, requests, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sock = socket.create_connection((host, port), timeout=None)
sock.settimeout(None)  # blocking
lock = threading.Lock()
report = {"responses": 0, "errors": [], "reads": 0}
done = threading.Event()
# Streams in flight, well under any server's SETTINGS_MAX_CONCURRENT_STREAMS
# (nghttpd allows 100): the writer waits for responses as a client would.
in_flight = threading.Semaphore(8)


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def send(data):
    with lock:
        sock.sendall(data)


def literal(index, value):
    # literal header field without indexing, name from the static table
    v = value.encode()
    return bytes([index]) + bytes([len(v)]) + v


def headers_block(authority):
    # :method GET (2), :scheme http (6), then :path and :authority literals
    return b"\x82\x86" + literal(0x04, path) + literal(0x01, authority)


def reader():
    buf = b""
    try:
        while not done.is_set():
            chunk = sock.recv(65536)
            report["reads"] += 1
            if not chunk:
                report["errors"].append("EOF before every response")
                break
            buf += chunk
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                kind, flags = buf[3], buf[4]
                stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload = buf[9 : 9 + length]
                buf = buf[9 + length :]
                if kind == 4 and not flags & 1:  # SETTINGS: ACK it
                    send(frame(4, 1, 0))
                elif kind == 6 and not flags & 1:  # PING
                    send(frame(6, 1, 0, payload))
                elif kind == 7:
                    report["errors"].append("GOAWAY %r" % payload[4:8].hex())
                    done.set()
                elif kind == 3:
                    report["errors"].append("RST_STREAM %d" % stream)
                elif kind in (0, 1) and flags & 1 and stream:
                    report["responses"] += 1
                    in_flight.release()
                    if report["responses"] == requests:
                        done.set()
    except OSError as e:  # BlockingIOError (EAGAIN) is one
        report["errors"].append("%s: %s" % (type(e).__name__, e))
    done.set()


# The preface goes first: the server's SETTINGS may already be waiting,
# and the reader's ACK of it must not come before our preface.
send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(8, 0, 0, struct.pack(">I", 1 << 24)))
t = threading.Thread(target=reader, daemon=True)
t.start()
block = headers_block("%s:%d" % (host, port))
stream = 1
deadline = time.time() + 30
for i in range(requests):
    while not in_flight.acquire(timeout=0.1):
        if done.is_set() or time.time() > deadline:
            break
    if done.is_set() or time.time() > deadline:
        break
    send(frame(1, 0x5, stream, block))  # END_STREAM | END_HEADERS
    stream += 2
    # A ping between requests: more writes, more wake-ups of the reader.
    send(frame(6, 0, 0, struct.pack(">Q", i)))
    time.sleep(0.001)
done.wait(max(1.0, deadline - time.time()))
print(json.dumps(report))
