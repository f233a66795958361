/**
 * cluso-client: the browser (and Node >= 22) client for cluso-router's
 * WebSocket protocol. Dependency-free ES module; see docs/client.md.
 *
 *   import { ClusoClient } from "/client/cluso-client.js";
 *   const client = new ClusoClient();                 // this page's server
 *   const off = client.subscribe("files", (e) => console.log(e.file, e.event));
 *   const status = await client.invoke("git.getStatus");
 *
 * One server subscription per channel however many callbacks share it;
 * invoke() settles on the reply, a top-level error, a timeout or a lost
 * connection; after any close the client reconnects with exponential backoff
 * and jitter and subscribes every channel again, until close().
 *
 * The token goes with every connection as a WebSocket subprotocol (browsers
 * cannot set headers there) and with client.fetch() as a Bearer header: the
 * `token` option, or else the one this tab signed in with (signIn() takes it
 * from a `#token=…` link) when the server is the page's own.
 */

/** Connection states reported to status listeners. */
export const Status = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  RECONNECTING: "reconnecting",
  CLOSED: "closed",
});

export const DEFAULT_OPTIONS = Object.freeze({
  lazy: true,
  invokeTimeout: 30000,
  connectTimeout: 10000,
  initialDelay: 500,
  maxDelay: 30000,
  factor: 2,
  jitter: 0.5,
  maxQueuedSends: 256,
});

const WS_OPEN = 1;

/** The sessionStorage key under which a signed-in tab keeps the token. */
export const TOKEN_STORAGE_KEY = "cluso.token";
/** The subprotocol offered beside the token; the server answers with it. */
export const CLIENT_SUBPROTOCOL = "cluso.v1";
const TOKEN_SUBPROTOCOL_PREFIX = "cluso.token.";

function tabStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage disabled for this page
  }
}

/**
 * Sign this tab in from a `#token=…` link: keep the token in sessionStorage
 * (this tab only, gone when it closes) and take it out of the address bar and
 * the history. A fragment is never sent to the server, so the token is in no
 * log. Returns the token the tab now holds, or null.
 */
export function signIn() {
  const { location, history } = globalThis;
  if (location?.hash) {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token !== null) {
      params.delete("token");
      const rest = params.toString();
      history?.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
      if (token) tabStorage()?.setItem(TOKEN_STORAGE_KEY, token);
    }
  }
  return storedToken();
}

/** The token this tab signed in with, or null. */
export function storedToken() {
  return tabStorage()?.getItem(TOKEN_STORAGE_KEY) ?? null;
}

/** Forget the token this tab signed in with. */
export function forgetToken() {
  tabStorage()?.removeItem(TOKEN_STORAGE_KEY);
}

/** The WebSocket subprotocols that carry `token`: ["cluso.v1", "cluso.token.<token, percent-encoded>"]. */
export function websocketProtocols(token) {
  return [CLIENT_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + encodeURIComponent(token)];
}

/** A failed call or refused request; `code` is the server's snake_case code or one of the client's own. */
export class ClusoError extends Error {
  constructor(message, code, data) {
    super(message);
    this.name = "ClusoError";
    this.code = code;
    this.data = data;
  }
}

/**
 * The server's HTTP base URL when none is given: the window globals the
 * original web adapter read, else this page's origin, else localhost:3000.
 */
export function defaultServerUrl() {
  const g = globalThis;
  if (typeof g.VITE_API_URL === "string" && g.VITE_API_URL) return g.VITE_API_URL;
  if (typeof g.API_SERVER_URL === "string" && g.API_SERVER_URL) return g.API_SERVER_URL;
  if (g.location && /^https?:$/.test(g.location.protocol)) return g.location.origin;
  return "http://localhost:3000";
}

/**
 * The WebSocket URL for a server URL: ws(s):// URLs are kept as they are;
 * for http(s) the scheme becomes ws(s), the path keeps its prefix and gains
 * `/ws`, and query and fragment are dropped (as the original adapter did).
 * Relative URLs resolve against the page.
 */
export function websocketUrl(serverUrl = defaultServerUrl()) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const url = new URL(serverUrl, base);
  if (url.protocol === "ws:" || url.protocol === "wss:") return url.href;
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`cluso-client: cannot reach a server at ${serverUrl}`);
  }
  const scheme = url.protocol === "https:" ? "wss:" : "ws:";
  const path = url.pathname.replace(/\/+$/, "");
  return `${scheme}//${url.host}${path}/ws`;
}

function callSafely(fn, args, onError) {
  try {
    fn(...args);
  } catch (error) {
    onError(error);
  }
}

/** The http(s) base URL (ending in "/") of the server whose WebSocket is at `wsUrl`. */
function httpBase(wsUrl) {
  const url = new URL(wsUrl);
  const scheme = url.protocol === "wss:" ? "https:" : "http:";
  return `${scheme}//${url.host}${url.pathname.replace(/\/ws$/, "")}/`.replace(/\/+$/, "/");
}

export class ClusoClient {
  #url;
  #httpBase;
  #sameOrigin;
  #options;
  #WebSocket;
  #ws = null;
  #status = Status.IDLE;
  #server = null;
  #nextId = 0;
  #attempt = 0;
  #retryTimer = null;
  #connectTimer = null;
  /** channel -> {entries: Set<{callback, options}>, position: {seq, epoch}|null, acked, everAcked} */
  #channels = new Map();
  /** id -> the subscribe request it acknowledges: {channel, resubscribed} */
  #acks = new Map();
  /** id -> {procedure, frame, resolve, reject, timer, sent, cleanup} */
  #calls = new Map();
  #outbox = [];
  #statusListeners = new Set();
  #errorListeners = new Set();
  #openWaiters = [];

  /**
   * @param {string} [serverUrl] http(s):// base of the server or its ws(s):// endpoint.
   * @param {object} [options] see DEFAULT_OPTIONS; also `WebSocket` (a constructor),
   *   `random` (a function like Math.random, for the backoff jitter) and `token`
   *   (a string, a function returning one, or null for none; by default the
   *   token this tab signed in with, when the server is the page's own origin).
   */
  constructor(serverUrl, options = {}) {
    this.#url = websocketUrl(serverUrl ?? defaultServerUrl());
    this.#httpBase = httpBase(this.#url);
    this.#sameOrigin = globalThis.location?.origin === new URL(this.#httpBase).origin;
    this.#options = { ...DEFAULT_OPTIONS, random: Math.random, ...options };
    this.#WebSocket = this.#options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("cluso-client: no WebSocket implementation; pass options.WebSocket");
    }
    if (!this.#options.lazy) this.#open();
  }

  /** The WebSocket URL this client connects to. */
  get url() {
    return this.#url;
  }

  /**
   * fetch() `path` (relative to the server's base URL) with the client's
   * token as `Authorization: Bearer`, unless `init.headers` has one.
   */
  fetch(path, init = {}) {
    const headers = new Headers(init.headers);
    const token = this.#token();
    if (token && !headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
    return globalThis.fetch(new URL(path, this.#httpBase), { ...init, headers });
  }

  /** One of Status. */
  get status() {
    return this.#status;
  }

  get isConnected() {
    return this.#status === Status.OPEN;
  }

  /** The server's greeting on the current connection ({connectionId, cwd}), or null. */
  get server() {
    return this.#server;
  }

  /**
   * Connect now: a lazy client otherwise connects on its first subscribe,
   * invoke or send, and a reconnecting one skips the rest of its backoff
   * wait. Resolves once the connection is open; rejects if the client is
   * closed first.
   */
  connect() {
    if (this.#status === Status.CLOSED) return Promise.reject(this.#closedError());
    if (this.#status === Status.OPEN) return Promise.resolve();
    const opened = new Promise((resolve, reject) => this.#openWaiters.push({ resolve, reject }));
    if (this.#retryTimer !== null) {
      clearTimeout(this.#retryTimer);
      this.#open();
    }
    this.#ensureConnecting();
    return opened;
  }

  /**
   * Call `callback(data, meta)` for every event on `channel`, where meta is
   * {channel, timestamp, seq}. Callbacks on one channel share one server
   * subscription. Returns the function that removes this callback.
   *
   * options.onSubscribed(info) is called after each (re)subscription the
   * server acknowledges, with {channel, resubscribed, recovered, replayed,
   * seq, epoch}; recovered === false means events may have been missed:
   * refetch state.
   */
  subscribe(channel, callback, options = {}) {
    if (this.#status === Status.CLOSED) throw this.#closedError();
    if (typeof channel !== "string" || !channel) {
      throw new TypeError("cluso-client: channel must be a non-empty string");
    }
    if (typeof callback !== "function") throw new TypeError("cluso-client: callback must be a function");
    const entry = { callback, options };
    let subscription = this.#channels.get(channel);
    if (!subscription) {
      subscription = { entries: new Set(), position: null, acked: false, everAcked: false };
      this.#channels.set(channel, subscription);
      if (this.#status === Status.OPEN) this.#sendSubscribe(channel, subscription);
      else this.#ensureConnecting();
    }
    subscription.entries.add(entry);
    let active = true;
    return () => {
      if (!active) return;
      active = false;
      this.#unsubscribe(channel, entry);
    };
  }

  /**
   * Call `procedure` with `data`. Resolves with the reply's data; rejects
   * with a ClusoError whose code is the server's (e.g. no_such_procedure),
   * or `timeout`, `disconnected` (the connection closed before the reply),
   * `aborted` (options.signal) or `closed`.
   * Calls made while not connected wait for the connection, within their timeout.
   */
  invoke(procedure, data, { timeout = this.#options.invokeTimeout, signal } = {}) {
    if (this.#status === Status.CLOSED) return Promise.reject(this.#closedError());
    if (typeof procedure !== "string" || !procedure) {
      return Promise.reject(new TypeError("cluso-client: procedure must be a non-empty string"));
    }
    if (signal?.aborted) return Promise.reject(new ClusoError(`Request aborted: ${procedure}`, "aborted"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const call = { procedure, frame: { type: "invoke", id, channel: procedure, data }, resolve, reject };
      call.sent = false;
      call.timer = timeout > 0 && Number.isFinite(timeout)
        ? setTimeout(() => this.#settle(id, new ClusoError(`Request timeout for channel ${procedure}`, "timeout")), timeout)
        : null;
      if (signal) {
        const onAbort = () => this.#settle(id, new ClusoError(`Request aborted: ${procedure}`, "aborted"));
        signal.addEventListener("abort", onAbort, { once: true });
        call.cleanup = () => signal.removeEventListener("abort", onAbort);
      }
      this.#calls.set(id, call);
      if (this.#status === Status.OPEN) this.#sendCall(call);
      else this.#ensureConnecting();
    });
  }

  /**
   * Publish `data` on `channel` (fire and forget). While not connected the
   * message waits, in order, for the next connection (at most
   * options.maxQueuedSends of them). Returns false when it was dropped: the
   * client is closed or the queue is full.
   */
  send(channel, data) {
    if (this.#status === Status.CLOSED) return false;
    const frame = { type: "send", channel, data };
    if (this.#status === Status.OPEN) {
      this.#write(frame);
      return true;
    }
    if (this.#outbox.length >= this.#options.maxQueuedSends) return false;
    this.#outbox.push(frame);
    this.#ensureConnecting();
    return true;
  }

  /** Call `listener(status, detail)` on every status change; returns its remover. */
  onStatus(listener) {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  /**
   * Call `listener(error)` for problems not tied to an invoke: a refused
   * subscribe or send, an unreadable frame, a callback that threw.
   */
  onError(listener) {
    this.#errorListeners.add(listener);
    return () => this.#errorListeners.delete(listener);
  }

  /** The last event position seen on `channel` ({seq, epoch}), for recovery after reconnecting. */
  position(channel) {
    const position = this.#channels.get(channel)?.position;
    return position ? { ...position } : undefined;
  }

  /**
   * Close for good: no reconnect; pending calls reject with code `closed`.
   * `code` is 1000 or an application code (3000-4999), as browsers require.
   */
  close(code = 1000, reason = "client closed") {
    if (this.#status === Status.CLOSED) return;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#connectTimer);
    const ws = this.#ws;
    this.#detach();
    const sendable = code === 1000 || (code >= 3000 && code <= 4999);
    if (ws && ws.readyState <= WS_OPEN) ws.close(sendable ? code : 1000, reason);
    this.#server = null;
    this.#outbox = [];
    this.#channels.clear();
    this.#acks.clear();
    for (const id of [...this.#calls.keys()]) this.#settle(id, this.#closedError());
    for (const waiter of this.#openWaiters.splice(0)) waiter.reject(this.#closedError());
    this.#setStatus(Status.CLOSED, { code, reason });
  }

  #closedError() {
    return new ClusoError("client is closed", "closed");
  }

  #token() {
    const { token } = this.#options;
    if (typeof token === "function") return token() || null;
    if (token !== undefined) return token || null;
    return this.#sameOrigin ? storedToken() : null;
  }

  #ensureConnecting() {
    if (this.#status === Status.IDLE) this.#open();
  }

  #open() {
    this.#retryTimer = null;
    if (this.#status === Status.CLOSED || this.#ws) return;
    if (this.#status === Status.IDLE) this.#setStatus(Status.CONNECTING, {});
    let ws;
    try {
      const token = this.#token();
      ws = token ? new this.#WebSocket(this.#url, websocketProtocols(token)) : new this.#WebSocket(this.#url);
    } catch (error) {
      this.#reportError(error);
      this.#scheduleReconnect({ code: 1006, reason: String(error) });
      return;
    }
    this.#ws = ws;
    ws.onmessage = (event) => this.#onMessage(event);
    ws.onclose = (event) => this.#onClose(event);
    ws.onerror = () => {};
    this.#connectTimer = setTimeout(() => {
      if (ws === this.#ws && this.#status !== Status.OPEN) ws.close();
    }, this.#options.connectTimeout);
  }

  #detach() {
    const ws = this.#ws;
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    this.#ws = null;
  }

  #onClose(event) {
    clearTimeout(this.#connectTimer);
    this.#detach();
    this.#server = null;
    for (const subscription of this.#channels.values()) subscription.acked = false;
    this.#acks.clear();
    for (const [id, call] of [...this.#calls]) {
      if (call.sent) {
        this.#settle(id, new ClusoError(`Connection closed before the reply to ${call.procedure}`, "disconnected"));
      }
    }
    this.#scheduleReconnect({ code: event.code, reason: event.reason });
  }

  #scheduleReconnect({ code, reason }) {
    const { initialDelay, maxDelay, factor, jitter, random } = this.#options;
    const ceiling = Math.min(maxDelay, initialDelay * factor ** this.#attempt);
    const delay = Math.round(ceiling * (1 - jitter * random()));
    this.#attempt += 1;
    this.#setStatus(Status.RECONNECTING, { attempt: this.#attempt, delay, code, reason });
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }

  #onOpen(greeting) {
    clearTimeout(this.#connectTimer);
    this.#attempt = 0;
    this.#server = greeting ? { connectionId: greeting.connectionId, cwd: greeting.cwd } : null;
    this.#status = Status.OPEN;
    for (const [channel, subscription] of this.#channels) this.#sendSubscribe(channel, subscription);
    for (const frame of this.#outbox.splice(0)) this.#write(frame);
    for (const call of this.#calls.values()) if (!call.sent) this.#sendCall(call);
    this.#setStatus(Status.OPEN, { ...this.#server });
    for (const waiter of this.#openWaiters.splice(0)) waiter.resolve();
  }

  #onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (error) {
      this.#reportError(new ClusoError(`unreadable frame from the server: ${error.message}`, "invalid_frame"));
      return;
    }
    if (!message || typeof message !== "object") return;
    if (this.#status !== Status.OPEN) {
      const greeting = message.type === "response" && message.data?.status === "connected" && !("id" in message);
      this.#onOpen(greeting ? message.data : null);
      if (greeting) return;
    }
    if (message.type === "event") this.#deliver(message);
    else if (message.type === "response") this.#onResponse(message);
  }

  #onResponse(message) {
    const hasId = "id" in message;
    if (hasId && this.#calls.has(message.id)) {
      const error = message.error
        ? new ClusoError(String(message.error), message.code ?? "error", message.data)
        : null;
      this.#settle(message.id, error, message.data);
    } else if (hasId && this.#acks.has(message.id)) {
      const request = this.#acks.get(message.id);
      this.#acks.delete(message.id);
      this.#onAck(request, message);
    } else if (message.error) {
      this.#reportError(new ClusoError(String(message.error), message.code ?? "error", message.data));
    }
  }

  #onAck({ channel, resubscribed }, message) {
    const subscription = this.#channels.get(channel);
    if (!subscription) return;
    if (message.error) {
      this.#reportError(new ClusoError(`subscribe to ${channel} refused: ${message.error}`, message.code ?? "error", { channel }));
      return;
    }
    const data = message.data ?? {};
    subscription.acked = subscription.everAcked = true;
    const { seq, epoch, recovered, replayed } = data;
    // The ack gives the channel's head; the `replayed` events before it follow the ack.
    if (typeof seq === "number") {
      subscription.position = { seq: seq - (Number.isInteger(replayed) ? replayed : 0), epoch };
    }
    const info = { channel, resubscribed, recovered, replayed, seq, epoch };
    for (const { options } of [...subscription.entries]) {
      if (options.onSubscribed) callSafely(options.onSubscribed, [info], (e) => this.#reportError(e));
    }
  }

  #deliver(message) {
    const subscription = this.#channels.get(message.channel);
    if (!subscription) return;
    const { seq } = message;
    if (typeof seq === "number") {
      const last = subscription.position;
      if (subscription.acked && last && seq <= last.seq) return;
      subscription.position = { seq, epoch: last?.epoch };
    }
    const meta = { channel: message.channel, timestamp: message.timestamp, seq };
    for (const { callback } of [...subscription.entries]) {
      callSafely(callback, [message.data, meta], (e) => this.#reportError(e));
    }
  }

  #sendSubscribe(channel, subscription) {
    const id = this.#nextId++;
    this.#acks.set(id, { channel, resubscribed: subscription.everAcked });
    const frame = { type: "subscribe", channel, id };
    if (subscription.position) frame.since = { ...subscription.position };
    this.#write(frame);
  }

  #unsubscribe(channel, entry) {
    const subscription = this.#channels.get(channel);
    if (!subscription || !subscription.entries.delete(entry) || subscription.entries.size) return;
    this.#channels.delete(channel);
    if (this.#status === Status.OPEN) this.#write({ type: "unsubscribe", channel });
  }

  #sendCall(call) {
    call.sent = true;
    this.#write(call.frame);
  }

  #write(frame) {
    this.#ws.send(JSON.stringify(frame));
  }

  #settle(id, error, data) {
    const call = this.#calls.get(id);
    if (!call) return;
    this.#calls.delete(id);
    clearTimeout(call.timer);
    call.cleanup?.();
    if (error) call.reject(error);
    else call.resolve(data);
  }

  #setStatus(status, detail) {
    this.#status = status;
    for (const listener of [...this.#statusListeners]) {
      callSafely(listener, [status, detail], (e) => this.#reportError(e));
    }
  }

  #reportError(error) {
    if (!this.#errorListeners.size) {
      console.error("cluso-client:", error);
      return;
    }
    for (const listener of [...this.#errorListeners]) {
      try {
        listener(error);
      } catch (e) {
        console.error("cluso-client: error listener threw", e);
      }
    }
  }
}

/** Shorthand for `new ClusoClient(serverUrl, options)`. */
export function createClient(serverUrl, options) {
  return new ClusoClient(serverUrl, options);
}
