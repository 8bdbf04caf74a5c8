#!/usr/bin/env node
// gRPC interop server for rotor's differential suite on @grpc/grpc-js
// (Node's http2 module): serves rotor.interop.TestService (../interop.proto,
// loaded at run time with @grpc/proto-loader: no protoc), as
// grpc_interop.py server and `rotor-peer interop-server` do.
//
//   node interop_server.js --name be1 --listen 0.0.0.0:50051
//
// Prints `listening ADDR` once bound; SIGTERM stops it.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const MSG_LIMIT = 64 << 20;
const ECHO_INITIAL = 'x-grpc-test-echo-initial';
const ECHO_TRAILING = 'x-grpc-test-echo-trailing-bin';
const DETAILS = 'grpc-status-details-bin';

function parseArgs(argv) {
  const args = { name: null, listen: '0.0.0.0:50051' };
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--name') args.name = argv[i + 1];
    else if (argv[i] === '--listen') args.listen = argv[i + 1];
    else {
      console.error('usage: interop_server.js --name NAME [--listen HOST:PORT]');
      process.exit(2);
    }
  }
  if (!args.name) {
    console.error('--name is required');
    process.exit(2);
  }
  return args;
}

// Payload bodies: byte i = (i * 31 + 7) mod 256.
const PERIOD = Buffer.from(Array.from({ length: 256 }, (_, i) => (i * 31 + 7) & 0xff));
function pattern(n) {
  const b = Buffer.alloc(n);
  for (let at = 0; at < n; at += 256) PERIOD.copy(b, at, 0, Math.min(256, n - at));
  return b;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

// CRC-32 (IEEE, as zlib.crc32), continuing from `crc`.
function crc32(buf, crc = 0) {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const body = (m) => (m.payload && m.payload.body) || Buffer.alloc(0);

// Sends the echoed initial metadata; returns the trailing metadata to send.
function echoMetadata(call) {
  const initial = call.metadata.get(ECHO_INITIAL);
  if (initial.length) {
    const md = new grpc.Metadata();
    md.set(ECHO_INITIAL, initial[0]);
    call.sendMetadata(md);
  }
  const trailing = new grpc.Metadata();
  const t = call.metadata.get(ECHO_TRAILING);
  if (t.length) trailing.set(ECHO_TRAILING, t[0]);
  return trailing;
}

// The error that ends a call with the requested status, or null.
function requestedStatus(st, trailing) {
  if (!st || !st.code) return null;
  const metadata = trailing.clone();
  if (st.details && st.details.length) metadata.set(DETAILS, Buffer.from(st.details));
  return { code: st.code, details: st.message, metadata };
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const def = protoLoader.loadSync(path.join(__dirname, '..', 'interop.proto'), {
    longs: Number, defaults: true, keepCase: true,
  });
  const pkg = grpc.loadPackageDefinition(def).rotor.interop;
  const name = args.name;

  const impl = {
    EmptyCall(call, callback) {
      callback(null, {}, echoMetadata(call));
    },

    async UnaryCall(call, callback) {
      const trailing = echoMetadata(call);
      const req = call.request;
      if (req.sleep_ms) await sleep(req.sleep_ms);
      const err = requestedStatus(req.response_status, trailing);
      if (err) return callback(err);
      const b = body(req);
      callback(null, {
        payload: { body: pattern(req.response_size) }, server_id: name,
        received_size: b.length, received_crc: crc32(b),
      }, trailing);
    },

    async StreamingOutputCall(call) {
      const trailing = echoMetadata(call);
      const req = call.request;
      const err = requestedStatus(req.response_status, trailing);
      if (err) return call.emit('error', err);
      for (const p of req.response_parameters) {
        if (p.interval_us) await sleep(p.interval_us / 1000);
        if (call.cancelled) return;
        call.write({ payload: { body: pattern(p.size) }, server_id: name });
      }
      call.end(trailing);
    },

    StreamingInputCall(call, callback) {
      const trailing = echoMetadata(call);
      let size = 0;
      let crc = 0;
      call.on('data', (m) => {
        const b = body(m);
        size += b.length;
        crc = crc32(b, crc);
      });
      call.on('end', () => callback(null, { aggregated_payload_size: size, aggregated_crc: crc, server_id: name },
        trailing));
      call.on('error', () => {});
    },

    FullDuplexCall(call) {
      const trailing = echoMetadata(call);
      // Requests are answered one after another, in order.
      let chain = Promise.resolve();
      let failed = false;
      call.on('data', (m) => {
        chain = chain.then(async () => {
          if (failed || call.cancelled) return;
          const err = requestedStatus(m.response_status, trailing);
          if (err) {
            failed = true;
            call.emit('error', err);
            return;
          }
          const b = body(m);
          for (const p of m.response_parameters) {
            if (p.interval_us) await sleep(p.interval_us / 1000);
            if (call.cancelled) return;
            call.write({
              payload: { body: pattern(p.size) }, server_id: name, received_size: b.length, received_crc: crc32(b),
            });
          }
        });
      });
      call.on('end', () => {
        chain = chain.then(() => {
          if (!failed && !call.cancelled) call.end(trailing);
        });
      });
      call.on('error', () => {});
    },
    // UnimplementedCall: not implemented (grpc-js answers UNIMPLEMENTED).
  };

  const server = new grpc.Server({
    'grpc.max_receive_message_length': MSG_LIMIT,
    'grpc.max_send_message_length': MSG_LIMIT,
  });
  server.addService(pkg.TestService.service, impl);
  server.bindAsync(args.listen, grpc.ServerCredentials.createInsecure(), (e) => {
    if (e) {
      console.error(`cannot bind ${args.listen}: ${e}`);
      process.exit(1);
    }
    console.log(`listening ${args.listen}`);
  });
  const stop = () => server.tryShutdown(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
