// Helpers for tests of cluso-client.js that run inside the page.

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve once (await predicate()) is truthy; reject after `timeout` ms naming `what`. */
export async function waitFor(predicate, what, timeout = 5000) {
  const deadline = performance.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** How a promise settled: {ok, value} or {ok: false, name, code, message, ms}. */
export async function settle(promise) {
  const started = performance.now();
  try {
    return { ok: true, value: await promise, ms: performance.now() - started };
  } catch (error) {
    return {
      ok: false,
      name: error?.name,
      code: error?.code,
      message: error?.message,
      isError: error instanceof Error,
      ms: performance.now() - started,
    };
  }
}

/**
 * A real WebSocket that records every socket made and every frame the
 * client sends; frames for which `drop(frame)` is true are not sent, as if
 * the server never answered them.
 */
export function recordingWebSocket() {
  const record = { sockets: [], sent: [], drop: () => false };
  class RecordingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      record.sockets.push(this);
    }

    send(data) {
      const frame = JSON.parse(data);
      record.sent.push(frame);
      if (!record.drop(frame)) super.send(data);
    }
  }
  return { WebSocket: RecordingWebSocket, record };
}

/**
 * A scripted stand-in for the server, for protocol features the running
 * server does not offer: tests push frames into the client with deliver()
 * and read what it sent from `sent`.
 */
export function fakeServer() {
  const server = { sockets: [], sent: [] };
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      server.sockets.push(this);
      server.current = this;
      setTimeout(() => {
        this.readyState = 1;
        this.deliver({ type: "response", data: { status: "connected", connectionId: `fake-${server.sockets.length}`, cwd: "/fake" } });
      }, 0);
    }

    send(data) {
      server.sent.push(JSON.parse(data));
    }

    deliver(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }

    close(code = 1006, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason, wasClean: code !== 1006 }), 0);
    }
  }
  server.WebSocket = FakeWebSocket;
  return server;
}

export async function publish(channel, data) {
  const response = await fetch(`/api/events/${encodeURIComponent(channel)}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(data),
  });
  return (await response.json()).data;
}

export async function health() {
  return (await (await fetch("/api/health", { cache: "no-store" })).json()).data;
}

export async function subscribers(channel) {
  return (await health()).channels[channel] ?? 0;
}
