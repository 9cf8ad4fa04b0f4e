// Harness for the Redis scale-out tests (SPEC §5): a real redis-server, a
// cluster of herald nodes sharing it, a TCP fault proxy to put between them,
// and the checks every cluster test applies to what a subscriber received.
//
// Like harness.mjs, every wait here is bounded and waits for something
// observable (a log line, a reply, a connection event).
//
// HERALD_CLUSTER_SINGLE=1 makes startCluster start ONE herald with the memory
// engine and hand it out as every node: the delivery tests then run against
// a single node, which checks the tests' own logic while no engine exists.

import assert from 'node:assert/strict';
import { after } from 'node:test';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startHerald, request, until, withTimeout, ID_RE } from './harness.mjs';

export const SINGLE_NODE = process.env.HERALD_CLUSTER_SINGLE === '1';

const redisChildren = new Set(); // redis-server processes still alive
function killRedisLeftovers() {
  for (const child of redisChildren) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
// As in harness.mjs: the test file's own after() hooks stop what they started;
// whatever a failed test left running is killed 15 s later (timer unref'd).
after(() => { setTimeout(killRedisLeftovers, 15_000).unref(); });
process.on('exit', killRedisLeftovers);

/** A loopback TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// A tiny RESP client: one connection per command, so it works across Redis
// restarts and never holds a connection a test did not ask for.

function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a), 'utf8');
    parts.push(`$${b.length}\r\n`, b, '\r\n');
  }
  return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p, 'utf8'))));
}

/** Parses one RESP2 reply at buf[off]; returns {value, end} or null when incomplete. */
export function parseReply(buf, off = 0) {
  const le = buf.indexOf('\r\n', off);
  if (le === -1) return null;
  const type = String.fromCharCode(buf[off]);
  const line = buf.subarray(off + 1, le).toString('utf8');
  const next = le + 2;
  switch (type) {
    case '+': return { value: line, end: next };
    case '-': { const e = new Error(`redis: ${line}`); e.redis = line; return { value: e, end: next }; }
    case ':': return { value: Number(line), end: next };
    case '$': {
      const len = Number(line);
      if (len < 0) return { value: null, end: next };
      if (buf.length < next + len + 2) return null;
      return { value: buf.subarray(next, next + len).toString('utf8'), end: next + len + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return { value: null, end: next };
      const items = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return null;
        items.push(r.value);
        p = r.end;
      }
      return { value: items, end: p };
    }
    default: throw new Error(`not a RESP reply: ${JSON.stringify(buf.subarray(off, off + 40).toString('latin1'))}`);
  }
}

/** Sends one command to host:port and resolves its reply; an error reply rejects. */
export function redisCommand(port, args, { host = '127.0.0.1', timeout = 5000 } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    sock.on('connect', () => sock.write(encodeCommand(args)));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      let r;
      try { r = parseReply(buf); } catch (err) { sock.destroy(); reject(err); return; }
      if (!r) return;
      sock.destroy();
      if (r.value instanceof Error) reject(r.value);
      else resolve(r.value);
    });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error(`redis ${host}:${port} closed before answering ${args[0]}`)));
  }), timeout, `redis ${host}:${port} to answer ${args.join(' ').slice(0, 100)}`);
}

// ---------------------------------------------------------------------------
// redis-server

/**
 * Starts a real redis-server (from PATH) on a free loopback port (or `port`),
 * without persistence, and waits until it answers PING.
 *
 * Returns {port, url, pid, running, stdout(), cli(...args), stop(), kill(sig), restart()}:
 * - cli(...args): one command over RESP, resolves the parsed reply;
 * - stop(): SIGTERM, waits for the exit (a restart then starts empty);
 * - kill(sig = 'SIGKILL'): sends sig; waits for the exit unless sig is SIGSTOP/SIGCONT;
 * - restart(): stops it if running, then starts it again on the same port.
 * Stopped by the test file's after() at the latest (see killRedisLeftovers).
 */
export async function startRedis({ port, args = [] } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-redis-'));
  let child = null;
  let out = '';
  let exited = null;
  let chosenPort = port;

  const launch = async (p) => {
    mkdirSync(dir, { recursive: true }); // again after stop() removed it
    out = '';
    const argv = ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--dir', dir, '--logfile', '', ...args];
    const c = spawn('redis-server', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    redisChildren.add(c);
    const waiters = new Set();
    const notify = () => { for (const w of waiters) w(); };
    c.stdout.setEncoding('utf8').on('data', (d) => { out += d; notify(); });
    c.stderr.setEncoding('utf8').on('data', (d) => { out += d; notify(); });
    let exitInfo = null;
    exited = new Promise((resolve) => {
      c.on('close', (code, signal) => { redisChildren.delete(c); exitInfo = { code, signal }; notify(); resolve(exitInfo); });
    });
    let spawnError = null;
    c.on('error', (err) => { spawnError = err; notify(); });
    await withTimeout(new Promise((resolve, reject) => {
      const check = () => {
        if (spawnError) {
          waiters.delete(check);
          reject(spawnError.code === 'ENOENT'
            ? new Error('redis-server is not in PATH: the cluster tests need a real Redis (deps/install.sh installs redis-server)')
            : spawnError);
        } else if (/Ready to accept connections/.test(out)) {
          waiters.delete(check);
          resolve();
        } else if (exitInfo) {
          waiters.delete(check);
          const err = new Error(`redis-server on port ${p} exited (${JSON.stringify(exitInfo)}):\n${out}`);
          err.addressInUse = /Address already in use/i.test(out);
          reject(err);
        }
      };
      waiters.add(check);
      check();
    }), 10_000, `redis-server on port ${p} to be ready; output:\n${out}`);
    assert.equal(await redisCommand(p, ['PING']), 'PONG');
  };

  for (let attempt = 0; ; attempt++) {
    if (port === undefined) chosenPort = await freePort();
    try {
      await launch(chosenPort);
      break;
    } catch (err) {
      if (child && !child.exitCode && child.signalCode === null) child.kill('SIGKILL');
      // Another process took the port between freePort() and the bind: try another.
      if (err.addressInUse && port === undefined && attempt < 5) continue;
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  const running = () => child !== null && child.exitCode === null && child.signalCode === null;
  const kill = async (sig = 'SIGKILL') => {
    if (!running()) return;
    child.kill(sig);
    if (sig === 'SIGSTOP' || sig === 'SIGCONT') return;
    await withTimeout(exited, 10_000, `redis-server to exit after ${sig}`);
  };
  const stop = async () => {
    if (running()) child.kill('SIGCONT'); // a stopped (SIGSTOP) Redis cannot act on SIGTERM
    await kill('SIGTERM');
  };
  const redis = {
    port: chosenPort,
    url: `redis://127.0.0.1:${chosenPort}`,
    get pid() { return child?.pid; },
    get running() { return running(); },
    stdout: () => out,
    cli: (...a) => redisCommand(chosenPort, a),
    kill,
    stop: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await stop();
      await launch(chosenPort);
    },
  };
  return redis;
}

// ---------------------------------------------------------------------------
// A TCP fault proxy between herald and Redis.

const PROXY_QUEUE_LIMIT = 64 * 1024 * 1024;

/**
 * Forwards 127.0.0.1:<proxy.port> to host:targetPort, one upstream connection
 * per client connection, and can make connections stop answering:
 *
 * - pause({filter, direction, newConnections}): stop forwarding on the
 *   connections filter(conn) selects (default: all), in direction 'up'
 *   (herald → Redis), 'down' (Redis → herald) or 'both' (default). Bytes are
 *   held, not dropped, as a stalled network would (bounded: past 64 MiB the
 *   connection is cut). newConnections (default: true when no filter is
 *   given) makes connections accepted from now on start paused both ways.
 * - resume(): forwards everything held and stops pausing.
 * - cut({filter, reset}): closes the selected connections on both sides
 *   (reset: with a TCP RST).
 * - connections: [{id, pubsub, closed}] — pubsub is true once the client sent
 *   a (P)SUBSCRIBE command on it (herald's pub/sub connection).
 * - waitFor(pred, opts): resolves when pred(proxy) holds (checked on every
 *   connection event).
 */
export async function startProxy(targetPort, { host = '127.0.0.1' } = {}) {
  const conns = new Set();
  let nextId = 0;
  let pauseNew = false;
  const waiters = new Set();
  const notify = () => { for (const w of waiters) w(); };

  const gate = () => ({ paused: false, queue: [], bytes: 0 });
  const drop = (c, reset = false) => {
    if (c.closed) return;
    c.closed = true;
    conns.delete(c);
    for (const s of [c.client, c.upstream]) {
      if (reset && typeof s.resetAndDestroy === 'function' && !s.destroyed) s.resetAndDestroy();
      else s.destroy();
    }
    notify();
  };
  const flush = (c, dir) => {
    const g = c[dir];
    const dst = dir === 'up' ? c.upstream : c.client;
    for (const chunk of g.queue.splice(0)) dst.write(chunk);
    g.bytes = 0;
  };
  const forward = (c, src, dir) => {
    src.on('data', (chunk) => {
      if (dir === 'up' && !c.pubsub && c.sent.length < 65536) {
        c.sent += chunk.toString('latin1');
        if (/\*\d+\r\n\$\d+\r\nP?SUBSCRIBE\r\n/i.test(c.sent)) { c.pubsub = true; notify(); }
      }
      const g = c[dir];
      if (g.paused) {
        g.queue.push(chunk);
        g.bytes += chunk.length;
        if (g.bytes > PROXY_QUEUE_LIMIT) drop(c);
        return;
      }
      const dst = dir === 'up' ? c.upstream : c.client;
      if (!dst.write(chunk)) {
        src.pause();
        dst.once('drain', () => src.resume());
      }
    });
  };

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    const upstream = net.connect({ host, port: targetPort });
    const c = { id: ++nextId, client, upstream, sent: '', pubsub: false, closed: false, up: gate(), down: gate() };
    if (pauseNew) { c.up.paused = true; c.down.paused = true; }
    conns.add(c);
    for (const s of [client, upstream]) {
      s.on('error', () => drop(c));
      s.on('close', () => drop(c));
    }
    forward(c, client, 'up');
    forward(c, upstream, 'down');
    client.resume();
    notify();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const select = (filter) => [...conns].filter((c) => !c.closed && (!filter || filter(c)));

  const proxy = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get connections() { return [...conns].map((c) => ({ id: c.id, pubsub: c.pubsub, closed: c.closed })); },
    get accepted() { return nextId; },
    pause({ filter, direction = 'both', newConnections = !filter } = {}) {
      for (const c of select(filter)) {
        if (direction !== 'down') c.up.paused = true;
        if (direction !== 'up') c.down.paused = true;
      }
      if (newConnections) pauseNew = true;
    },
    resume() {
      pauseNew = false;
      for (const c of select()) {
        for (const dir of ['up', 'down']) {
          c[dir].paused = false;
          flush(c, dir);
        }
      }
    },
    cut({ filter, reset = false } = {}) {
      for (const c of select(filter)) drop(c, reset);
    },
    waitFor(pred, { timeout = 10_000, what = 'a proxy condition' } = {}) {
      return new Promise((resolve, reject) => {
        const finish = (fn, v) => { clearTimeout(timer); waiters.delete(check); fn(v); };
        const check = () => { if (pred(proxy)) finish(resolve, proxy); };
        const timer = setTimeout(() => finish(reject, new Error(
          `timed out after ${timeout} ms waiting for ${what}; connections: ${JSON.stringify(proxy.connections)}`)), timeout);
        waiters.add(check);
        check();
      });
    },
    async close() {
      for (const c of select()) drop(c);
      await new Promise((resolve) => server.close(resolve));
    },
  };
  return proxy;
}

// ---------------------------------------------------------------------------
// herald nodes

export const NODE_NAMES = ['A', 'B', 'C', 'D', 'E'];

/** The cluster section herald takes (SPEC §5), with the given Redis URL. */
export function clusterConfig(redisUrl, extra = {}) {
  return { redis: redisUrl, prefix: 'herald', timeout_ms: 2000, ...extra };
}

/** GET /healthz: {status, text, json, headers}. */
export function healthz(node, { timeout = 5000 } = {}) {
  return request(`${node.url}/healthz`, { timeout });
}

/** Waits until /healthz answers 200; resolves the ms it took. */
export async function waitHealthy(node, { timeout = 10_000 } = {}) {
  const start = Date.now();
  let last;
  await until(async () => {
    last = await healthz(node).catch((err) => ({ status: 0, text: String(err) }));
    return last.status === 200;
  }, { timeout, interval: 25, what: () => `node ${node.name ?? node.url} to be healthy; last /healthz: ${last?.status} ${last?.text}` });
  return Date.now() - start;
}

/** Waits until /healthz answers 503 (the engine is not up); resolves that answer. */
export async function waitUnhealthy(node, { timeout = 10_000 } = {}) {
  let last;
  await until(async () => {
    last = await healthz(node).catch((err) => ({ status: 0, text: String(err) }));
    return last.status === 503;
  }, { timeout, interval: 25, what: () => `node ${node.name ?? node.url} to report 503 on /healthz; last: ${last?.status} ${last?.text}` });
  return last;
}

/** The value of a metric line `name` (or `name{labels}`) in /metrics; undefined if absent. */
export async function metric(node, name, labels = '') {
  const res = await request(`${node.url}/metrics`);
  assert.equal(res.status, 200, `/metrics: ${res.status}`);
  const key = labels ? `${name}{${labels}}` : name;
  for (const line of res.text.split('\n')) {
    if (line.startsWith(`${key} `)) return Number(line.slice(key.length + 1));
  }
  return undefined;
}

/**
 * Starts n herald nodes on one Redis. redis: a URL, an object with .url
 * (startRedis, startProxy), or an array with one of those per node (to put
 * some nodes behind a proxy). config: herald config for every node;
 * config.cluster is merged over clusterConfig(). waitHealthy (default true):
 * resolves once every node's /healthz answers 200.
 *
 * Returns {nodes, A, B, C…, stop()}; each node is a startHerald() handle with
 * .name. stop() stops every node (asserting a clean exit).
 */
export async function startCluster(n, { redis, config = {}, env, waitHealthy: wait = true, healthyTimeout = 10_000 } = {}) {
  const urlOf = (r) => (typeof r === 'string' ? r : r?.url);
  const redisFor = (i) => urlOf(Array.isArray(redis) ? redis[i] : redis);
  let nodes;
  let started;
  if (SINGLE_NODE) {
    const { cluster, ...rest } = config;
    const one = await startHerald({ config: rest, env });
    one.name = NODE_NAMES.slice(0, n).join('=');
    started = [one];
    nodes = Array.from({ length: n }, () => one);
  } else {
    const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => startHerald({
      config: { ...config, cluster: clusterConfig(redisFor(i), config.cluster) },
      env,
    })));
    const failed = results.find((r) => r.status === 'rejected');
    started = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    if (failed) {
      await Promise.allSettled(started.map((h) => h.stop()));
      throw failed.reason;
    }
    nodes = started;
    nodes.forEach((h, i) => { h.name = NODE_NAMES[i]; });
  }
  const cluster = {
    nodes,
    stop: async () => {
      const results = await Promise.allSettled(started.map((h) => h.stop()));
      const failed = results.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
  nodes.forEach((h, i) => { cluster[NODE_NAMES[i]] = h; });
  if (wait) {
    try {
      await Promise.all(started.map((h) => waitHealthy(h, { timeout: healthyTimeout })));
    } catch (err) {
      await cluster.stop().catch(() => {});
      throw err;
    }
  }
  return cluster;
}

// ---------------------------------------------------------------------------
// What subscribers received, as one list of items per subscriber:
// {type: 'message', id, topic?, data, event?, time?} and {type: 'gap', topic, from, to}.

/** Items of an SSE client (harness subscribe()); format=json events carry the envelope. */
export function sseItems(sse) {
  const blocks = (sse.stream ?? sse).events;
  return blocks.map((e) => {
    if (e.event === 'herald-gap') return { type: 'gap', ...JSON.parse(e.data) };
    let env;
    try { env = JSON.parse(e.data); } catch { env = undefined; }
    if (env && env.type === 'message' && env.id === e.id) return { ...env, sseEvent: e.event };
    return { type: 'message', id: e.id, data: e.data, event: e.event };
  });
}

/** Items of a WebSocket client (harness openWS()). */
export function wsItems(ws) {
  return ws.json.filter((j) => j.type === 'message' || j.type === 'gap');
}

/** Items of a series of /poll answers (each answer's gaps come before its messages). */
export function pollItems(answers) {
  const items = [];
  for (const a of answers) {
    for (const g of a.gaps ?? []) items.push({ type: 'gap', ...g });
    items.push(...a.messages);
  }
  return items;
}

/** Items of a subscriber: an SSE client (harness subscribe/openSSE) or a WSClient (openWS). */
export function itemsOf(client) {
  return client.stream ? sseItems(client) : wsItems(client);
}

/** Waits until the subscriber received message `id`; resolves its items. */
export async function waitForId(client, id, { timeout = 5000, label = 'the subscriber' } = {}) {
  await client.waitFor(() => itemsOf(client).some((i) => i.type === 'message' && i.id === id),
    { timeout, what: `${id} on ${label}` });
  return itemsOf(client);
}

/** The message ids among items, in order. */
export function messageIds(items) {
  return items.filter((i) => i.type === 'message').map((i) => i.id);
}

/**
 * The shape of items: 'message' per message, one 'gap' per run of gaps (a
 * topic's gap may be reported again while a catch-up runs: docs/protocol.md).
 */
export function shapeOf(items) {
  const shape = [];
  for (const i of items) if (i.type === 'message' || shape.at(-1) !== 'gap') shape.push(i.type);
  return shape;
}

/** Asserts that every gap among items starts at `from` (the subscriber's last id or cursor). */
export function assertGapsFrom(items, from, label = 'subscriber') {
  for (const g of items.filter((i) => i.type === 'gap')) {
    assert.equal(g.from, from, `${label}: a gap starts at the last id it had: ${JSON.stringify(g)}`);
  }
}

/** Splits an id into {epoch, seq: BigInt}. */
export function splitId(id) {
  assert.match(id ?? '', ID_RE, `not an id: ${JSON.stringify(id)}`);
  const dash = id.indexOf('-');
  return { epoch: id.slice(0, dash), seq: BigInt(id.slice(dash + 1)) };
}

/** Whether gap {from, to} reports id as (possibly) lost. */
export function gapCovers(gap, id) {
  const f = splitId(gap.from);
  const t = splitId(gap.to);
  const i = splitId(id);
  if (i.epoch === f.epoch) {
    if (i.seq <= f.seq) return false;
    return t.epoch !== f.epoch || i.seq <= t.seq; // a gap into another epoch loses the rest of from's
  }
  return i.epoch === t.epoch && i.seq <= t.seq;
}

/**
 * Checks one subscriber's items against the delivery contract and returns
 * {messages, ids, gaps, epochs}:
 * - every message id is well formed and appears once;
 * - within an epoch, seqs strictly increase;
 * - moving to another epoch is announced by a gap after the last message of
 *   the old one, and an epoch, once left, never comes back;
 * - every gap is well formed and its topic is one of `topics` (when given);
 * - acked (ids, or {id, topic}): each is delivered or covered by a gap of
 *   its topic (or any gap, when topics are unknown);
 * - only: when given (ids), no message outside it was delivered (e.g. acked
 *   plus outcome-unknown publishes).
 */
export function assertSequence(items, { label = 'subscriber', acked, only, topics } = {}) {
  const messages = items.filter((i) => i.type === 'message');
  const gaps = items.filter((i) => i.type === 'gap');
  const seen = new Set();
  const epochs = [];
  let prev = null;
  let gapSincePrev = false;
  const where = (k) => `${label}, item ${k}: ${JSON.stringify(items.slice(Math.max(0, k - 3), k + 2))}`;
  items.forEach((item, k) => {
    if (item.type === 'gap') {
      assert.match(item.from ?? '', ID_RE, `gap.from, ${where(k)}`);
      assert.match(item.to ?? '', ID_RE, `gap.to, ${where(k)}`);
      if (topics) assert.ok(topics.includes(item.topic), `gap of an unexpected topic, ${where(k)}`);
      gapSincePrev = true;
      return;
    }
    assert.ok(!seen.has(item.id), `duplicate id ${item.id}, ${where(k)}`);
    seen.add(item.id);
    if (topics && item.topic !== undefined) assert.ok(topics.includes(item.topic), `message of an unexpected topic, ${where(k)}`);
    const cur = splitId(item.id);
    if (prev) {
      if (cur.epoch === prev.epoch) {
        assert.ok(cur.seq > prev.seq, `ids out of order (${item.id} after ${prev.id}), ${where(k)}`);
      } else {
        assert.ok(gapSincePrev, `epoch changed from ${prev.epoch} to ${cur.epoch} without a gap first, ${where(k)}`);
        assert.ok(!epochs.includes(cur.epoch), `epoch ${cur.epoch} came back after ${prev.epoch}, ${where(k)}`);
      }
    }
    if (epochs.at(-1) !== cur.epoch) epochs.push(cur.epoch);
    prev = { ...cur, id: item.id };
    gapSincePrev = false;
  });
  if (acked) {
    for (const a of acked) {
      const { id, topic } = typeof a === 'string' ? { id: a } : a;
      if (seen.has(id)) continue;
      const covering = gaps.find((g) => (topic === undefined || g.topic === topic) && gapCovers(g, id));
      assert.ok(covering, `${label}: acknowledged ${id}${topic ? ` (${topic})` : ''} was neither delivered nor reported in a gap; gaps: ${JSON.stringify(gaps)}`);
    }
  }
  if (only) {
    const allowed = new Set(only);
    const extra = messages.filter((m) => !allowed.has(m.id)).map((m) => m.id);
    assert.deepEqual(extra, [], `${label}: delivered messages nobody published (or that were refused)`);
  }
  return { messages, ids: messages.map((m) => m.id), gaps, epochs };
}

/** GET /poll; resolves the JSON answer after asserting 200. */
export async function poll(node, topics, { since, timeout = 0, limit } = {}) {
  const q = topics.map((t) => `topic=${encodeURIComponent(t)}`);
  if (since !== undefined) q.push(`since=${encodeURIComponent(since)}`);
  q.push(`timeout=${timeout}`);
  if (limit !== undefined) q.push(`limit=${limit}`);
  const res = await request(`${node.url}/poll?${q.join('&')}`, { timeout: timeout * 1000 + 10_000 });
  assert.equal(res.status, 200, `GET /poll on ${node.name}: ${res.status} ${res.text}`);
  return res.json;
}

/** The newest id of the (cluster's) sequence, as a plain poll answers it. */
export async function newestCursor(node, topic = 'cursor-probe') {
  return (await poll(node, [topic])).cursor;
}
