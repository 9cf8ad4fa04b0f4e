// herald.js: the browser client of herald.
// A dependency-free ES module, served by herald itself at GET /herald.js:
//
//   import { Herald } from 'http://127.0.0.1:8080/herald.js';
//   const h = new Herald('http://127.0.0.1:8080', { topics: ['orders'] });
//   h.on('message', (m) => console.log(m.topic, m.id, m.data));
//
// It subscribes over WebSocket, Server-Sent Events (read with fetch, so that
// it can send Authorization and see herald's heartbeat comments) or
// long-polling, in that order of preference; falls back when a transport
// cannot connect or a proxy buffers its stream; tries the better one again
// later; reconnects with exponential backoff and full jitter; and resumes
// from the last id it saw on whatever transport and node it lands on, so
// nothing is lost or repeated. docs/api.md ("herald.js") has the rules.

const TRANSPORTS = ['websocket', 'sse', 'poll'];

// Refusals of a subscribe op that say "not now", not "never": the topics stay, the op is sent again.
const RETRIED = new Set(['unavailable', 'resume_in_progress']);

const DEFAULTS = {
  topics: [],
  since: undefined,
  token: undefined,
  transports: TRANSPORTS,
  backoff: { base: 500, cap: 30000 },
  pauseWhenHidden: false,
  heartbeat: 15,
  heartbeatMargin: 1000,
  pollTimeout: 25,
  upgradeAfter: 300000,
  upgradeAfterPolls: 20,
  credentials: 'same-origin',
};

/** Splits an id `<epoch>-<seq>` (null for anything else). */
function parseId(id) {
  const m = typeof id === 'string' ? /^([0-9a-f]{8})-(\d+)$/.exec(id) : null;
  return m ? { epoch: m[1], seq: Number(m[2]) } : null;
}

/** An Error carrying herald's error code (and the HTTP status when there was one). */
function heraldError(code, message, status) {
  const err = new Error(message || code);
  err.code = code;
  if (status !== undefined) err.status = status;
  return err;
}

async function errorOf(res) {
  let body = {};
  try {
    body = await res.json();
  } catch {
    // Not herald's JSON (a proxy's page): the status says enough.
  }
  return heraldError(body.error || `http_${res.status}`, body.message || res.statusText, res.status);
}

function retryAfterMs(res) {
  const v = res.headers.get('retry-after');
  const s = v === null ? NaN : Number(v);
  return Number.isFinite(s) && s >= 0 ? s * 1000 : 0;
}

/**
 * One attempt at one transport. It reports to its client: established
 * (proof that bytes flow end to end), messages and gaps, and its end
 * (failed before it was established, or dropped after).
 */
class Link {
  constructor(client, kind) {
    this.client = client;
    this.kind = kind;
    this.established = false;
    this.stopped = false;
    this.timers = new Set();
  }

  after(ms, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  clear(t) {
    clearTimeout(t);
    this.timers.delete(t);
  }

  /** The link works: bytes came back through whatever lies in between. */
  ok() {
    if (this.stopped || this.established) return;
    this.established = true;
    this.client._linkEstablished(this);
  }

  /** The link ended by itself; info: {retryAfter, auth, fatal, error}. */
  end(info = {}) {
    if (this.stopped) return;
    this.stop();
    this.client._linkEnded(this, info);
  }

  stop() {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.close();
  }

  close() {}
}

class WebSocketLink extends Link {
  constructor(client) {
    super(client, 'websocket');
    this.ref = 0;
    this.pending = new Map();
    this.retries = 0; // subscribe ops refused for now in a row, for their backoff
  }

  start() {
    const c = this.client;
    const url = new URL('ws', c._base);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const t of c._topics) url.searchParams.append('topic', t);
    if (c._cursor) url.searchParams.set('since', c._cursor);
    if (c._token) url.searchParams.set('access_token', c._token);
    this.topics = new Set(c._topics);
    this.owner = new Map(); // topic -> the subscribe op that last added it, while unanswered
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch (err) {
      this.after(0, () => this.end({ error: err }));
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.ping();
    ws.onmessage = (e) => this.frame(e.data);
    ws.onclose = (e) => this.closed(e);
    ws.onerror = () => {}; // onclose follows and says more
    // Establishing (upgrade, then the ping's ack) must not take longer than a stream may stay silent.
    this.watch(c._silenceMs());
  }

  /** Closes the link when nothing arrives for ms (herald acks every ping op). */
  watch(ms) {
    if (this.watchdog) this.clear(this.watchdog);
    this.watchdog = this.after(ms, () => this.end({ error: heraldError('silent', 'no answer to ping') }));
  }

  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  /** App-level ping: a browser cannot see WebSocket ping frames, an ack it can. */
  ping() {
    if (this.ws.readyState !== 1) return;
    this.send({ op: 'ping', ref: `ping-${++this.ref}` });
    this.pingTimer = this.after(this.client._opts.heartbeat * 1000, () => this.ping());
  }

  request(obj) {
    const ref = ++this.ref;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject, obj });
      this.send({ ...obj, ref });
    });
  }

  frame(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return;
    }
    this.watch(this.client._silenceMs());
    // Any frame proves the path (a resume's catch-up may come before the ping's ack): open comes first.
    this.ok();
    if (f.type === 'message') this.client._deliver(f, this);
    else if (f.type === 'gap') this.client._gap(f, this);
    else if (f.type === 'ack' || f.type === 'error') {
      if (typeof f.ref === 'string' && f.ref.startsWith('ping-')) return;
      const p = this.pending.get(f.ref);
      if (!p) {
        if (f.type === 'error') this.client._error(heraldError(f.error, f.message));
        return;
      }
      this.pending.delete(f.ref);
      if (f.type === 'ack') p.resolve(f);
      else p.reject(heraldError(f.error, f.message));
    }
  }

  closed(e) {
    const reason = e.reason || '';
    const auth = e.code === 1008 && /token/.test(reason);
    this.end({ auth, code: e.code, reason });
  }

  close() {
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
      if (this.ws.readyState <= 1) this.ws.close(1000);
    }
    for (const p of this.pending.values()) p.reject(heraldError('connection_lost', 'the WebSocket closed before herald answered'));
    this.pending.clear();
  }

  /** Brings the connection's subscriptions to the client's topic list; resolves once herald acked. */
  sync() {
    const done = [];
    if (!this.established || this.ws.readyState !== 1) return Promise.resolve();
    const want = this.client._topics;
    const add = want.filter((t) => !this.topics.has(t));
    const drop = [...this.topics].filter((t) => !want.includes(t));
    if (drop.length) {
      drop.forEach((t) => {
        this.topics.delete(t);
        this.owner.delete(t);
      });
      done.push(this.request({ op: 'unsubscribe', topics: drop }).catch((err) => this.client._error(err)));
    }
    if (add.length) {
      const op = {};
      add.forEach((t) => {
        this.topics.add(t);
        this.owner.set(t, op);
      });
      // Only the op that last added a topic answers for it: one unsubscribed and added again
      // meanwhile belongs to the newer op, whatever herald says to this one.
      const own = () => add.filter((t) => this.owner.get(t) === op);
      done.push(this.request({ op: 'subscribe', topics: add }).then(() => {
        this.retries = 0;
        own().forEach((t) => this.owner.delete(t));
      }, (err) => {
        const mine = own();
        mine.forEach((t) => {
          this.topics.delete(t);
          this.owner.delete(t);
        });
        // The next connection subscribes them; none left: a newer op answers for them.
        if (err.code === 'connection_lost' || !mine.length) return;
        if (!RETRIED.has(err.code)) {
          this.client._refused(mine, err);
          return;
        }
        // herald cannot subscribe them now (Redis refused the read): they stay, and are asked again.
        err.topics = mine;
        err.retrying = true;
        this.client._error(err);
        this.after(this.client._backoffMs(++this.retries), () => this.sync());
      }));
    }
    return Promise.all(done).then(() => {});
  }
}

/** SSE read with fetch: headers can be sent, and herald's `: hb` comments seen. */
class SSELink extends Link {
  constructor(client) {
    super(client, 'sse');
  }

  start() {
    const c = this.client;
    const url = new URL('events', c._base);
    for (const t of c._topics) url.searchParams.append('topic', t);
    url.searchParams.set('format', 'json');
    if (c._cursor) url.searchParams.set('since', c._cursor);
    this.abort = new AbortController();
    this.watch();
    this.run(url, c._fetchInit(this.abort.signal)).catch((err) => this.end({ error: err }));
  }

  /** A buffering proxy holds even the preamble: no byte for 2 × heartbeat + margin ends the link. */
  watch() {
    if (this.watchdog) this.clear(this.watchdog);
    this.watchdog = this.after(this.client._silenceMs(), () =>
      this.end({ error: heraldError('silent', 'no bytes on the stream (a buffering proxy?)') }));
  }

  async run(url, init) {
    const res = await fetch(url.href, init);
    if (!res.ok) {
      const err = await errorOf(res);
      this.end({ error: err, status: res.status, retryAfter: retryAfterMs(res) });
      return;
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let ev = { data: [], event: '' };
    for (;;) {
      const { done, value } = await reader.read();
      if (this.stopped) return;
      if (done) break;
      this.watch();
      this.ok();
      buf += decoder.decode(value, { stream: true });
      // One pass over the chunk (a catch-up may bring a megabyte at once), then keep the rest.
      const eol = /\r\n|\r|\n/g;
      let pos = 0;
      let m;
      while ((m = eol.exec(buf)) !== null) {
        if (m[0] === '\r' && eol.lastIndex === buf.length) break; // a CRLF may be split
        const line = buf.slice(pos, m.index);
        pos = eol.lastIndex;
        if (line === '') {
          if (ev.data.length) this.dispatch(ev.event, ev.data.join('\n'));
          ev = { data: [], event: '' };
          continue;
        }
        if (line[0] === ':') continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text[0] === ' ') text = text.slice(1);
        if (field === 'data') ev.data.push(text);
        else if (field === 'event') ev.event = text;
        else if (field === 'retry' && /^\d+$/.test(text)) this.client._serverRetry = Number(text);
      }
      buf = buf.slice(pos);
    }
    this.end({ auth: this.expired, error: this.unavailable, retryAfter: this.client._serverRetry });
  }

  dispatch(event, data) {
    let obj;
    try {
      obj = JSON.parse(data);
    } catch {
      return;
    }
    if (event === 'herald-gap') this.client._gap(obj, this);
    else if (event === 'herald-token-expired') this.expired = true;
    // The stream ends next: reconnect after a backoff and resume from the cursor.
    else if (event === 'herald-unavailable') this.unavailable = heraldError(obj.error || 'unavailable', obj.message);
    else this.client._deliver(obj, this);
  }

  close() {
    this.abort?.abort();
  }
}

class PollLink extends Link {
  constructor(client) {
    super(client, 'poll');
  }

  start() {
    this.loop().catch((err) => this.end({ error: err }));
  }

  async loop() {
    const c = this.client;
    for (;;) {
      const url = new URL('poll', c._base);
      for (const t of c._topics) url.searchParams.append('topic', t);
      if (c._cursor) url.searchParams.set('since', c._cursor);
      // The first poll of a link answers at once: it proves the path and brings a cursor.
      url.searchParams.set('timeout', this.established ? String(c._opts.pollTimeout) : '0');
      this.abort = new AbortController();
      // An answer that does not come within the poll's timeout (plus slack) is held up somewhere.
      const watchdog = this.after(c._opts.pollTimeout * 1000 + c._silenceMs(), () =>
        this.end({ error: heraldError('silent', 'the poll was not answered') }));
      const res = await fetch(url.href, c._fetchInit(this.abort.signal));
      if (this.stopped) return;
      if (!res.ok) {
        this.clear(watchdog);
        this.end({ error: await errorOf(res), status: res.status, retryAfter: retryAfterMs(res) });
        return;
      }
      const body = await res.json();
      this.clear(watchdog);
      if (this.stopped) return;
      this.ok();
      for (const g of body.gaps || []) c._gap(g, this);
      for (const m of body.messages) c._deliver(m, this);
      c._advance(body.cursor);
      c._polled(this);
    }
  }

  close() {
    this.abort?.abort();
  }
}

const LINKS = { websocket: WebSocketLink, sse: SSELink, poll: PollLink };

export class Herald {
  /**
   * @param baseUrl herald's address, e.g. 'https://push.example.com'
   * @param options see herald.d.ts
   */
  constructor(baseUrl, options = {}) {
    this._opts = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    const base = typeof location !== 'undefined' ? location.href : undefined;
    // herald may sit under a path behind a proxy (https://example.com/push/): endpoints are relative to it.
    this._base = new URL(baseUrl, base);
    this._base.search = this._base.hash = '';
    if (!this._base.pathname.endsWith('/')) this._base.pathname += '/';
    this._transports = this._opts.transports.filter((t) => TRANSPORTS.includes(t));
    if (!this._transports.length) throw new TypeError('transports: none of websocket, sse, poll');
    this._topics = [...new Set(this._opts.topics)];
    this._cursor = this._opts.since || null;
    this._lastId = null;
    this._seen = new Map(); // topic -> {epoch, seq}: the newest id delivered or known lost
    this._listeners = new Map();
    this._level = 0; // index in _transports of the transport in use
    this._attempt = 0; // failures in a row, for the backoff
    this._link = null;
    this._candidate = null; // a better transport being tried while the current one runs
    this._timer = null;
    this._upgradeTimer = null;
    this._polls = 0; // polls answered on a fallback since it opened or a better transport was tried
    this._serverRetry = 0;
    this._token = typeof this._opts.token === 'string' ? this._opts.token : null;
    this._needToken = typeof this._opts.token === 'function';
    this._closed = false;
    this._paused = new Set();
    this._openWaiters = []; // subscribe()/unsubscribe() promises waiting for the next open
    this._watchPage();
    this._schedule(0);
  }

  get lastId() {
    return this._lastId;
  }

  /** 'websocket', 'sse' or 'poll' while connected, else null. */
  get transport() {
    return this._link && this._link.established ? this._link.kind : null;
  }

  get topics() {
    return [...this._topics];
  }

  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return this;
  }

  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
    return this;
  }

  addEventListener(name, fn) {
    this.on(name, fn);
  }

  removeEventListener(name, fn) {
    this.off(name, fn);
  }

  _emit(name, detail) {
    for (const fn of [...(this._listeners.get(name) || [])]) {
      try {
        fn(detail);
      } catch (err) {
        setTimeout(() => { throw err; });
      }
    }
  }

  _error(err) {
    this._emit('error', err);
  }

  subscribe(topics) {
    return this._setTopics([...this._topics, ...[].concat(topics)]);
  }

  unsubscribe(topics) {
    const drop = new Set([].concat(topics));
    return this._setTopics(this._topics.filter((t) => !drop.has(t)));
  }

  /** Resolves once the new list is in force: acked on WebSocket, reconnected on SSE and long-poll. */
  _setTopics(list) {
    const next = [...new Set(list)];
    if (next.join('\n') === this._topics.join('\n') || this._closed) return Promise.resolve();
    this._topics = next;
    this._stopCandidate();
    if (this._link && this._link.kind === 'websocket' && this._link.established) return this._link.sync();
    // SSE and long-poll subscribe by reconnecting from the cursor.
    this._restart(0);
    if (!this._topics.length && this._transports[this._level] !== 'websocket') return Promise.resolve();
    return new Promise((resolve) => this._openWaiters.push(resolve));
  }

  /** A topic herald refused to subscribe (403, too many topics...) leaves the list. */
  _refused(topics, err) {
    this._topics = this._topics.filter((t) => !topics.includes(t));
    err.topics = topics;
    this._error(err);
  }

  /**
   * Publishes data (a string; anything else is sent as JSON) to topic: over
   * the WebSocket when that is the transport, else POST /topics/{topic}.
   * Resolves herald's answer {id, topic, subscribers, duplicate?}.
   */
  async publish(topic, data, { event, idempotencyKey } = {}) {
    const text = typeof data === 'string' ? data : JSON.stringify(data);
    const link = this._link;
    if (link && link.kind === 'websocket' && link.established && link.ws.readyState === 1) {
      const op = { op: 'publish', topic, data: text };
      if (event) op.event = event;
      if (idempotencyKey) op.idempotency_key = idempotencyKey;
      try {
        const ack = await link.request(op);
        const { type: _type, ref: _ref, ...answer } = ack;
        return answer;
      } catch (err) {
        // Lost with the connection: only a keyed publish can be sent again safely.
        if (err.code !== 'connection_lost' || !idempotencyKey) throw err;
      }
    }
    const url = new URL(`topics/${encodeURIComponent(topic)}`, this._base);
    if (event) url.searchParams.set('event', event);
    const init = this._fetchInit(undefined);
    init.method = 'POST';
    init.body = text;
    init.headers['Content-Type'] = 'text/plain; charset=utf-8';
    if (idempotencyKey) init.headers['Idempotency-Key'] = idempotencyKey;
    let res = await fetch(url.href, init);
    if (res.status === 401 && this._needToken) {
      await this._refreshToken();
      init.headers = { ...init.headers, ...this._authHeader() };
      res = await fetch(url.href, init);
    }
    if (!res.ok) throw await errorOf(res);
    return res.json();
  }

  /** Stops for good: no reconnect, pending WebSocket publishes are rejected. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._stopCandidate();
    clearTimeout(this._timer);
    clearTimeout(this._upgradeTimer);
    const link = this._link;
    this._link = null;
    link?.stop();
    this._unwatchPage?.();
    this._openWaiters.splice(0).forEach((resolve) => resolve());
    this._emit('close', { transport: link && link.established ? link.kind : null, willReconnect: false });
  }

  // --- connection management ------------------------------------------------

  _silenceMs() {
    return 2 * this._opts.heartbeat * 1000 + this._opts.heartbeatMargin;
  }

  _authHeader() {
    return this._token ? { Authorization: `Bearer ${this._token}` } : {};
  }

  _fetchInit(signal) {
    return { headers: { ...this._authHeader() }, credentials: this._opts.credentials, signal };
  }

  async _refreshToken() {
    if (!this._needToken) return;
    try {
      this._token = (await this._opts.token()) || null;
    } catch (err) {
      this._error(err);
    }
  }

  _backoffMs(attempt = this._attempt) {
    const { base, cap } = this._opts.backoff;
    return Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
  }

  _schedule(ms) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), ms);
  }

  _restart(ms) {
    const link = this._link;
    this._link = null;
    link?.stop();
    this._schedule(ms);
  }

  async _connect() {
    if (this._closed || this._paused.size || this._link || this._connecting) return;
    const kind = this._transports[this._level];
    if (!this._topics.length && kind !== 'websocket') return; // nothing to read; subscribe() starts it
    this._connecting = true;
    try {
      if (this._needToken && this._token === null) await this._refreshToken();
      // Without a cursor, get one first: a reconnect then resumes from it.
      if (!this._cursor && this._topics.length && kind !== 'poll') await this._anchor();
    } finally {
      this._connecting = false;
    }
    if (this._closed || this._paused.size || this._link) return;
    this._link = new LINKS[this._transports[this._level]](this);
    this._link.start();
  }

  /** The hub's newest id, from a poll that answers at once, as the starting cursor. */
  async _anchor() {
    try {
      const url = new URL('poll', this._base);
      for (const t of this._topics) url.searchParams.append('topic', t);
      url.searchParams.set('timeout', '0');
      const res = await fetch(url.href, this._fetchInit(undefined));
      if (res.ok) this._advance((await res.json()).cursor);
    } catch {
      // Connect without one; the transport's own error will say what is wrong.
    }
  }

  _linkEstablished(link) {
    if (link === this._candidate) {
      // The better transport works: it takes over, the old one stops (overlap is deduplicated).
      this._candidate = null;
      const old = this._link;
      this._link = link;
      this._level = this._transports.indexOf(link.kind);
      old?.stop();
      if (old?.established) this._emit('close', { transport: old.kind, willReconnect: true });
    } else if (link !== this._link) {
      return;
    }
    this._attempt = 0;
    this._polls = 0;
    this._emit('open', { transport: link.kind });
    const synced = link.kind === 'websocket' ? link.sync() : Promise.resolve();
    const waiters = this._openWaiters.splice(0);
    synced.then(() => waiters.forEach((resolve) => resolve()));
    this._planUpgrade();
  }

  _linkEnded(link, info) {
    if (link === this._candidate) {
      this._candidate = null;
      this._planUpgrade(this._transports.indexOf(link.kind) + 1);
      return;
    }
    if (link !== this._link) return;
    this._link = null;
    const wasOpen = link.established;
    if (info.error && info.error.code !== 'silent') this._error(info.error);
    if (wasOpen) this._emit('close', { transport: link.kind, code: info.code, reason: info.reason, willReconnect: true });
    if (info.status === 401 || info.auth) {
      this._attempt++;
      this._refreshToken().then(() => this._schedule(this._backoffMs()));
      return;
    }
    if (info.error?.code === 'invalid_cursor') {
      // A cursor herald could not have issued is refused again: start over from now.
      this._cursor = null;
      this._schedule(0);
      return;
    }
    if (info.status >= 400 && info.status < 500 && info.status !== 408 && info.status !== 429) {
      // Refused for what it asks (403, a bad topic): the same request would be refused again.
      this._refused(this._topics, info.error);
      this._schedule(0);
      return;
    }
    if (!wasOpen && this._level + 1 < this._transports.length && !info.status) {
      // This transport does not get through: fall back to the next at once.
      this._level++;
      this._schedule(0);
      return;
    }
    if (!wasOpen && !info.status) this._level = 0; // every transport failed: start again from the best
    this._attempt++;
    let delay = Math.max(this._backoffMs(), info.retryAfter || 0);
    if (wasOpen && link.kind === 'sse') delay = Math.max(delay, this._serverRetry);
    this._schedule(delay);
  }

  /** Tries transports better than the current one after upgradeAfter ms, best first. */
  _planUpgrade(from = 0) {
    clearTimeout(this._upgradeTimer);
    if (this._closed || !this._link || this._level === 0) return;
    const next = from < this._level ? from : 0;
    const delay = from > 0 && from < this._level ? 0 : this._opts.upgradeAfter;
    this._upgradeTimer = setTimeout(() => this._tryUpgrade(next), delay);
  }

  /** Starts the transport at level next beside the running one (the first established wins). */
  _tryUpgrade(next) {
    clearTimeout(this._upgradeTimer);
    if (this._closed || this._paused.size || !this._link?.established || this._candidate) return;
    if (next >= this._level || !this._topics.length) return;
    this._polls = 0; // a candidate that fails is tried again after as many polls more
    this._candidate = new LINKS[this._transports[next]](this);
    this._candidate.start();
  }

  /**
   * A poll answered on a fallback: after upgradeAfterPolls of them the
   * better transports are tried at once (a network that lets polls through
   * often lets the rest through again, and a busy topic shows it quickly).
   */
  _polled(link) {
    const k = this._opts.upgradeAfterPolls;
    if (link !== this._link || this._level === 0 || !k || this._candidate) return;
    if (++this._polls >= k) this._tryUpgrade(0);
  }

  _stopCandidate() {
    const c = this._candidate;
    this._candidate = null;
    c?.stop();
    if (c) this._planUpgrade();
  }

  // --- delivery -------------------------------------------------------------

  /** Moves the cursor forward (ids compare by seq within an epoch; a new epoch wins). */
  _advance(id) {
    const next = parseId(id);
    if (!next) return;
    const cur = parseId(this._cursor);
    if (!cur || cur.epoch !== next.epoch || next.seq > cur.seq) this._cursor = id;
  }

  _deliver(env, link) {
    if (link !== this._link && link !== this._candidate) return;
    const id = parseId(env.id);
    if (!id || !this._topics.includes(env.topic)) return;
    const seen = this._seen.get(env.topic);
    // Per topic, herald delivers in id order: anything not newer was delivered (or lost) already.
    if (seen && seen.epoch === id.epoch && id.seq <= seen.seq) return;
    this._seen.set(env.topic, id);
    this._lastId = env.id;
    this._advance(env.id);
    const msg = { id: env.id, topic: env.topic, data: env.data, time: env.time };
    if (env.event !== undefined) msg.event = env.event;
    this._emit('message', msg);
  }

  _gap(g, link) {
    if (link !== this._link && link !== this._candidate) return;
    const to = parseId(g.to);
    if (!to) return;
    const seen = this._seen.get(g.topic);
    // A range this client already has (or was told about) is no loss: say each loss once.
    if (seen && seen.epoch === to.epoch && to.seq <= seen.seq) return;
    this._seen.set(g.topic, to);
    this._emit('gap', { topic: g.topic, from: g.from, to: g.to });
  }

  // --- offline and hidden pages ---------------------------------------------

  _pause(reason) {
    if (this._paused.has(reason)) return;
    this._paused.add(reason);
    this._stopCandidate();
    clearTimeout(this._timer);
    const link = this._link;
    this._link = null;
    link?.stop();
    if (link?.established) this._emit('close', { transport: link.kind, willReconnect: true, paused: reason });
  }

  _resume(reason) {
    if (!this._paused.delete(reason)) return;
    // Failures just before the browser noticed it was offline say nothing about the transports.
    if (reason === 'offline') this._level = 0;
    if (this._paused.size || this._closed) return;
    this._attempt = 0;
    this._schedule(0);
  }

  _watchPage() {
    if (typeof window === 'undefined' || !window.addEventListener) return;
    const offline = () => this._pause('offline');
    const online = () => this._resume('offline');
    const visibility = () => (document.hidden ? this._pause('hidden') : this._resume('hidden'));
    window.addEventListener('offline', offline);
    window.addEventListener('online', online);
    if (typeof navigator !== 'undefined' && navigator.onLine === false) this._paused.add('offline');
    const hidden = this._opts.pauseWhenHidden && typeof document !== 'undefined';
    if (hidden) {
      document.addEventListener('visibilitychange', visibility);
      if (document.hidden) this._paused.add('hidden');
    }
    this._unwatchPage = () => {
      window.removeEventListener('offline', offline);
      window.removeEventListener('online', online);
      if (hidden) document.removeEventListener('visibilitychange', visibility);
    };
  }
}

export default Herald;
