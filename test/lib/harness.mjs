// Test harness for herald's integration and browser tests.
//
// Everything here waits for something observable (a log line, a byte, an
// event, a close) and every wait has a timeout, so a broken server fails a
// test instead of hanging it. Fixed sleeps are used only to prove a negative
// (see expectNoMore).

import assert from 'node:assert/strict';
import { after } from 'node:test';
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StringDecoder } from 'node:string_decoder';
import { createHash, randomBytes } from 'node:crypto';
import zlib from 'node:zlib';

export const HERALD_BIN = process.env.HERALD_BIN || '';
export const HERALD_VARIANT = process.env.HERALD_VARIANT || '';
export const ID_RE = /^[0-9a-f]{8}-\d+$/;

const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'LeakSanitizer', 'runtime error:', 'ThreadSanitizer'];
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;

const running = new Set();   // herald processes still alive
const sockets = new Set();   // client connections opened by helpers
function killLeftovers() {
  for (const s of sockets) s.destroy();
  sockets.clear();
  for (const child of running) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
// A failed test must not leave herald (or a stream to it) running, which would
// keep this test file's process alive until CTest's timeout. This root hook
// runs before the test file's own after() hooks (it was registered first), so
// it only arms an unref'd timer: when everything was stopped cleanly the
// process exits at once; otherwise leftovers are killed 15 s later.
after(() => { setTimeout(killLeftovers, 15_000).unref(); });
process.on('exit', killLeftovers);

export { sleep };

/** Rejects with a clear message when `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function childEnv(extra) {
  return {
    ...process.env,
    ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0',
    UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
    ...extra,
  };
}

/** Asserts that herald's stderr shows no sanitizer report. */
export function assertSanitizerClean(stderr, label = 'herald') {
  for (const marker of SANITIZER_MARKERS) {
    assert.ok(!stderr.includes(marker), `${label} stderr contains "${marker}":\n${stderr}`);
  }
}

function requireBinary() {
  assert.ok(HERALD_BIN, 'HERALD_BIN is not set (CTest sets it to the herald binary)');
  assert.ok(existsSync(HERALD_BIN), `HERALD_BIN ${HERALD_BIN} does not exist (not built?)`);
}

/** Writes a config object to a fresh temporary JSON file; returns {dir, file}. */
export function writeConfig(config, { raw } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-test-'));
  const file = path.join(dir, 'config.json');
  writeFileSync(file, raw !== undefined ? raw : JSON.stringify(config ?? {}, null, 2));
  return { dir, file };
}

/**
 * Runs herald to completion (for CLI tests): resolves {code, signal, stdout, stderr}.
 * Kills it and rejects if it is still running after `timeout` ms.
 */
export function runHerald(args, { timeout = 10_000, env } = {}) {
  requireBinary();
  return new Promise((resolve, reject) => {
    const child = spawn(HERALD_BIN, args, { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`herald ${args.join(' ')} still running after ${timeout} ms; stderr:\n${stderr}`));
    }, timeout);
    child.on('error', (err) => { clearTimeout(timer); running.delete(child); reject(err); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Starts herald and waits for its "listening on HOST:PORT" log line.
 *
 * options.config: object written as the config file (herald has embedded defaults).
 * options.args:   full argument list replacing `--config FILE --listen 127.0.0.1:0`;
 *                 the string "{config}" in it is replaced by the config file path.
 * options.listen: listen address used with the default arguments.
 *
 * Returns {url, host, port, child, configFile, stderr(), waitForStderr(re), stop()}.
 * stop() sends SIGTERM and asserts exit code 0 within 10 s and a clean stderr.
 */
export async function startHerald({ config = {}, args, listen = '127.0.0.1:0', env } = {}) {
  requireBinary();
  const { dir, file } = writeConfig(config);
  const argv = args ? args.map((a) => a.replaceAll('{config}', file)) : ['--config', file, '--listen', listen];
  const child = spawn(HERALD_BIN, argv, { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);

  let stderr = '';
  let stdout = '';
  const stderrWaiters = new Set();
  child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderr += d;
    for (const w of stderrWaiters) w();
  });

  let stopping = null;
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      running.delete(child);
      // Before the waiters run: a waiter must see the exit now, not after a timeout.
      exitInfo = { code, signal };
      if (!stopping && !startFailed) {
        // Say so at once: the tests that follow will only see refused connections.
        process.stderr.write(`\n*** herald (${argv.join(' ')}) exited unexpectedly: code ${code}, signal ${signal}; stderr:\n${stderr}\n`);
      }
      for (const w of stderrWaiters) w();
      resolve({ code, signal });
    });
  });
  const spawnError = new Promise((_, reject) => child.on('error', reject));

  const waitForStderr = (re, timeout = 5000) => withTimeout(new Promise((resolve, reject) => {
    const check = () => {
      const m = stderr.match(re);
      if (m) { stderrWaiters.delete(check); resolve(m); return; }
      if (exitInfo) {
        stderrWaiters.delete(check);
        reject(new Error(`herald exited (${JSON.stringify(exitInfo)}) before logging ${re}; stderr:\n${stderr}`));
      }
    };
    stderrWaiters.add(check);
    check();
  }), timeout, `herald to log ${re}; stderr so far:\n${stderr}`);

  let match;
  let startFailed = false;
  try {
    match = await Promise.race([
      waitForStderr(/listening on (\S+):(\d+)/, START_TIMEOUT_MS),
      spawnError,
    ]);
  } catch (err) {
    startFailed = true;
    child.kill('SIGKILL');
    await withTimeout(exited, 5000, 'killed herald to exit').catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  let host = match[1].replace(/^[a-z]+:\/\//, '');
  const port = Number(match[2]);
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  if (host === '[::]') host = '[::1]';
  const url = `http://${host}:${port}`;

  const stop = ({ signal = 'SIGTERM' } = {}) => {
    if (stopping) return stopping;
    stopping = (async () => {
      try {
        if (!exitInfo) child.kill(signal);
        let info;
        try {
          info = await withTimeout(exited, STOP_TIMEOUT_MS, `herald to exit after ${signal}`);
        } catch (err) {
          child.kill('SIGKILL');
          throw new Error(`${err.message}; stderr:\n${stderr}`);
        }
        assert.deepEqual(info, { code: 0, signal: null },
          `herald should exit 0 after ${signal}, got ${JSON.stringify(info)}; stderr:\n${stderr}`);
        assertSanitizerClean(stderr);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    })();
    return stopping;
  };

  return {
    url,
    host: host.replace(/^\[|\]$/g, ''),
    port,
    child,
    configFile: file,
    exited,
    stderr: () => stderr,
    stdout: () => stdout,
    waitForStderr,
    stop,
  };
}

// ---------------------------------------------------------------------------
// HTTP helpers

/** fetch with a timeout; resolves {status, headers, text, json}. */
export async function request(url, { method = 'GET', headers = {}, body, timeout = 10_000 } = {}) {
  const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeout) });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, headers: res.headers, text, json };
}

/**
 * POST /topics/{topic} (topic inserted as is). Resolves {status, headers, text, json}.
 * options: event (?event=), headers, query (extra query string, without "?").
 */
export function publish(url, topic, data, { event, headers = {}, query, contentType = 'text/plain; charset=utf-8' } = {}) {
  const params = [];
  if (event !== undefined) params.push(`event=${encodeURIComponent(event)}`);
  if (query) params.push(query);
  const target = `${url}/topics/${topic}${params.length ? `?${params.join('&')}` : ''}`;
  return request(target, {
    method: 'POST',
    headers: { 'Content-Type': contentType, ...headers },
    body: data,
  });
}

/** publish() that asserts 201 and a well-formed answer; resolves the JSON body. */
export async function publishOk(url, topic, data, options) {
  const res = await publish(url, topic, data, options);
  assert.equal(res.status, 201, `publish to ${topic}: expected 201, got ${res.status} ${res.text}`);
  assert.match(res.json?.id ?? '', ID_RE, `publish answer id: ${res.text}`);
  return res.json;
}

/** POST /publish with a JSON array (or raw string body). */
export function publishBatch(url, items, { headers = {} } = {}) {
  return request(`${url}/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof items === 'string' ? items : JSON.stringify(items),
  });
}

/** Asserts a herald JSON error answer: status, code, a human message. */
export function assertError(res, status, code) {
  const text = res.text ?? res.body;
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${text}`);
  const ct = typeof res.headers?.get === 'function' ? res.headers.get('content-type') : res.headers?.['content-type'];
  assert.match(ct ?? '', /^application\/json/, `error content-type, got ${ct}`);
  let json = res.json;
  if (json === undefined) json = JSON.parse(text);
  if (code !== undefined) assert.equal(json.error, code, `error code in ${text}`);
  assert.equal(typeof json.message, 'string', `error message in ${text}`);
  assert.ok(json.message.length > 0, `error message empty in ${text}`);
  return json;
}

/** Splits an id into {epoch, seq}. */
export function parseId(id) {
  assert.match(id, ID_RE);
  const [epoch, seq] = id.split('-');
  return { epoch, seq: BigInt(seq) };
}

// ---------------------------------------------------------------------------
// SSE reader over raw HTTP: parses the stream itself, keeps the exact bytes.

export class SSEStream {
  constructor() {
    this.raw = '';          // every decoded character received
    this.lines = [];        // every line, without terminators
    this.comments = [];     // comment texts (after ":" and one optional space)
    this.blocks = [];       // every field block: {id, event, data, dataLines, retry, raw}
    this.events = [];       // blocks with data (what an EventSource would dispatch, before its id-only rules)
    this.retry = undefined;
    this.ended = false;
    this.endReason = null;
    this._pending = '';
    this._block = null;
    this._waiters = new Set();
  }

  _newBlock() {
    return { id: undefined, event: undefined, dataLines: [], hasData: false, retry: undefined, raw: '' };
  }

  feed(text) {
    this.raw += text;
    this._pending += text;
    const re = /\r\n|\r|\n/g;
    let start = 0;
    let m;
    while ((m = re.exec(this._pending)) !== null) {
      if (m[0] === '\r' && m.index === this._pending.length - 1) break; // maybe \r\n split across chunks
      const line = this._pending.slice(start, m.index);
      this._line(line, m[0]);
      start = m.index + m[0].length;
    }
    this._pending = this._pending.slice(start);
    this._notify();
  }

  _line(line, terminator) {
    this.lines.push(line);
    if (line === '') {
      if (this._block) {
        const b = this._block;
        b.raw += terminator;
        const block = {
          id: b.id,
          event: b.event,
          data: b.hasData ? b.dataLines.join('\n') : undefined,
          dataLines: b.dataLines,
          retry: b.retry,
          raw: b.raw,
        };
        this.blocks.push(block);
        if (block.data !== undefined) this.events.push(block);
        this._block = null;
      }
      return;
    }
    if (line.startsWith(':')) {
      const text = line.slice(1).replace(/^ /, '');
      this.comments.push(text);
      return;
    }
    if (!this._block) this._block = this._newBlock();
    const b = this._block;
    b.raw += line + terminator;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') { b.dataLines.push(value); b.hasData = true; }
    else if (field === 'id') b.id = value;
    else if (field === 'event') b.event = value;
    else if (field === 'retry') { b.retry = Number(value); this.retry = Number(value); }
  }

  _end(reason) {
    if (this.ended) return;
    this.ended = true;
    this.endReason = reason;
    this._notify();
  }

  _notify() {
    for (const w of this._waiters) w();
  }

  /** Resolves when pred(this) is true; rejects on timeout or when the stream ends first. */
  waitFor(pred, { timeout = 5000, what = 'a condition on the SSE stream' } = {}) {
    return new Promise((resolve, reject) => {
      const finish = (fn, value) => {
        clearTimeout(timer);
        this._waiters.delete(check);
        fn(value);
      };
      const check = () => {
        let ok;
        try { ok = pred(this); } catch (err) { finish(reject, err); return; }
        if (ok) finish(resolve, this);
        else if (this.ended) finish(reject, new Error(`SSE stream ended (${this.endReason}) before ${what}; received:\n${this.tail()}`));
      };
      const timer = setTimeout(() => finish(reject,
        new Error(`timed out after ${timeout} ms waiting for ${what}; received:\n${this.tail()}`)), timeout);
      this._waiters.add(check);
      check();
    });
  }

  /** Waits until at least n data events arrived; resolves the first n. */
  async waitEvents(n, { timeout = 5000 } = {}) {
    await this.waitFor((s) => s.events.length >= n, { timeout, what: `${n} SSE events (have ${this.events.length})` });
    return this.events.slice(0, n);
  }

  /** Waits until the stream ends (server closed it). */
  waitEnd({ timeout = 5000 } = {}) {
    return this.waitFor((s) => s.ended, { timeout, what: 'the stream to end' }).catch((err) => {
      if (this.ended) return this;
      throw err;
    });
  }

  /** Proves a negative: no further data events within ms. */
  async expectNoMore(ms = 300, { from = this.events.length } = {}) {
    await sleep(ms);
    assert.equal(this.events.length, from,
      `expected no more SSE events, got: ${JSON.stringify(this.events.slice(from).map((e) => e.raw))}`);
  }

  tail(n = 2000) {
    return this.raw.length > n ? `…${this.raw.slice(-n)}` : this.raw;
  }
}

/**
 * Opens an SSE stream with node:http (a fresh connection). Resolves a client
 * once the response head arrived and, for a 200, once the first line (the
 * `retry:` preamble) was received so the subscription is known to be in place.
 * Non-200 answers resolve after the whole body with .body and .json set.
 *
 * options.ca: the certificate to trust for an https:// base URL.
 *
 * client: {status, headers, stream: SSEStream, body, json, close()}, and the
 * stream's waitFor/waitEvents/expectNoMore/waitEnd are forwarded.
 */
export function openSSE(baseUrl, pathAndQuery, { headers = {}, timeout = 5000, waitPreamble = true, ca } = {}) {
  const url = new URL(pathAndQuery, baseUrl);
  return withTimeout(new Promise((resolve, reject) => {
    // https:// base URLs (TLS listeners) trust `ca`, the test's self-signed certificate.
    const req = (url.protocol === 'https:' ? https : http).request(url, {
      method: 'GET',
      agent: false,
      headers: { Accept: 'text/event-stream', ...headers },
      ...(ca ? { ca } : {}),
    });
    req.on('error', reject);
    req.on('socket', (sock) => { sockets.add(sock); sock.on('close', () => sockets.delete(sock)); });
    req.on('response', (res) => {
      const stream = new SSEStream();
      const client = {
        status: res.statusCode,
        headers: res.headers,
        rawHeaders: res.rawHeaders,
        stream,
        req,
        res,
        body: '',
        json: undefined,
        close() { req.destroy(); res.destroy(); },
        waitFor: (...a) => stream.waitFor(...a),
        waitEvents: (...a) => stream.waitEvents(...a),
        expectNoMore: (...a) => stream.expectNoMore(...a),
        waitEnd: (...a) => stream.waitEnd(...a),
        get events() { return stream.events; },
      };
      const decoder = new StringDecoder('utf8');
      res.on('data', (chunk) => {
        const text = decoder.write(chunk);
        if (client.status === 200) stream.feed(text);
        else client.body += text;
      });
      res.on('end', () => { stream._end('end'); });
      res.on('close', () => { stream._end('close'); });
      res.on('error', () => { stream._end('error'); });
      req.on('close', () => { stream._end('close'); });
      if (client.status !== 200) {
        res.on('end', () => {
          try { client.json = JSON.parse(client.body); } catch { /* not JSON */ }
          resolve(client);
        });
        return;
      }
      if (!waitPreamble) { resolve(client); return; }
      stream.waitFor((s) => s.lines.length >= 1, { timeout, what: 'the SSE preamble' })
        .then(() => resolve(client), (err) => { client.close(); reject(err); });
    });
    req.end();
  }), timeout + 1000, `SSE response from ${url}`);
}

/** openSSE that asserts a 200 event stream. */
export async function subscribe(baseUrl, pathAndQuery, options) {
  const client = await openSSE(baseUrl, pathAndQuery, options);
  assert.equal(client.status, 200, `GET ${pathAndQuery}: expected 200, got ${client.status} ${client.body}`);
  return client;
}

// ---------------------------------------------------------------------------
// Raw TCP

/** Parses consecutive HTTP/1.1 responses from a buffer. Returns {responses, rest}. */
export function parseResponses(buf, { requestMethods = [] } = {}) {
  const responses = [];
  let off = 0;
  while (off < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', off);
    if (headEnd === -1) break;
    const head = buf.subarray(off, headEnd).toString('latin1');
    const [statusLine, ...headerLines] = head.split('\r\n');
    const sm = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
    if (!sm) throw new Error(`not an HTTP status line: ${JSON.stringify(statusLine)}`);
    const status = Number(sm[1]);
    const headers = {};
    for (const l of headerLines) {
      const c = l.indexOf(':');
      const k = l.slice(0, c).trim().toLowerCase();
      const v = l.slice(c + 1).trim();
      headers[k] = headers[k] !== undefined ? `${headers[k]}, ${v}` : v;
    }
    let p = headEnd + 4;
    let body;
    const method = requestMethods[responses.length];
    if (method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200)) {
      body = Buffer.alloc(0);
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts = [];
      let complete = false;
      for (;;) {
        const le = buf.indexOf('\r\n', p);
        if (le === -1) break;
        const size = parseInt(buf.subarray(p, le).toString('latin1'), 16);
        if (Number.isNaN(size)) throw new Error('bad chunk size');
        if (size === 0) {
          const te = buf.indexOf('\r\n\r\n', le);
          if (te === -1) break;
          p = te + 4;
          complete = true;
          break;
        }
        if (le + 2 + size + 2 > buf.length) break;
        parts.push(buf.subarray(le + 2, le + 2 + size));
        p = le + 2 + size + 2;
      }
      if (!complete) {
        responses.push({ status, headers, head, body: Buffer.concat(parts), complete: false });
        return { responses, rest: Buffer.alloc(0) };
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const len = Number(headers['content-length']);
      if (p + len > buf.length) {
        responses.push({ status, headers, head, body: buf.subarray(p), complete: false });
        return { responses, rest: Buffer.alloc(0) };
      }
      body = buf.subarray(p, p + len);
      p += len;
    } else {
      body = buf.subarray(p); // until close
      p = buf.length;
    }
    const text = body.toString('utf8');
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    responses.push({ status, headers, head, body, text, json, complete: true });
    off = p;
  }
  return { responses, rest: buf.subarray(off) };
}

/** An interactive raw TCP connection: write bytes, wait for bytes or the close. */
export class RawConn {
  static connect(host, port, { timeout = 5000 } = {}) {
    return withTimeout(new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      socket.once('connect', () => resolve(new RawConn(socket)));
      socket.once('error', reject);
    }), timeout, `TCP connect to ${host}:${port}`);
  }

  constructor(socket) {
    this.socket = socket;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    this.chunks = [];
    this.closed = false;
    this.error = null;
    this._waiters = new Set();
    socket.on('data', (d) => { this.chunks.push(d); this._notify(); });
    socket.on('error', (err) => { this.error = err; });
    socket.on('close', () => { this.closed = true; this._notify(); });
  }

  get buf() { return Buffer.concat(this.chunks); }
  get text() { return this.buf.toString('latin1'); }

  _notify() { for (const w of this._waiters) w(); }

  write(bytes) {
    return new Promise((resolve) => {
      if (this.socket.destroyed) { resolve(false); return; }
      this.socket.write(bytes, (err) => resolve(!err));
    });
  }

  waitFor(pred, { timeout = 5000, what = 'data' } = {}) {
    return new Promise((resolve, reject) => {
      const finish = (fn, v) => { clearTimeout(timer); this._waiters.delete(check); fn(v); };
      const check = () => {
        let ok;
        try { ok = pred(this); } catch (err) { finish(reject, err); return; }
        if (ok) finish(resolve, this);
        else if (this.closed) finish(reject, new Error(`connection closed before ${what}; received: ${JSON.stringify(this.text.slice(0, 2000))}`));
      };
      const timer = setTimeout(() => finish(reject, new Error(
        `timed out after ${timeout} ms waiting for ${what}; received: ${JSON.stringify(this.text.slice(0, 2000))}`)), timeout);
      this._waiters.add(check);
      check();
    });
  }

  /** Waits until n complete responses were received; resolves them. */
  async waitResponses(n, { timeout = 5000, requestMethods } = {}) {
    let result;
    await this.waitFor(() => {
      const { responses } = parseResponses(this.buf, { requestMethods });
      const done = responses.filter((r) => r.complete);
      if (done.length >= n) { result = done; return true; }
      return false;
    }, { timeout, what: `${n} HTTP response(s)` });
    return result;
  }

  /** Waits for the peer to close. */
  waitClose({ timeout = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      const finish = (fn, v) => { clearTimeout(timer); this._waiters.delete(check); fn(v); };
      const check = () => { if (this.closed) finish(resolve, this); };
      const timer = setTimeout(() => finish(reject, new Error(
        `connection still open after ${timeout} ms; received: ${JSON.stringify(this.text.slice(0, 2000))}`)), timeout);
      this._waiters.add(check);
      check();
    });
  }

  destroy() { this.socket.destroy(); }
}

/**
 * Writes bytes to a fresh connection and collects everything until the peer
 * closes or `timeout` ms pass. Resolves {buf, text, closed, responses}.
 */
export async function rawRequest(host, port, bytes, { timeout = 3000, halfClose = false } = {}) {
  const conn = await RawConn.connect(host, port);
  await conn.write(bytes);
  if (halfClose) conn.socket.end();
  let closed = true;
  try {
    await conn.waitClose({ timeout });
  } catch {
    closed = false;
  }
  conn.destroy();
  const buf = conn.buf;
  let responses = [];
  try { responses = parseResponses(buf).responses; } catch { /* leave empty */ }
  return { buf, text: buf.toString('latin1'), closed, responses };
}

// ---------------------------------------------------------------------------
// curl, one of the real clients

/** Runs curl with the given arguments. Resolves {code, stdout, stderr}. */
export function curl(args, { timeout = 10_000, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile('curl', ['--silent', '--show-error', '--max-time', String(Math.ceil(timeout / 1000)), ...args],
      { timeout: timeout + 2000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') { reject(err); return; }
        resolve({ code: err ? err.code : 0, stdout, stderr });
      });
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

// ---------------------------------------------------------------------------
// A TCP proxy the test can sever (to cut a stream from the server side) and
// hold (to keep a client disconnected while something happens).

export async function startProxy(targetHost, targetPort) {
  const conns = new Set();      // {client, upstream}
  const requests = [];          // request heads seen from clients, in order
  const held = [];              // client sockets waiting for release()
  let holding = false;
  const waiters = new Set();
  const notify = () => { for (const w of waiters) w(); };
  let accepted = 0;

  const sniff = (client) => {
    let buf = '';
    client.on('data', (d) => {
      buf += d.toString('latin1');
      let i;
      while ((i = buf.indexOf('\r\n\r\n')) !== -1) {
        requests.push(buf.slice(0, i + 4));
        buf = buf.slice(i + 4); // EventSource GETs carry no body
        notify();
      }
    });
  };

  const forward = (client) => {
    const upstream = net.connect({ host: targetHost, port: targetPort });
    const pair = { client, upstream };
    conns.add(pair);
    const drop = () => {
      conns.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  };

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    accepted += 1;
    sniff(client);
    notify();
    if (holding) {
      held.push(client);
      client.on('error', () => {});
      return;
    }
    forward(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();

  const waitFor = (pred, { timeout = 10_000, what = 'a proxy condition' } = {}) => new Promise((resolve, reject) => {
    const finish = (fn, v) => { clearTimeout(timer); waiters.delete(check); fn(v); };
    const check = () => { if (pred()) finish(resolve); };
    const timer = setTimeout(() => finish(reject, new Error(`timed out waiting for ${what}; requests seen:\n${requests.join('')}`)), timeout);
    waiters.add(check);
    check();
  });

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    get accepted() { return accepted; },
    get active() { return conns.size; },
    /** New connections are accepted but not forwarded until release(). */
    hold() { holding = true; },
    release() {
      holding = false;
      for (const c of held.splice(0)) if (!c.destroyed) forward(c);
    },
    /** Cuts every forwarded connection (both sides). */
    sever() {
      for (const { client, upstream } of conns) {
        client.destroy();
        upstream.destroy();
      }
      conns.clear();
    },
    waitFor,
    waitAccepted(n, opts) { return waitFor(() => accepted >= n, { what: `${n} proxy connections`, ...opts }); },
    async close() {
      for (const c of held.splice(0)) c.destroy();
      for (const { client, upstream } of conns) { client.destroy(); upstream.destroy(); }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// ---------------------------------------------------------------------------
// Generic wait and the npm `eventsource` client

/** Polls pred every `interval` ms until it is truthy; rejects after `timeout` ms. */
export async function until(pred, { timeout = 5000, interval = 10, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await sleep(interval);
  }
}

/**
 * Opens an EventSource (npm `eventsource`, WHATWG-compliant) and records what
 * it dispatches: got.message, got[eventName] for each name in `events`, as
 * {data, lastEventId, type}; got.errors counts error events; got.opens counts opens.
 * `headers` are added to every request it makes (custom fetch), e.g. Last-Event-ID.
 * Resolves once open; rejects if the first connection fails.
 */
export async function openEventSource(url, { headers = {}, events = [], fetchImpl = fetch, timeout = 5000 } = {}) {
  const { EventSource } = await import('eventsource');
  const requests = [];
  const es = new EventSource(url, {
    fetch: (input, init) => {
      const merged = { ...init, headers: { ...init.headers, ...headers } };
      requests.push(merged.headers);
      return fetchImpl(input, merged);
    },
  });
  const got = { message: [], errors: 0, opens: 0, all: [], requests };
  const record = (type) => (e) => {
    const item = { type, data: e.data, lastEventId: e.lastEventId };
    (got[type] ??= []).push(item);
    got.all.push(item);
  };
  es.addEventListener('message', record('message'));
  for (const name of events) es.addEventListener(name, record(name));
  es.addEventListener('open', () => { got.opens += 1; });
  es.addEventListener('error', () => { got.errors += 1; });
  try {
    await until(() => got.opens > 0 || es.readyState === 2, { timeout, what: `EventSource to open ${url}` });
  } catch (err) {
    es.close();
    throw err;
  }
  if (got.opens === 0) {
    es.close();
    throw new Error(`EventSource ${url} failed to open (readyState ${es.readyState})`);
  }
  const wait = (n, { type = 'message', timeout: t = 5000 } = {}) =>
    until(() => (got[type]?.length ?? 0) >= n, { timeout: t, what: () => `${n} "${type}" events; got ${JSON.stringify(got.all)}` })
      .then(() => got[type]);
  return { es, got, wait, close: () => es.close() };
}

// ---------------------------------------------------------------------------
// WebSocket: the npm `ws` client, a raw frame codec and a raw client.

/** Sec-WebSocket-Accept for a key (RFC 6455 §4.2.2). */
export function wsAccept(key) {
  return createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
}

/**
 * Opens a WebSocket with the npm `ws` client (perMessageDeflate off unless
 * given) and records everything it receives. Resolves once open; rejects
 * with {status, headers, body} details when the server does not answer 101.
 *
 * client.messages: [{text, json, binary, data}] in arrival order;
 * client.pings: pings received; client.closed: {code, reason} once closed;
 * client.upgradeHeaders: the 101 response headers.
 */
export async function openWS(baseUrl, pathAndQuery = '/ws', { perMessageDeflate = false, headers = {}, timeout = 5000, ...options } = {}) {
  const { default: WebSocket } = await import('ws');
  const url = new URL(pathAndQuery, baseUrl.replace(/^http/, 'ws'));
  const ws = new WebSocket(url, { perMessageDeflate, headers, handshakeTimeout: timeout, ...options });
  const client = new WSClient(ws, url.href);
  ws.on('upgrade', (res) => {
    client.upgradeHeaders = res.headers;
    const sock = res.socket;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  try {
    await withTimeout(new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('unexpected-response', (req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { body += d; });
        res.on('end', () => {
          let json;
          try { json = JSON.parse(body); } catch { json = undefined; }
          const err = new Error(`WebSocket ${url.href}: expected 101, got ${res.statusCode} ${body}`);
          Object.assign(err, { status: res.statusCode, headers: res.headers, body, json });
          req.destroy();
          reject(err);
        });
      });
      ws.once('error', reject);
    }), timeout, `WebSocket ${url.href} to open`);
  } catch (err) {
    ws.terminate();
    throw err;
  }
  return client;
}

let wsRefCounter = 0;

export class WSClient {
  constructor(ws, url) {
    this.ws = ws;
    this.url = url;
    this.messages = [];
    this.pings = [];
    this.pongs = [];
    this.closed = null;
    this.errors = [];
    this.upgradeHeaders = undefined;
    this._waiters = new Set();
    ws.on('message', (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
      const item = { binary: isBinary, data: buf, text: isBinary ? undefined : buf.toString('utf8'), json: undefined };
      if (!isBinary) { try { item.json = JSON.parse(item.text); } catch { /* not JSON */ } }
      this.messages.push(item);
      this._notify();
    });
    ws.on('ping', (d) => { this.pings.push({ at: Date.now(), data: d }); this._notify(); });
    ws.on('pong', (d) => { this.pongs.push(d); this._notify(); });
    ws.on('error', (err) => { this.errors.push(err); this._notify(); });
    ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString('utf8') }; this._notify(); });
  }

  get extensions() { return this.ws.extensions; }
  /** Parsed JSON text messages. */
  get json() { return this.messages.filter((m) => m.json !== undefined).map((m) => m.json); }
  /** Envelopes ({"type":"message"}), optionally of one topic. */
  envelopes(topic) { return this.json.filter((j) => j.type === 'message' && (topic === undefined || j.topic === topic)); }

  _notify() { for (const w of this._waiters) w(); }

  send(data, options) {
    const payload = typeof data === 'string' || Buffer.isBuffer(data) || data instanceof Uint8Array ? data : JSON.stringify(data);
    return new Promise((resolve, reject) => this.ws.send(payload, options ?? {}, (err) => (err ? reject(err) : resolve())));
  }

  _describe() {
    const texts = this.messages.slice(-20).map((m) => (m.binary ? `<binary ${m.data.length}>` : m.text.slice(0, 300)));
    return `closed=${JSON.stringify(this.closed)}; last messages: ${JSON.stringify(texts)}`;
  }

  /** Resolves when pred(this) is true; rejects on timeout, or when closed first (unless allowClosed). */
  waitFor(pred, { timeout = 5000, what = 'a condition on the WebSocket', allowClosed = false } = {}) {
    return new Promise((resolve, reject) => {
      const finish = (fn, v) => { clearTimeout(timer); this._waiters.delete(check); fn(v); };
      const check = () => {
        let v;
        try { v = pred(this); } catch (err) { finish(reject, err); return; }
        if (v) finish(resolve, v);
        else if (this.closed && !allowClosed) finish(reject, new Error(`WebSocket closed before ${what}; ${this._describe()}`));
      };
      const timer = setTimeout(() => finish(reject, new Error(`timed out after ${timeout} ms waiting for ${what}; ${this._describe()}`)), timeout);
      this._waiters.add(check);
      check();
    });
  }

  /** Waits for a JSON message matching pred (searching from index `from`); resolves it. */
  waitJson(pred, { from = 0, ...opts } = {}) {
    return this.waitFor(() => this.messages.slice(from).find((m) => m.json !== undefined && pred(m.json))?.json,
      { what: `a JSON message matching ${pred}`, ...opts });
  }

  /** Waits until at least n envelopes (of topic, if given) arrived; resolves the first n. */
  async waitEnvelopes(n, { topic, timeout = 5000 } = {}) {
    await this.waitFor(() => this.envelopes(topic).length >= n, { timeout, what: `${n} envelopes${topic ? ` of ${topic}` : ''} (have ${this.envelopes(topic).length})` });
    return this.envelopes(topic).slice(0, n);
  }

  /**
   * Sends a control operation and resolves the reply (ack or error) with the
   * same ref. A ref is added when the operation has none (ref: undefined
   * keeps it out and then waits for the next reply without a ref).
   */
  async call(op, { timeout = 5000 } = {}) {
    const msg = 'ref' in op ? op : { ...op, ref: `r${++wsRefCounter}` };
    const from = this.messages.length;
    await this.send(msg);
    const hasRef = msg.ref !== undefined;
    return this.waitJson((j) => (j.type === 'ack' || j.type === 'error') && (hasRef ? j.ref === msg.ref : !('ref' in j)),
      { from, timeout, what: `the reply to ${JSON.stringify(msg).slice(0, 200)}` });
  }

  /** call() that asserts an ack. */
  async ok(op, opts) {
    const reply = await this.call(op, opts);
    assert.equal(reply.type, 'ack', `expected an ack to ${JSON.stringify(op).slice(0, 200)}, got ${JSON.stringify(reply)}`);
    return reply;
  }

  /** Asserts the connection is open and usable: a ping op gets its ack. */
  async assertUsable() {
    const ref = `alive-${++wsRefCounter}`;
    assert.deepEqual(await this.call({ op: 'ping', ref }), { type: 'ack', ref });
    assert.equal(this.closed, null);
  }

  /** Waits for the close; resolves {code, reason}. */
  async waitClose({ timeout = 5000 } = {}) {
    await this.waitFor(() => this.closed, { timeout, what: 'the WebSocket to close', allowClosed: true });
    return this.closed;
  }

  /** Proves a negative: no further messages (matching pred) within ms. */
  async expectNoMore(ms = 300, { from = this.messages.length, pred = () => true } = {}) {
    await sleep(ms);
    const extra = this.messages.slice(from).filter((m) => pred(m.json ?? m));
    assert.deepEqual(extra.map((m) => m.text ?? `<binary ${m.data.length}>`), [], 'expected no more WebSocket messages');
  }

  close(code = 1000, reason) {
    if (this.ws.readyState === 0) { this.ws.terminate(); return; }
    if (this.ws.readyState === 1) this.ws.close(code, reason);
    // Whatever the server does, do not keep the test process alive.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  terminate() { this.ws.terminate(); }
}

/**
 * Builds one client→server frame. payload: Buffer or string. Options: fin,
 * rsv1..3, mask (default true), maskKey, length (declared length, number or
 * BigInt, default payload length), lengthBytes (force 2/8-byte extended
 * length: 16 or 64), headerOnly (omit the payload).
 */
export function wsFrame({ opcode = 1, payload = Buffer.alloc(0), fin = true, rsv1 = false, rsv2 = false, rsv3 = false,
  mask = true, maskKey, length, lengthBytes, headerOnly = false } = {}) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
  const declared = BigInt(length ?? body.length);
  const parts = [];
  const b0 = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (rsv2 ? 0x20 : 0) | (rsv3 ? 0x10 : 0) | (opcode & 0x0f);
  const m = mask ? 0x80 : 0;
  if (lengthBytes === 64 || (lengthBytes === undefined && declared > 0xffffn)) {
    const ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(declared);
    parts.push(Buffer.from([b0, m | 127]), ext);
  } else if (lengthBytes === 16 || declared >= 126n) {
    const ext = Buffer.alloc(2);
    ext.writeUInt16BE(Number(declared));
    parts.push(Buffer.from([b0, m | 126]), ext);
  } else {
    parts.push(Buffer.from([b0, m | Number(declared)]));
  }
  let data = body;
  if (mask) {
    const key = maskKey ?? randomBytes(4);
    parts.push(key);
    data = Buffer.alloc(body.length);
    for (let i = 0; i < body.length; i++) data[i] = body[i] ^ key[i & 3];
  }
  if (!headerOnly) parts.push(data);
  return Buffer.concat(parts);
}

/** A close frame payload: code (16 bits) and reason (string or Buffer). */
export function wsClosePayload(code, reason = '') {
  const r = Buffer.isBuffer(reason) ? reason : Buffer.from(reason, 'utf8');
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return Buffer.concat([b, r]);
}

/** Compresses one message as permessage-deflate does (sync flush, tail stripped). */
export function wsDeflate(data) {
  const out = zlib.deflateRawSync(Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8'), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert.deepEqual([...out.subarray(-4)], [0, 0, 0xff, 0xff]);
  return out.subarray(0, -4);
}

/**
 * Parses consecutive server frames (unmasked) from buf. Returns {frames, rest}.
 * frame: {fin, rsv1, rsv2, rsv3, opcode, masked, payload, text (inflated when rsv1), json}.
 */
export function parseWsFrames(buf) {
  const frames = [];
  let off = 0;
  while (buf.length - off >= 2) {
    const b0 = buf[off];
    const b1 = buf[off + 1];
    let len = b1 & 0x7f;
    let p = off + 2;
    if (len === 126) {
      if (buf.length - p < 2) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (buf.length - p < 8) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    let key;
    if (masked) {
      if (buf.length - p < 4) break;
      key = buf.subarray(p, p + 4);
      p += 4;
    }
    if (buf.length - p < len) break;
    let payload = Buffer.from(buf.subarray(p, p + len));
    if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
    const frame = {
      fin: (b0 & 0x80) !== 0, rsv1: (b0 & 0x40) !== 0, rsv2: (b0 & 0x20) !== 0, rsv3: (b0 & 0x10) !== 0,
      opcode: b0 & 0x0f, masked, payload, wireLength: p + len - off,
    };
    if (frame.rsv1 && frame.fin && (frame.opcode === 1 || frame.opcode === 2)) {
      frame.inflated = zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
    }
    if (frame.opcode === 1 && frame.fin) {
      frame.text = (frame.inflated ?? payload).toString('utf8');
      try { frame.json = JSON.parse(frame.text); } catch { /* not JSON */ }
    }
    if (frame.opcode === 8) {
      frame.code = payload.length >= 2 ? payload.readUInt16BE(0) : undefined;
      frame.reason = payload.subarray(2).toString('utf8');
    }
    frames.push(frame);
    off = p + len;
  }
  return { frames, rest: buf.subarray(off) };
}

/** Builds the bytes of a WebSocket upgrade request. headers: null values drop a default header. */
export function wsUpgradeRequest(path = '/ws', { headers = {}, method = 'GET', key = randomBytes(16).toString('base64') } = {}) {
  const defaults = {
    Host: 'herald.test',
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': key,
    'Sec-WebSocket-Version': '13',
  };
  const merged = { ...defaults };
  for (const [k, v] of Object.entries(headers)) {
    const existing = Object.keys(merged).find((d) => d.toLowerCase() === k.toLowerCase());
    if (existing) delete merged[existing];
    if (v !== null && v !== undefined) merged[k] = v;
  }
  const lines = Object.entries(merged).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return `${method} ${path} HTTP/1.1\r\n${lines}\r\n`;
}

/**
 * Sends an upgrade request on a fresh connection and resolves the first
 * response {status, headers, body, text, json} (for handshakes that must fail,
 * or to inspect a 101's headers). The connection is then destroyed.
 */
export async function wsHandshake(host, port, path = '/ws', options = {}) {
  const conn = await RawConn.connect(host, port);
  try {
    await conn.write(wsUpgradeRequest(path, options));
    const [res] = await conn.waitResponses(1, { timeout: options.timeout ?? 5000 });
    return res;
  } finally {
    conn.destroy();
  }
}

/**
 * A WebSocket client on a raw TCP connection: performs the handshake by
 * hand (asserting 101 and Sec-WebSocket-Accept), then writes whatever bytes a
 * test wants and parses the server's frames.
 */
export class RawWS {
  static async connect(host, port, { path = '/ws', headers = {}, timeout = 5000, extra } = {}) {
    const conn = await RawConn.connect(host, port);
    const key = randomBytes(16).toString('base64');
    await conn.write(Buffer.concat([Buffer.from(wsUpgradeRequest(path, { headers, key }), 'latin1'), extra ?? Buffer.alloc(0)]));
    try {
      await conn.waitFor((c) => c.buf.indexOf('\r\n\r\n') !== -1, { timeout, what: 'the handshake response' });
    } catch (err) {
      conn.destroy();
      throw err;
    }
    const buf = conn.buf;
    const headEnd = buf.indexOf('\r\n\r\n');
    const head = buf.subarray(0, headEnd).toString('latin1');
    const [statusLine, ...lines] = head.split('\r\n');
    const responseHeaders = {};
    for (const l of lines) {
      const c = l.indexOf(':');
      responseHeaders[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
    }
    if (!/^HTTP\/1\.1 101 /.test(statusLine)) {
      conn.destroy();
      throw new Error(`expected 101, got ${JSON.stringify(head)}`);
    }
    assert.equal(responseHeaders['sec-websocket-accept'], wsAccept(key), 'Sec-WebSocket-Accept');
    assert.match(responseHeaders.upgrade ?? '', /^websocket$/i);
    assert.match(responseHeaders.connection ?? '', /\bupgrade\b/i);
    return new RawWS(conn, headEnd + 4, responseHeaders);
  }

  constructor(conn, bodyStart, headers) {
    this.conn = conn;
    this.bodyStart = bodyStart;
    this.headers = headers;
  }

  get socket() { return this.conn.socket; }
  get closed() { return this.conn.closed; }
  /** Every complete frame the server sent so far. */
  get frames() { return parseWsFrames(this.conn.buf.subarray(this.bodyStart)).frames; }
  /** JSON of the complete text frames. */
  get json() { return this.frames.filter((f) => f.json !== undefined).map((f) => f.json); }

  write(bytes) { return this.conn.write(bytes); }
  sendFrame(options) { return this.conn.write(wsFrame(options)); }
  sendText(text, options = {}) { return this.sendFrame({ opcode: 1, payload: text, ...options }); }
  sendJson(obj, options = {}) { return this.sendText(JSON.stringify(obj), options); }

  _describe() {
    return this.frames.slice(-10).map((f) => ({ opcode: f.opcode, fin: f.fin, rsv1: f.rsv1, code: f.code, text: f.text?.slice(0, 200), len: f.payload.length }));
  }

  /** Waits for a frame matching pred; resolves it. */
  async waitFrame(pred, { timeout = 5000, what = 'a frame' } = {}) {
    let found;
    try {
      await this.conn.waitFor(() => { found = this.frames.find(pred); return found !== undefined; }, { timeout, what });
    } catch (err) {
      throw new Error(`${err.message.split('; received')[0]}; frames: ${JSON.stringify(this._describe())}`);
    }
    return found;
  }

  waitJson(pred, opts = {}) {
    return this.waitFrame((f) => f.json !== undefined && pred(f.json), { what: `a JSON frame matching ${pred}`, ...opts }).then((f) => f.json);
  }

  /** Sends a ping op and waits for its ack. */
  async assertUsable(ref = `raw-${++wsRefCounter}`) {
    await this.sendJson({ op: 'ping', ref });
    await this.waitJson((j) => j.type === 'ack' && j.ref === ref);
  }

  /** Waits for the server's close frame; resolves it ({code, reason, payload}). */
  waitCloseFrame(opts = {}) {
    return this.waitFrame((f) => f.opcode === 8, { what: 'a close frame', ...opts });
  }

  /**
   * Waits for a close frame with the given code, asserts it is the last frame,
   * then that the server closes the TCP connection.
   */
  async expectClose(code, { timeout = 5000 } = {}) {
    const frame = await this.waitCloseFrame({ timeout });
    assert.equal(frame.code, code, `close code (reason ${JSON.stringify(frame.reason)}); frames: ${JSON.stringify(this._describe())}`);
    await this.conn.waitClose({ timeout });
    const frames = this.frames;
    assert.equal(frames.at(-1).opcode, 8, 'nothing after the close frame');
    assert.equal(parseWsFrames(this.conn.buf.subarray(this.bodyStart)).rest.length, 0, 'no partial frame after the close frame');
    return frame;
  }

  destroy() { this.conn.destroy(); }
}
