#!/usr/bin/env python3
"""Writes the seed corpus (seeds/<target>/) from the captures here.

captures/*.bin: the first bytes real clients sent to a listener that
answered with an empty SETTINGS (nghttp -n, curl --http2-prior-knowledge,
h2load -n 3 -m 3; nghttp2 1.52 / curl 7.88). The seeds wrap them (and the
RFC 7541 Appendix C examples) in each target's input format, so the
fuzzers start from real frames and header blocks. Run it again after a
target's input format changes; the seeded tests (userspace/h2check) read
these files too.
"""
import os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frames(stream):
    """(type, flags, stream id, payload) of each whole frame."""
    out, at = [], 0
    while at + 9 <= len(stream):
        n = int.from_bytes(stream[at:at + 3], "big")
        t, f = stream[at + 3], stream[at + 4]
        sid = int.from_bytes(stream[at + 5:at + 9], "big") & 0x7fffffff
        out.append((t, f, sid, stream[at + 9:at + 9 + n]))
        at += 9 + n
    return out


def header_blocks(stream):
    blocks = []
    for t, f, _, p in frames(stream):
        if t != 1:
            continue
        if f & 0x8:  # PADDED
            p = p[1:len(p) - p[0]]
        if f & 0x20:  # PRIORITY
            p = p[5:]
        blocks.append(p)
    return blocks


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def unhex(s):
    return bytes.fromhex("".join(s.split()))


# RFC 7541 C.3 (requests without Huffman) and C.4 (with), one connection each
C3 = ["828684410f7777772e6578616d706c652e636f6d",
      "828684be58086e6f2d6361636865",
      "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"]
C4 = ["828684418cf1e3c2e5f23a6ba0ab90f4ff",
      "828684be5886a8eb10649cbf",
      "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]

captures = {}
for name in sorted(os.listdir(os.path.join(HERE, "captures"))):
    with open(os.path.join(HERE, "captures", name), "rb") as f:
        captures[name.removesuffix(".bin")] = f.read()

for name, data in captures.items():
    after = data[len(PREFACE):] if data.startswith(PREFACE) else data
    # message_reader: [mode (bit 0: frames, no preface)] + stream
    write("message_reader", name, b"\x00" + data)
    write("message_reader", name + "-frames", b"\x01" + after)
    # kernel_framing: [mode, isn (LE), kernel split, reader split] + stream
    for i, (mode, isn, ks, rs) in enumerate([
            (0, 0x1000, 0, 0), (0, 0xfffffff0, 1, 3), (2, 0x7fffffff, 2, 1),
            (3, 0xffffff00, 3, 2)]):
        stream = after if mode & 1 else data
        write("kernel_framing", f"{name}-{i}", bytes([mode]) + struct.pack("<I", isn) + bytes([ks, rs]) + stream)
    blocks = header_blocks(after)
    # hpack_decode: [initial table size] + (op, len, block)...: the
    # connection's blocks in order (they refer to each other's entries)
    seq = b"".join(b"\x00" + struct.pack(">H", len(b)) + b for b in blocks)
    write("hpack_decode", name, b"\x00" + seq)
    write("hpack_decode", name + "-small-limit", b"\x00" + seq.replace(b"\x00", b"\x24", 1))
    # header_rewrite: (ctl, len, block)...; ctl 0x08: two frames
    write("header_rewrite", name, b"".join(bytes([0x08 * (i % 2) | 0x20 * (i == 0)]) + struct.pack(">H", len(b)) + b
                                           for i, b in enumerate(blocks)))

for name, seq in (("rfc7541-c3", C3), ("rfc7541-c4", C4)):
    blocks = [unhex(b) for b in seq]
    write("hpack_decode", name, b"\x00" + b"".join(b"\x00" + struct.pack(">H", len(b)) + b for b in blocks))
    # the table shrunk to 64 and the update owed: the next block starts with it
    write("hpack_decode", name + "-resize", b"\x00" + b"\x00" + struct.pack(">H", len(blocks[0])) + blocks[0]
          + b"\xc0\x00\x40" + b"\x00" + struct.pack(">H", len(blocks[1]) + 2) + b"\x3f\x21" + blocks[1])
    write("header_rewrite", name, b"".join(b"\x00" + struct.pack(">H", len(b)) + b for b in blocks))
