#!/usr/bin/env node
// Load client of the scale benchmark: many idle subscriber connections in one
// process (cheap per connection: a socket, a small object, no per-frame
// allocation beyond the read), answering pings, and recording when each
// broadcast reaches each of them. Several of these processes together hold
// more connections than one process may (file descriptors are capped).
//
//   node scaleclient.js ws://127.0.0.1:PORT/ws?token=T [channel]
//
// Driven by JSON lines on stdin, answered by JSON lines on stdout:
//   {"cmd":"connect","n":N,"local":"127.0.0.2"}
//                              open N subscribers from that source address
//   {"cmd":"publisher"}        open the publishing connection; it also
//                              subscribes to router.stats when the server has it
//   {"cmd":"publish","id":I}   publish event I with its send time; answers
//                              {"sentUs": epoch microseconds}
//   {"cmd":"report","id":I}    {"count": subscribers that got I, "lastUs": the
//                              last receipt, "duplicates": ...}
//   {"cmd":"lag"}              the worst reactor lag (ms) router.stats reported
//                              since the previous "lag"; null without samples
//   {"cmd":"quit"}
'use strict';

const net = require('net');
const crypto = require('crypto');
const readline = require('readline');
const { performance } = require('perf_hooks');

const target = new URL(process.argv[2]);
const channel = process.argv[3] || 'scale';
const path = (target.pathname || '/') + target.search;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MARK = Buffer.from('"scale":[');
const LAG = Buffer.from('"reactorLagMs":{"last":');
const CONCURRENCY = 256;
const HANDSHAKE_MS = 30000;

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const receipts = new Map(); // id -> {count, lastUs, duplicates}
let subscribers = 0;
let publisher = null;
let worstLag = null;

function reply(value) {
  process.stdout.write(JSON.stringify(value) + '\n');
}

function frame(opcode, payload) {
  const length = payload.length;
  const header = Buffer.alloc(length < 126 ? 6 : 8);
  header[0] = 0x80 | opcode;
  if (length < 126) header[1] = 0x80 | length;
  else {
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  }
  const mask = crypto.randomBytes(4);
  mask.copy(header, header.length - 4);
  const masked = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) masked[i] = payload[i] ^ mask[i & 3];
  return Buffer.concat([header, masked]);
}

// One connection: the handshake, then frames; `last` is the id it last got,
// so a repeat is counted as a duplicate.
class Subscriber {
  constructor(local, subscribe, onReady, onFail) {
    this.pending = null;
    this.upgraded = false;
    this.last = -1;
    this.ready = onReady;
    this.key = crypto.randomBytes(16).toString('base64');
    this.socket = net.connect({ host: target.hostname, port: Number(target.port), localAddress: local });
    this.timer = setTimeout(() => onFail(new Error('no handshake in time')), HANDSHAKE_MS);
    this.socket.on('connect', () =>
      this.socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ),
    );
    this.socket.on('data', (chunk) => this.data(chunk));
    this.socket.on('error', (e) => onFail(e));
    this.subscribe = subscribe;
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
      if (buf.toString('latin1', 0, 12) !== 'HTTP/1.1 101') {
        this.socket.destroy();
        return;
      }
      this.upgraded = true;
      offset = end + 4;
      for (const name of this.subscribe) {
        this.socket.write(frame(1, Buffer.from(JSON.stringify({ type: 'subscribe', channel: name, id: 1 }))));
      }
    }
    while (buf.length - offset >= 2) {
      let size = buf[offset + 1] & 0x7f;
      let header = 2;
      if (size === 126) {
        if (buf.length - offset < 4) break;
        size = buf.readUInt16BE(offset + 2);
        header = 4;
      } else if (size === 127) {
        if (buf.length - offset < 10) break;
        size = Number(buf.readBigUInt64BE(offset + 2));
        header = 10;
      }
      if (buf.length - offset < header + size) break;
      const opcode = buf[offset] & 0x0f;
      const start = offset + header;
      const end = start + size;
      if (opcode === 1) this.text(buf, start, end);
      else if (opcode === 9) this.socket.write(frame(0x0a, buf.subarray(start, end)));
      offset = end;
    }
    if (offset < buf.length) this.pending = buf.subarray(offset);
  }

  text(buf, start, end) {
    const at = buf.indexOf(MARK, start);
    if (at >= 0 && at < end) {
      let i = at + MARK.length;
      let id = 0;
      for (let c = buf[i]; c >= 0x30 && c <= 0x39; c = buf[++i]) id = id * 10 + (c - 0x30);
      let entry = receipts.get(id);
      if (!entry) receipts.set(id, (entry = { count: 0, lastUs: 0, duplicates: 0 }));
      if (id === this.last) entry.duplicates += 1;
      else entry.count += 1;
      this.last = id;
      entry.lastUs = nowUs();
      return;
    }
    const lag = buf.indexOf(LAG, start);
    if (lag >= 0 && lag < end) {
      const text = buf.toString('latin1', lag + LAG.length, end);
      const max = /"max":([0-9.]+)/.exec(text);
      if (max) worstLag = Math.max(worstLag ?? 0, Number(max[1]));
      return;
    }
    if (this.ready && buf.indexOf('"subscribed"', start) >= 0) {
      clearTimeout(this.timer);
      const ready = this.ready;
      this.ready = null;
      ready(this);
    }
  }
}

function open(local, names) {
  return new Promise((resolve, reject) => {
    const s = new Subscriber(local, names, resolve, reject);
    return s;
  });
}

async function connect(n, local) {
  const started = performance.now();
  let opened = 0;
  while (opened < n) {
    const batch = Math.min(CONCURRENCY, n - opened);
    await Promise.all(Array.from({ length: batch }, () => open(local, [channel])));
    opened += batch;
  }
  subscribers += opened;
  return { opened, subscribers, seconds: (performance.now() - started) / 1000 };
}

async function handle(command) {
  switch (command.cmd) {
    case 'connect':
      return connect(command.n, command.local);
    case 'publisher':
      publisher = await open(command.local, ['router.stats']);
      return { publisher: true };
    case 'publish': {
      const sentUs = nowUs();
      const data = { scale: [command.id, sentUs] };
      publisher.socket.write(frame(1, Buffer.from(JSON.stringify({ type: 'send', channel, data }))));
      return { sentUs };
    }
    case 'report':
      return { id: command.id, ...(receipts.get(command.id) || { count: 0, lastUs: null, duplicates: 0 }) };
    case 'lag': {
      const value = worstLag;
      worstLag = null;
      return { lagMs: value };
    }
    case 'quit':
      setImmediate(() => process.exit(0));
      return { bye: true };
    default:
      throw new Error('unknown command ' + JSON.stringify(command));
  }
}

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue.then(async () => {
    try {
      reply(await handle(JSON.parse(line)));
    } catch (e) {
      reply({ error: e.message });
    }
  });
});
lines.on('close', () => process.exit(0));
reply({ ready: true, pid: process.pid });
