#!/usr/bin/env node
// gRPC client for rotor's tests on @grpc/grpc-js (Node's gRPC stack, over
// Node's http2 module), with the arguments and the JSON report of
// `grpc_peer.py client` and `rotor-peer grpc-client`:
//
//   node grpc_client.js --target 10.96.0.10:8080 --unary 300 --streams 3 ...
//
// One channel (one HTTP/2 connection). echo.proto is loaded at run time
// with @grpc/proto-loader: no protoc.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const MSG_LIMIT = 64 << 20;

function parseArgs(argv) {
  const args = {
    target: null, unary: 0, duration: 0, concurrency: 8, unaryDelayMs: 0, payload: 16,
    streams: 0, kinds: 'server,client,bidi', streamMsgs: 20, streamDelayMs: 10, timeout: 30,
  };
  const names = {
    '--target': ['target', String], '--unary': ['unary', Number], '--duration': ['duration', Number],
    '--concurrency': ['concurrency', Number], '--unary-delay-ms': ['unaryDelayMs', Number],
    '--payload': ['payload', Number], '--streams': ['streams', Number], '--kinds': ['kinds', String],
    '--stream-msgs': ['streamMsgs', Number], '--stream-delay-ms': ['streamDelayMs', Number],
    '--timeout': ['timeout', Number],
  };
  for (let i = 0; i < argv.length; i += 2) {
    const known = names[argv[i]];
    if (!known || i + 1 >= argv.length) {
      console.error(`usage: grpc_client.js --target HOST:PORT [${Object.keys(names).join(' N] [')} N]`);
      process.exit(2);
    }
    args[known[0]] = known[1](argv[i + 1]);
  }
  if (!args.target) {
    console.error('--target is required');
    process.exit(2);
  }
  args.target = args.target.replace(/^http:\/\//, '');
  return args;
}

function payload(n, seq) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seq) & 0xff;
  return b;
}

const statusName = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

function describe(e) {
  const text = e && e.code !== undefined ? `${statusName[e.code] || e.code}: ${e.details}` : String(e);
  return text.slice(0, 240);
}

// One kind of call's tally, shaped like grpc_peer.py's Kind.
class Kind {
  constructor() {
    this.r = {
      calls: 0, ok: 0, failed: 0, errors: {}, refused: 0, answered_failed: 0,
      backends: {}, mixed: 0, calls_by_backend: {}, corrupt: 0,
    };
  }
  call() { this.r.calls++; }
  fail(err, answered = false) {
    this.r.failed++;
    if (err.includes('REFUSED_STREAM') || err.includes('code 7') || err.toLowerCase().includes('refused')) {
      this.r.refused++;
    }
    if (answered) this.r.answered_failed++;
    if (Object.keys(this.r.errors).length < 20 || err in this.r.errors) {
      this.r.errors[err] = (this.r.errors[err] || 0) + 1;
    }
  }
  unaryOk(backend, intact) {
    this.r.ok++;
    this.r.backends[backend] = (this.r.backends[backend] || 0) + 1;
    if (!intact) this.r.corrupt++;
  }
  streamDone(backends, intact) {
    this.r.ok++;
    for (const b of backends) this.r.backends[b] = (this.r.backends[b] || 0) + 1;
    const distinct = new Set(backends);
    if (distinct.size > 1) this.r.mixed++;
    if (distinct.size === 1) this.r.calls_by_backend[backends[0]] = (this.r.calls_by_backend[backends[0]] || 0) + 1;
    if (!intact) this.r.corrupt++;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function loadStub(target) {
  const def = protoLoader.loadSync(path.join(__dirname, '..', 'echo.proto'), {
    longs: Number, defaults: true, keepCase: true,
  });
  const Echo = grpc.loadPackageDefinition(def).rotor.test.Echo;
  return new Echo(target, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MSG_LIMIT,
    'grpc.max_send_message_length': MSG_LIMIT,
    'grpc.enable_http_proxy': 0,
  });
}

function waitForReady(stub, seconds) {
  return new Promise((resolve) => {
    stub.waitForReady(Date.now() + seconds * 1000, (e) => resolve(e ? describe(e) : null));
  });
}

function unaryCall(stub, args, k, seq) {
  const body = payload(args.payload, seq);
  k.call();
  return new Promise((resolve) => {
    stub.Unary({ seq, payload: body, delay_ms: args.unaryDelayMs }, { deadline: deadline(args) }, (e, m) => {
      if (e) k.fail(describe(e));
      else k.unaryOk(m.backend, m.seq === seq && body.equals(m.payload));
      resolve();
    });
  });
}

function deadline(args) {
  return Date.now() + args.timeout * 1000;
}

function serverStream(stub, args, k, i) {
  k.call();
  const body = payload(args.payload, i);
  const backends = [];
  let intact = true;
  return new Promise((resolve) => {
    const call = stub.ServerStream(
      { count: args.streamMsgs, delay_ms: args.streamDelayMs, payload: body }, { deadline: deadline(args) });
    call.on('data', (m) => {
      intact = intact && m.seq === backends.length && body.equals(m.payload);
      backends.push(m.backend);
    });
    const once = settleOnce(resolve);
    call.on('error', once((e) => k.fail(describe(e), backends.length > 0)));
    call.on('end', once(() => k.streamDone(backends, intact && backends.length === args.streamMsgs)));
  });
}

// grpc-js may emit 'end' after 'error' on the same call: the first one counts.
function settleOnce(resolve) {
  let done = false;
  return (f) => (...a) => {
    if (done) return;
    done = true;
    f(...a);
    resolve();
  };
}

function clientStream(stub, args, k) {
  k.call();
  return new Promise((resolve) => {
    const call = stub.ClientStream({ deadline: deadline(args) }, (e, m) => {
      if (e) k.fail(describe(e));
      else k.streamDone([m.backend], m.received === args.streamMsgs && m.seq === args.streamMsgs * args.payload);
      resolve();
    });
    (async () => {
      for (let j = 0; j < args.streamMsgs; j++) {
        if (j && args.streamDelayMs) await sleep(args.streamDelayMs);
        call.write({ seq: j, payload: payload(args.payload, j) });
      }
      call.end();
    })();
  });
}

// Ping-pong: message j goes out once j replies came back.
function bidi(stub, args, k) {
  k.call();
  const backends = [];
  let intact = true;
  return new Promise((resolve) => {
    const call = stub.Bidi({ deadline: deadline(args) });
    const send = (j) => call.write({ seq: j, payload: payload(args.payload, j) });
    call.on('data', async (m) => {
      intact = intact && m.seq === backends.length && payload(args.payload, backends.length).equals(m.payload);
      backends.push(m.backend);
      if (backends.length < args.streamMsgs) {
        if (args.streamDelayMs) await sleep(args.streamDelayMs);
        send(backends.length);
      } else {
        call.end();
      }
    });
    const once = settleOnce(resolve);
    call.on('error', once((e) => k.fail(describe(e), backends.length > 0)));
    call.on('end', once(() => k.streamDone(backends, intact && backends.length === args.streamMsgs)));
    if (args.streamMsgs > 0) send(0);
    else call.end();
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const start = Date.now();
  const stub = loadStub(args.target);
  const kinds = { unary: new Kind(), server_stream: new Kind(), client_stream: new Kind(), bidi: new Kind() };
  const connectError = await waitForReady(stub, 10);
  const calls = [];
  if (connectError === null) {
    const want = args.kinds.split(',');
    for (let i = 0; i < args.streams; i++) {
      if (want.includes('server')) calls.push(serverStream(stub, args, kinds.server_stream, i));
      if (want.includes('client')) calls.push(clientStream(stub, args, kinds.client_stream));
      if (want.includes('bidi')) calls.push(bidi(stub, args, kinds.bidi));
    }
    let next = 0;
    const end = args.duration ? start + args.duration * 1000 : null;
    const worker = async () => {
      for (;;) {
        const seq = next++;
        if (end !== null ? Date.now() >= end : seq >= args.unary) return;
        await unaryCall(stub, args, kinds.unary, seq);
      }
    };
    if (args.unary > 0 || args.duration) {
      for (let w = 0; w < Math.max(1, args.concurrency); w++) calls.push(worker());
    }
  }
  await Promise.all(calls);
  const report = Object.fromEntries(Object.entries(kinds).map(([name, k]) => [name, k.r]));
  report.elapsed_s = (Date.now() - start) / 1000;
  report.connect_error = connectError;
  console.log(JSON.stringify(report));
  stub.close();
}

main().catch((e) => {
  console.error(`grpc_client.js: ${e.stack || e}`);
  process.exit(1);
});
