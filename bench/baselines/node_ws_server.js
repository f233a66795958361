#!/usr/bin/env node
// The original system's stack as a fan-out baseline: an HTTP server with a
// `ws` WebSocketServer speaking the JSON dialect's subset the benchmark uses
// (greeting, subscribe/unsubscribe acks, `send`, the event envelope). A
// broadcast stringifies the envelope once and calls `send` per subscriber,
// as the original `broadcast` does.
//
//   node node_ws_server.js [--port 0] [--host 127.0.0.1]
//
// Prints "listening on http://HOST:PORT/" once ready.
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = option('--host', '127.0.0.1');
const port = Number(option('--port', '0'));
const channels = new Map(); // channel -> Set<WebSocket>
let counter = 0;

function reply(ws, request, data) {
  const message = { type: 'response' };
  if (request.id !== undefined) message.id = request.id;
  message.data = data;
  ws.send(JSON.stringify(message));
}

function broadcast(channel, data) {
  const subscribers = channels.get(channel);
  if (!subscribers) return 0;
  const frame = JSON.stringify({
    type: 'event',
    channel,
    data,
    timestamp: new Date().toISOString(),
  });
  let sent = 0;
  for (const ws of subscribers) {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(frame);
      sent += 1;
    }
  }
  return sent;
}

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"success":false,"data":null,"error":"not found"}');
});
const wss = new WebSocketServer({ server });

wss.on('connection', (ws) => {
  const own = new Set();
  counter += 1;
  ws.send(JSON.stringify({
    type: 'response',
    data: { status: 'connected', connectionId: `conn-${Date.now()}-${counter.toString(36)}`, cwd: process.cwd() },
  }));
  ws.on('message', (raw, isBinary) => {
    let message;
    try {
      message = JSON.parse(raw.toString());
    } catch (e) {
      ws.send(JSON.stringify({ type: 'response', data: { error: 'Failed to parse message' } }));
      return;
    }
    if (!message || typeof message.channel !== 'string' || !message.channel) return;
    const channel = message.channel;
    if (message.type === 'subscribe') {
      own.add(channel);
      if (!channels.has(channel)) channels.set(channel, new Set());
      channels.get(channel).add(ws);
      reply(ws, message, { status: 'subscribed', channel });
    } else if (message.type === 'unsubscribe') {
      own.delete(channel);
      const subscribers = channels.get(channel);
      if (subscribers) {
        subscribers.delete(ws);
        if (subscribers.size === 0) channels.delete(channel);
      }
      reply(ws, message, { status: 'unsubscribed', channel });
    } else if (message.type === 'send') {
      const delivered = broadcast(channel, message.data);
      if (message.id !== undefined) reply(ws, message, { status: 'sent', channel, delivered });
    }
  });
  ws.on('close', () => {
    for (const channel of own) {
      const subscribers = channels.get(channel);
      if (subscribers) {
        subscribers.delete(ws);
        if (subscribers.size === 0) channels.delete(channel);
      }
    }
  });
  ws.on('error', () => {});
});

server.listen(port, host, 1024, () => {
  const address = server.address();
  console.log(`node-ws baseline listening on http://${address.address}:${address.port}/`);
});

process.on('SIGTERM', () => process.exit(0));
