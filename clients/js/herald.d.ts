// Type declarations of herald.js, the browser client of herald (docs/api.md, "herald.js").

export type Transport = 'websocket' | 'sse' | 'poll';

/** A message as herald delivers it on every transport. */
export interface HeraldMessage {
  /** `<epoch>-<seq>`; the same on every transport and node. */
  id: string;
  topic: string;
  /** Only when the publisher gave one. */
  event?: string;
  data: string;
  /** Unix milliseconds when herald published it. */
  time: number;
}

/** Messages of `topic` after `from` up to and including `to` may be lost. */
export interface HeraldGap {
  topic: string;
  from: string;
  to: string;
}

export interface HeraldOpen {
  transport: Transport;
}

export interface HeraldClose {
  /** The transport that was open, or null. */
  transport: Transport | null;
  /** WebSocket close code and reason, when the server closed it. */
  code?: number;
  reason?: string;
  /** false only after close(). */
  willReconnect: boolean;
  /** Set when the client paused: 'offline' or 'hidden'. */
  paused?: 'offline' | 'hidden';
}

/** herald's error code (`unauthorized`, `forbidden`, `invalid_topic`…), or `http_<status>`. */
export interface HeraldError extends Error {
  code: string;
  status?: number;
  /**
   * For a refused subscription: the topics that were dropped from the list,
   * or, with retrying, the topics kept and asked for again after a backoff.
   */
  topics?: string[];
  /** A subscribe op refused for now (`unavailable`: Redis refused a read): its topics stay. */
  retrying?: boolean;
}

export interface PublishAnswer {
  id: string;
  topic: string;
  subscribers: number;
  duplicate?: boolean;
}

export interface HeraldOptions {
  /** Topics to subscribe to at once. */
  topics?: string[];
  /** A cursor to resume from: an id, or 'earliest'. */
  since?: string;
  /** A JWT, or a function (maybe async) called at start and again after a 401 or an expiry. */
  token?: string | (() => string | null | Promise<string | null>);
  /** The transports to use, in order of preference. Default ['websocket', 'sse', 'poll']. */
  transports?: Transport[];
  /** Reconnect delays: random in [0, min(cap, base × 2^failures)) ms. Default {base: 500, cap: 30000}. */
  backoff?: { base?: number; cap?: number };
  /** Disconnect while the page is hidden, resume when it is shown. Default false. */
  pauseWhenHidden?: boolean;
  /** herald's heartbeat_s (default 15): a stream silent for 2 × this + heartbeatMargin ms is dead or buffered. */
  heartbeat?: number;
  /** Default 1000 ms. */
  heartbeatMargin?: number;
  /** Seconds a long-poll waits (herald's timeout parameter). Default 25. */
  pollTimeout?: number;
  /** Milliseconds on a fallback transport before the better ones are tried again. Default 300000. */
  upgradeAfter?: number;
  /**
   * Long-polls answered on the poll fallback before the better transports are
   * tried again, whichever comes first with upgradeAfter. 0 turns it off. Default 20.
   */
  upgradeAfterPolls?: number;
  /** fetch credentials for SSE, polls and publishes; 'include' sends the access_token cookie cross-origin. */
  credentials?: RequestCredentials;
}

export interface HeraldEventMap {
  message: HeraldMessage;
  gap: HeraldGap;
  open: HeraldOpen;
  close: HeraldClose;
  error: HeraldError;
}

export class Herald {
  constructor(baseUrl: string | URL, options?: HeraldOptions);
  /** The id of the last message delivered, or null. */
  readonly lastId: string | null;
  /** The transport in use while connected, else null. */
  readonly transport: Transport | null;
  readonly topics: string[];
  on<K extends keyof HeraldEventMap>(name: K, fn: (detail: HeraldEventMap[K]) => void): this;
  off<K extends keyof HeraldEventMap>(name: K, fn: (detail: HeraldEventMap[K]) => void): this;
  addEventListener<K extends keyof HeraldEventMap>(name: K, fn: (detail: HeraldEventMap[K]) => void): void;
  removeEventListener<K extends keyof HeraldEventMap>(name: K, fn: (detail: HeraldEventMap[K]) => void): void;
  /**
   * Resolves once the topics are subscribed (acked on WebSocket, reconnected on SSE and long-poll).
   * Also resolves when herald refused them for now (`unavailable`, `resume_in_progress`): they stay
   * in the list and are asked for again after a backoff; an `error` event with `retrying: true`
   * says so.
   */
  subscribe(topics: string | string[]): Promise<void>;
  unsubscribe(topics: string | string[]): Promise<void>;
  /** Over the WebSocket when that is the transport, else POST /topics/{topic}; rejects with a HeraldError. */
  publish(topic: string, data: unknown, options?: { event?: string; idempotencyKey?: string }): Promise<PublishAnswer>;
  /** Stops for good. */
  close(): void;
}

export default Herald;
