// Type declarations for cluso-client.js (served beside it at /client/cluso-client.d.ts).

export type ConnectionStatus = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export declare const Status: Readonly<{
  IDLE: "idle";
  CONNECTING: "connecting";
  OPEN: "open";
  RECONNECTING: "reconnecting";
  CLOSED: "closed";
}>;

export interface ClientOptions {
  /** Connect on the first subscribe/invoke/send (default) or at once. */
  lazy?: boolean;
  /** Default invoke timeout in ms (30000); 0 or Infinity for none. */
  invokeTimeout?: number;
  /** Give up on a connection attempt not open after this many ms (10000). */
  connectTimeout?: number;
  /** First reconnect delay in ms (500). */
  initialDelay?: number;
  /** Largest reconnect delay in ms (30000). */
  maxDelay?: number;
  /** Growth of the delay per failed attempt (2). */
  factor?: number;
  /** Fraction of each delay taken off at random, 0..1 (0.5). */
  jitter?: number;
  /** Sends kept while disconnected (256). */
  maxQueuedSends?: number;
  /** WebSocket constructor (default: globalThis.WebSocket); given the subprotocols when a token is sent. */
  WebSocket?: new (url: string, protocols?: string[]) => WebSocket;
  /** Random source for the jitter (default: Math.random). */
  random?: () => number;
  /**
   * The access token, sent as a WebSocket subprotocol and by fetch() as a Bearer header:
   * a string, a function read at each connection, or null for none (cookie only).
   * Default: the token this tab signed in with (signIn()), when the server is the page's own origin.
   */
  token?: string | (() => string | null) | null;
}

export declare const DEFAULT_OPTIONS: Readonly<Required<Omit<ClientOptions, "WebSocket" | "random" | "token">>>;

/** The sessionStorage key under which a signed-in tab keeps the token ("cluso.token"). */
export declare const TOKEN_STORAGE_KEY: string;
/** The subprotocol offered beside the token ("cluso.v1"); the server answers with it. */
export declare const CLIENT_SUBPROTOCOL: string;
/**
 * Take the token from a `#token=…` link into sessionStorage and out of the address bar;
 * returns the token this tab now holds, or null.
 */
export declare function signIn(): string | null;
/** The token this tab signed in with, or null. */
export declare function storedToken(): string | null;
/** Forget the token this tab signed in with. */
export declare function forgetToken(): void;
/** ["cluso.v1", "cluso.token.<token, percent-encoded>"]: the subprotocols that carry a token. */
export declare function websocketProtocols(token: string): string[];

export interface ServerGreeting {
  connectionId: string;
  cwd: string;
}

export interface StatusDetail {
  /** Reconnect attempt number, from 1 (reconnecting). */
  attempt?: number;
  /** Milliseconds until that attempt (reconnecting). */
  delay?: number;
  /** Close code and reason of the connection that ended (reconnecting, closed). */
  code?: number;
  reason?: string;
  /** The greeting of the new connection (open). */
  connectionId?: string;
  cwd?: string;
}

export interface EventMeta {
  channel: string;
  /** ISO time the server stamped on the event envelope. */
  timestamp: string;
  /** Position of the event in its channel, where the server numbers events. */
  seq?: number;
}

export interface Position {
  seq: number;
  epoch?: string;
}

export interface SubscribedInfo {
  channel: string;
  /** True when this acknowledges a subscription renewed after a reconnect. */
  resubscribed: boolean;
  /** Whether every missed event was replayed; false means state should be refetched. */
  recovered?: boolean;
  /** How many missed events follow the acknowledgement. */
  replayed?: number;
  /** The channel's latest position when it was acknowledged. */
  seq?: number;
  epoch?: string;
}

export interface SubscribeOptions {
  onSubscribed?: (info: SubscribedInfo) => void;
}

export interface InvokeOptions {
  timeout?: number;
  signal?: AbortSignal;
}

export type ErrorCode =
  | "timeout"
  | "disconnected"
  | "aborted"
  | "closed"
  | "invalid_frame"
  | "no_such_procedure"
  | (string & {});

export declare class ClusoError extends Error {
  constructor(message: string, code: ErrorCode, data?: unknown);
  readonly name: "ClusoError";
  readonly code: ErrorCode;
  readonly data: unknown;
}

export type Unsubscribe = () => void;

/** Payloads of the server-owned channels. */
export interface ChannelPayloads {
  files: { file: string; event: "add" | "change" | "unlink" | "addDir" | "unlinkDir"; timestamp: string };
  diagnostics: {
    diagnostics: Array<{
      file: string;
      line: number;
      column: number;
      message: string;
      severity: "error" | "warning" | "info" | "hint";
      source?: string;
    }>;
    cleared: boolean;
    timestamp: string;
  };
  "ai-response": { id: string; chunk: string; index: number; finished: boolean; error?: string; timestamp: string };
  search: {
    query: string;
    completed: number;
    total: number | null;
    results: Array<{ file: string; line: number; column: number; match: string; context: string }>;
    timestamp: string;
  };
  validation: {
    validation: {
      type: "lint" | "typecheck" | "format";
      passed: boolean;
      errors: Array<{ file: string; line: number; column: number; message: string; rule?: string }>;
    };
    timestamp: string;
  };
  git: { type: "status" | "commit" | "push" | "pull" | "branch"; message: string; timestamp: string };
}

export declare class ClusoClient {
  /** @param serverUrl http(s):// base of the server or its ws(s):// endpoint (default: defaultServerUrl()). */
  constructor(serverUrl?: string, options?: ClientOptions);
  readonly url: string;
  readonly status: ConnectionStatus;
  readonly isConnected: boolean;
  readonly server: ServerGreeting | null;
  connect(): Promise<void>;
  /** fetch() a path relative to the server's base URL, with the token as a Bearer header. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  subscribe<C extends keyof ChannelPayloads>(
    channel: C,
    callback: (data: ChannelPayloads[C], meta: EventMeta) => void,
    options?: SubscribeOptions,
  ): Unsubscribe;
  subscribe<T = unknown>(channel: string, callback: (data: T, meta: EventMeta) => void, options?: SubscribeOptions): Unsubscribe;
  invoke<T = unknown>(procedure: string, data?: unknown, options?: InvokeOptions): Promise<T>;
  send(channel: string, data?: unknown): boolean;
  onStatus(listener: (status: ConnectionStatus, detail: StatusDetail) => void): () => void;
  onError(listener: (error: Error) => void): () => void;
  position(channel: string): Position | undefined;
  close(code?: number, reason?: string): void;
}

export declare function createClient(serverUrl?: string, options?: ClientOptions): ClusoClient;
export declare function defaultServerUrl(): string;
export declare function websocketUrl(serverUrl?: string): string;
