#!/usr/bin/env node
// Load client of the fan-out benchmark: N subscriber connections and one
// publisher connection to a server speaking the JSON dialect, in one process.
//
//   node loadclient.js ws://127.0.0.1:PORT/ws [channel]
//
// It speaks WebSocket on raw `net` sockets with a minimal frame parser and
// reads each event's sequence number and send time (microseconds on this
// process's clock) by scanning bytes, not JSON.parse: per delivery it does far less
// work than any server under test, so it is not what limits a run.
//
// Driven by JSON lines on stdin, answered by JSON lines on stdout:
//   {"cmd":"connect","n":N}          grow or shrink the subscribers to N
//   {"cmd":"run","events":K,"window":W}
//                                    publish K events, at most W incomplete at
//                                    once (an event is complete when every
//                                    subscriber has it); as fast as delivered
//   {"cmd":"rate","events":K,"rate":R}
//                                    publish K events at R per second
//   {"cmd":"burst","bursts":K,"size":B,"inFlight":F}
//                                    publish K bursts of B events, each burst's
//                                    frames in one socket write, at most F
//                                    bursts incomplete at once; also reports
//                                    each burst's time from its write to the
//                                    last subscriber's receipt of all of it
//   {"cmd":"quit"}
// Every subscriber checks that it gets each event once and in order.
'use strict';

const net = require('net');
const crypto = require('crypto');
const readline = require('readline');
const { performance } = require('perf_hooks');

const target = new URL(process.argv[2]);
const channel = process.argv[3] || 'bench';
const host = target.hostname;
const port = Number(target.port);
const path = (target.pathname || '/') + target.search;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
// Each event's data starts with "bench":[seq,t]; nothing else has that key.
const MARK = Buffer.from('"bench":[');
const CONNECT_CONCURRENCY = 64;
const STALL_MS = 10000;
const HANDSHAKE_MS = 15000;

let nextSeq = 0;
let run = null;
const subscribers = [];
let publisher = null;
let protocolErrors = 0;

function reply(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

function fail(message) {
  reply({ error: message });
  process.exit(1);
}

const maskKey = Buffer.alloc(4);
function sendFrame(conn, opcode, payload) {
  conn.socket.write(encodeFrame(opcode, payload));
}

function encodeFrame(opcode, payload) {
  const length = payload.length;
  let header;
  if (length < 126) {
    header = Buffer.alloc(6);
    header[1] = 0x80 | length;
  } else if (length < 65536) {
    header = Buffer.alloc(8);
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(14);
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  header[0] = 0x80 | opcode;
  crypto.randomFillSync(maskKey);
  maskKey.copy(header, header.length - 4);
  const masked = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) masked[i] = payload[i] ^ maskKey[i & 3];
  return Buffer.concat([header, masked]);
}

function sendJson(conn, value) {
  sendFrame(conn, 1, Buffer.from(JSON.stringify(value)));
}

class Connection {
  constructor(subscriber, onReady, onFail) {
    this.subscriber = subscriber;
    this.onReady = onReady;
    this.onFail = onFail;
    this.key = crypto.randomBytes(16).toString('base64');
    this.upgraded = false;
    this.ready = false;
    this.pending = null;
    this.next = 0;
    this.closing = false;
    const socket = net.connect({ host, port });
    this.socket = socket;
    this.timer = setTimeout(() => {
      this.onFail('no handshake within ' + HANDSHAKE_MS + ' ms');
      this.close();
    }, HANDSHAKE_MS);
    socket.setNoDelay(true);
    socket.on('connect', () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', (chunk) => this.data(chunk));
    socket.on('error', (e) => this.lost(e.code || String(e)));
    socket.on('close', () => this.lost('closed'));
  }

  lost(reason) {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.timer);
    if (!this.ready) this.onFail(reason);
    else {
      protocolErrors += 1;
      if (run) run.lost += 1;
    }
  }

  close() {
    clearTimeout(this.timer);
    this.closing = true;
    this.socket.destroy();
  }

  data(chunk) {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = null;
    let offset = 0;
    if (!this.upgraded) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        this.pending = buf;
        return;
      }
      const head = buf.toString('latin1', 0, end);
      const accept = crypto.createHash('sha1').update(this.key + GUID).digest('base64');
      if (!/^HTTP\/1\.1 101 /.test(head) || !head.includes(accept)) {
        this.onFail('handshake refused: ' + head.split('\r\n')[0]);
        this.close();
        return;
      }
      this.upgraded = true;
      offset = end + 4;
      if (this.subscriber) sendJson(this, { type: 'subscribe', channel, id: 1 });
      else this.becomeReady();
    }
    const now = performance.now() * 1000;
    const length = buf.length;
    while (length - offset >= 2) {
      const b0 = buf[offset];
      const b1 = buf[offset + 1];
      let size = b1 & 0x7f;
      let header = 2;
      if (size === 126) {
        if (length - offset < 4) break;
        size = buf.readUInt16BE(offset + 2);
        header = 4;
      } else if (size === 127) {
        if (length - offset < 10) break;
        size = Number(buf.readBigUInt64BE(offset + 2));
        header = 10;
      }
      if (length - offset < header + size) break;
      const start = offset + header;
      const end = start + size;
      const opcode = b0 & 0x0f;
      if ((b1 & 0x80) !== 0 || (b0 & 0x80) === 0) protocolErrors += 1;
      if (opcode === 1) this.text(buf, start, end, now);
      else if (opcode === 9) sendFrame(this, 0x0a, buf.subarray(start, end));
      else if (opcode === 8) this.close();
      offset = end;
    }
    if (offset < length) this.pending = buf.subarray(offset);
  }

  becomeReady() {
    clearTimeout(this.timer);
    this.ready = true;
    this.onReady(this);
  }

  text(buf, start, end, now) {
    const at = buf.indexOf(MARK, start);
    if (at < 0 || at >= end) {
      const ack = this.ready ? -1 : buf.indexOf('"subscribed"', start);
      if (this.subscriber && ack >= 0 && ack < end) {
        this.next = nextSeq;
        this.becomeReady();
      }
      return;
    }
    let i = at + MARK.length;
    let seq = 0;
    for (let c = buf[i]; c >= 0x30 && c <= 0x39; c = buf[++i]) seq = seq * 10 + (c - 0x30);
    i += 1; // the ',' before the send time
    let sent = 0;
    for (let c = buf[i]; c >= 0x30 && c <= 0x39; c = buf[++i]) sent = sent * 10 + (c - 0x30);
    if (!this.subscriber) return;
    if (seq !== this.next) {
      if (run) {
        if (seq < this.next) run.duplicates += 1;
        else run.gaps += seq - this.next;
      }
    }
    this.next = seq + 1;
    const r = run;
    if (r === null) return;
    const index = seq - r.base;
    if (index < 0 || index >= r.events) {
      r.strays += 1;
      return;
    }
    r.lastReceipt = now;
    if (r.latencyCount < r.latencies.length) r.latencies[r.latencyCount++] = now - sent;
    r.deliveries += 1;
    if (++r.counts[index] === r.n) {
      r.completed += 1;
      r.progress(r, index);
    }
  }
}

function open(subscriber) {
  return new Promise((resolve, reject) => {
    new Connection(subscriber, resolve, (reason) => reject(new Error(reason)));
  });
}

async function connect(n) {
  const started = performance.now();
  while (subscribers.length > n) subscribers.pop().close();
  let failures = 0;
  while (subscribers.length < n) {
    const batch = Math.min(CONNECT_CONCURRENCY, n - subscribers.length);
    const results = await Promise.allSettled(Array.from({ length: batch }, () => open(true)));
    for (const result of results) {
      if (result.status === 'fulfilled') subscribers.push(result.value);
      else if (++failures > 20) throw result.reason;
    }
  }
  return { n: subscribers.length, seconds: (performance.now() - started) / 1000, failures };
}

function eventFrame(seq, t) {
  return encodeFrame(
    1,
    Buffer.from(
      `{"type":"send","channel":${JSON.stringify(channel)},"data":{"bench":[${seq},${t}],` +
        `"file":"src/components/Editor.tsx","event":"change"}}`,
    ),
  );
}

function publish(seq) {
  publisher.socket.write(eventFrame(seq, Math.round(performance.now() * 1000)));
}

// B events back to back: one write holding all their frames.
function publishBurst(first, size) {
  const t = Math.round(performance.now() * 1000);
  const frames = [];
  for (let i = 0; i < size; i++) frames.push(eventFrame(first + i, t));
  publisher.socket.write(Buffer.concat(frames));
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// Publish `events` events, sending each one when `schedule` says; resolve with
// the run's statistics once every subscriber has every event or nothing has
// arrived for STALL_MS.
function measure(events, start) {
  const n = subscribers.length;
  return new Promise((resolve) => {
    const r = {
      n,
      events,
      base: nextSeq,
      published: 0,
      completed: 0,
      deliveries: 0,
      duplicates: 0,
      gaps: 0,
      strays: 0,
      lost: 0,
      counts: new Int32Array(events),
      latencies: new Float64Array(n * events),
      latencyCount: 0,
      firstSend: 0,
      lastReceipt: 0,
      progress: () => {},
    };
    nextSeq += events;
    run = r;
    const send = () => {
      if (r.published === 0) r.firstSend = performance.now() * 1000;
      publish(r.base + r.published);
      r.published += 1;
    };
    let lastDeliveries = -1;
    let lastChange = performance.now();
    const finish = () => {
      clearInterval(watchdog);
      run = null;
      let missing = 0;
      for (const conn of subscribers) missing += Math.max(0, r.base + events - conn.next);
      const latencies = r.latencies.subarray(0, r.latencyCount).sort();
      const seconds = (r.lastReceipt - r.firstSend) / 1e6;
      resolve({
        n,
        events,
        published: r.published,
        deliveries: r.deliveries,
        expected: n * events,
        complete: r.deliveries === n * events && r.duplicates === 0 && r.gaps === 0 && missing === 0 && r.lost === 0,
        duplicates: r.duplicates,
        gaps: r.gaps,
        missing,
        strays: r.strays,
        lost: r.lost,
        seconds,
        deliveriesPerSecond: seconds > 0 ? r.deliveries / seconds : null,
        latencyMs: {
          p50: percentile(latencies, 0.5) / 1000,
          p99: percentile(latencies, 0.99) / 1000,
          max: latencies.length ? latencies[latencies.length - 1] / 1000 : null,
        },
        burstMs: r.burstLatencies ? burstStats(r.burstLatencies) : undefined,
      });
    };
    const watchdog = setInterval(() => {
      if (r.deliveries !== lastDeliveries) {
        lastDeliveries = r.deliveries;
        lastChange = performance.now();
      } else if (performance.now() - lastChange > STALL_MS) finish();
    }, 200);
    start(r, send, finish);
  });
}

function throughput(events, window) {
  return measure(events, (r, send, finish) => {
    r.progress = () => {
      if (r.completed === r.events) finish();
      else if (r.published < r.events) send();
    };
    while (r.published < Math.min(window, events)) send();
  });
}

function fixedRate(events, rate) {
  return measure(events, (r, send, finish) => {
    const interval = 1000 / rate;
    const begin = performance.now();
    r.progress = () => {
      if (r.completed === r.events) finish();
    };
    const tick = () => {
      while (r.published < r.events && performance.now() >= begin + r.published * interval) send();
      if (r.published < r.events) {
        setTimeout(tick, Math.max(0, begin + r.published * interval - performance.now()));
      }
    };
    tick();
  });
}

function burstStats(microseconds) {
  const sorted = Float64Array.from(microseconds).sort();
  return {
    bursts: sorted.length,
    p50: percentile(sorted, 0.5) / 1000,
    p99: percentile(sorted, 0.99) / 1000,
    max: sorted.length ? sorted[sorted.length - 1] / 1000 : null,
  };
}

function bursts(count, size, inFlight) {
  return measure(count * size, (r, _send, finish) => {
    const remaining = new Int32Array(count).fill(size);
    const sentAt = new Float64Array(count);
    r.burstLatencies = [];
    let sent = 0;
    const sendBurst = () => {
      const now = performance.now() * 1000;
      if (sent === 0) r.firstSend = now;
      sentAt[sent] = now;
      publishBurst(r.base + sent * size, size);
      r.published += size;
      sent += 1;
    };
    r.progress = (_, index) => {
      const k = Math.floor(index / size);
      if (--remaining[k] === 0) {
        r.burstLatencies.push(performance.now() * 1000 - sentAt[k]);
        if (sent < count) sendBurst();
      }
      if (r.completed === r.events) finish();
    };
    while (sent < Math.min(inFlight, count)) sendBurst();
  });
}

async function handle(command) {
  switch (command.cmd) {
    case 'connect':
      return connect(command.n);
    case 'run':
      return throughput(command.events, command.window);
    case 'rate':
      return fixedRate(command.events, command.rate);
    case 'burst':
      return bursts(command.bursts, command.size, command.inFlight || 1);
    case 'quit':
      for (const conn of subscribers) conn.close();
      if (publisher) publisher.close();
      setImmediate(() => process.exit(0));
      return { bye: true };
    default:
      throw new Error('unknown command ' + JSON.stringify(command));
  }
}

async function main() {
  try {
    publisher = await open(false);
  } catch (e) {
    fail('cannot connect publisher: ' + e.message);
  }
  reply({ ready: true, pid: process.pid });
  const lines = readline.createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    queue = queue.then(async () => {
      try {
        const result = await handle(JSON.parse(line));
        reply({ ...result, protocolErrors });
      } catch (e) {
        reply({ error: e.message });
      }
    });
  });
  lines.on('close', () => queue.then(() => process.exit(0)));
}

main();
