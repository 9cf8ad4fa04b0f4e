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
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startHerald, request, publish, sleep, until, withTimeout, ID_RE } from './harness.mjs';

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
 *
 * sentinelConfig (text): starts redis-sentinel instead, on that config
 * (written into the temp dir, which Sentinel rewrites as it learns).
 */
export async function startRedis({ port, args = [], sentinelConfig } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-redis-'));
  let child = null;
  let out = '';
  let exited = null;
  let chosenPort = port;

  const launch = async (p) => {
    mkdirSync(dir, { recursive: true }); // again after stop() removed it
    out = '';
    const binary = sentinelConfig === undefined ? 'redis-server' : 'redis-sentinel';
    const config = path.join(dir, 'sentinel.conf');
    if (sentinelConfig !== undefined && !existsSync(config)) writeFileSync(config, sentinelConfig);
    const ready = sentinelConfig === undefined ? /Ready to accept connections/ : /Sentinel ID is/;
    const argv = [...(sentinelConfig === undefined ? [] : [config]),
      '--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--dir', dir, '--logfile', '', ...args];
    const c = spawn(binary, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
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
            ? new Error(`${binary} is not in PATH: the cluster tests need a real Redis (deps/install.sh installs redis-server and redis-sentinel)`)
            : spawnError);
        } else if (ready.test(out)) {
          waiters.delete(check);
          resolve();
        } else if (exitInfo) {
          waiters.delete(check);
          const err = new Error(`${binary} on port ${p} exited (${JSON.stringify(exitInfo)}):\n${out}`);
          err.addressInUse = /Address already in use/i.test(out);
          reject(err);
        }
      };
      waiters.add(check);
      check();
    }), 10_000, `${binary} on port ${p} to be ready; output:\n${out}`);
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
// Redis Sentinel: a master, one replica and three sentinels.

/** Resolves {key: value} of an INFO section's answer. */
function infoFields(text) {
  return Object.fromEntries(text.split('\r\n').filter((l) => l.includes(':')).map((l) => {
    const at = l.indexOf(':');
    return [l.slice(0, at), l.slice(at + 1)];
  }));
}

/** A flat [k1, v1, k2, v2...] reply (SENTINEL replicas, SENTINEL sentinels) as an object. */
function flatObject(list) {
  const o = {};
  for (let i = 0; i + 1 < list.length; i += 2) o[list[i]] = list[i + 1];
  return o;
}

/**
 * Starts a master, one replica of it (--replicaof) and three redis-sentinel
 * processes monitoring it as `name` (quorum 2, down-after-milliseconds
 * downAfterMs, failover-timeout failoverTimeoutMs), each on a free loopback
 * port. Resolves once the replica is in sync and every sentinel knows the
 * replica and the two other sentinels (without that, a failover vote fails).
 *
 * Returns {name, master, replica, sentinels, addresses, config(extra),
 * masterPort(), waitForMaster(port), stop()}:
 * - master, replica, sentinels[i]: startRedis() handles;
 * - addresses: ['127.0.0.1:PORT', ...] of the sentinels (cluster.sentinels);
 * - config(extra): a herald cluster section on these sentinels;
 * - masterPort(): the master's port as sentinel 0 answers it;
 * - waitForMaster(port): until every sentinel names port as the master;
 * - stop(): stops them all.
 */
export async function startSentinels({ name = 'herald-master', downAfterMs = 1000, failoverTimeoutMs = 3000, timeout = 30_000 } = {}) {
  const started = [];
  const stopAll = () => Promise.allSettled(started.map((r) => r.stop()));
  try {
    const master = await startRedis();
    started.push(master);
    const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    started.push(replica);
    await until(async () => infoFields(await replica.cli('INFO', 'replication')).master_link_status === 'up',
      { timeout, interval: 50, what: 'the replica to be in sync with the master' });
    const sentinelConfig = [
      `sentinel monitor ${name} 127.0.0.1 ${master.port} 2`,
      `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
      `sentinel failover-timeout ${name} ${failoverTimeoutMs}`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n');
    const sentinels = [];
    for (let i = 0; i < 3; i++) {
      const s = await startRedis({ sentinelConfig });
      started.push(s);
      sentinels.push(s);
    }
    let last = '';
    await until(async () => {
      for (const s of sentinels) {
        const replicas = (await s.cli('SENTINEL', 'replicas', name)).map(flatObject);
        const peers = await s.cli('SENTINEL', 'sentinels', name);
        last = `sentinel ${s.port}: ${replicas.length} replicas, ${peers.length} other sentinels`;
        if (replicas.length !== 1 || peers.length !== 2) return false;
      }
      return true;
    }, { timeout, interval: 100, what: () => `the sentinels to know the replica and each other (${last})` });
    const group = {
      name,
      master,
      replica,
      sentinels,
      addresses: sentinels.map((s) => `127.0.0.1:${s.port}`),
      config: (extra = {}) => ({ sentinels: group.addresses, sentinel_master: name, ...extra }),
      masterPort: async () => Number((await sentinels[0].cli('SENTINEL', 'get-master-addr-by-name', name))[1]),
      waitForMaster: (port, { timeout: wait = 30_000 } = {}) => until(async () => {
        for (const s of sentinels) {
          const addr = await s.cli('SENTINEL', 'get-master-addr-by-name', name).catch(() => null);
          if (!addr || Number(addr[1]) !== port) return false;
        }
        return true;
      }, { timeout: wait, interval: 50, what: `every sentinel to name port ${port} as the master of ${name}` }),
      stop: async () => { await stopAll(); },
    };
    return group;
  } catch (err) {
    await stopAll();
    throw err;
  }
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
 * - resume({filter, direction}): forwards everything held and stops pausing,
 *   on the connections filter(conn) selects (default: all, and new ones
 *   too), in direction 'up', 'down' or 'both' (default).
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
    resume({ filter, direction = 'both' } = {}) {
      if (!filter) pauseNew = false;
      for (const c of select(filter)) {
        for (const dir of direction === 'both' ? ['up', 'down'] : [direction]) {
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

/**
 * Registers fn to run when test t ends (also when it fails): the last
 * registered runs first, so nodes stop before the Redis they use. Every fn
 * runs; the first error (e.g. a node that did not exit cleanly) fails the test.
 */
const endHooks = new WeakMap(); // test context → functions to run when it ends
export function onTestEnd(t, fn) {
  let fns = endHooks.get(t);
  if (!fns) {
    fns = [];
    endHooks.set(t, fns);
    t.after(async () => {
      let first;
      for (const f of fns.reverse()) {
        try { await f(); } catch (err) { first ??= err; }
      }
      if (first) throw first;
    });
  }
  fns.push(fn);
}

/**
 * A MONITOR connection to the Redis on port: lines holds every command
 * Redis logged since (raw MONITOR lines, latin1), count(pred) how many
 * match. sync(redis) resolves once Redis's own log has caught up with
 * everything sent before it (an ECHO of a fresh mark, through redis.cli).
 */
export async function startMonitor(port) {
  const sock = net.connect({ host: '127.0.0.1', port });
  sock.setEncoding('latin1');
  let buf = '';
  const lines = [];
  const waiters = new Set();
  sock.on('data', (d) => {
    buf += d;
    let end;
    while ((end = buf.indexOf('\r\n')) >= 0) {
      lines.push(buf.slice(0, end));
      buf = buf.slice(end + 2);
    }
    for (const w of waiters) w();
  });
  const seen = (text) => withTimeout(new Promise((resolve) => {
    const check = () => { if (lines.some((l) => l.includes(text))) { waiters.delete(check); resolve(); } };
    waiters.add(check);
    check();
  }), 5000, `MONITOR to show ${text}`);
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  sock.write('MONITOR\r\n');
  await seen('+OK');
  return {
    lines,
    count: (pred) => lines.filter(pred).length,
    async sync(redis) {
      const mark = `mark-${Math.random().toString(16).slice(2)}-${Date.now()}`;
      await redis.cli('ECHO', mark);
      await seen(`"ECHO" "${mark}"`);
    },
    close() { sock.destroy(); },
  };
}

// Stores a message of topic as the publish script would (prefix "herald"),
// telling the nodes (PUBLISH) only when publish is true: a pub/sub message
// lost on its way, which the next one's prev reveals. Resolves its id.
const INJECT_SCRIPT = `
    local epoch = redis.call('HGET', KEYS[1], 'e')
    local prev = redis.call('HGET', KEYS[3], 'l') or '0'
    local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
    redis.call('XADD', KEYS[2], seq .. '-0', 'd', ARGV[1], 't', ARGV[2], 'p', prev, 'v', '')
    redis.call('HSET', KEYS[3], 'e', epoch, 'l', seq)
    if ARGV[3] == '1' then
      redis.call('PUBLISH', KEYS[4], epoch .. ':' .. seq .. ':' .. prev .. ':' .. ARGV[2] .. ':0:' .. ARGV[1])
    end
    return epoch .. '-' .. seq`;

export function injectMessage(redis, topic, data, { publish: tell = true } = {}) {
  const keys = ['hub', `s:${topic}`, `m:${topic}`, `c:${topic}`].map((k) => `{herald}:${k}`);
  return redis.cli('EVAL', INJECT_SCRIPT, '4', ...keys, data, String(Date.now()), tell ? '1' : '0');
}

// ---------------------------------------------------------------------------
// herald nodes

export const NODE_NAMES = ['A', 'B', 'C', 'D', 'E'];

/**
 * The cluster section herald takes (SPEC §5), with the given Redis URL
 * (none when extra names sentinels).
 */
export function clusterConfig(redisUrl, extra = {}) {
  const base = extra.sentinels ? {} : { redis: redisUrl };
  return { ...base, prefix: 'herald', timeout_ms: 2000, ...extra };
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

/**
 * A steady publisher over nodes (round robin, `lanes` requests in flight),
 * each message with unique data. Records every outcome (acked: {id, topic,
 * data, at: when answered}); any answer other than 201 and 503
 * unavailable/outcome_unknown fails the test.
 */
export function steadyPublisher(nodes, topic, { lanes = 2 } = {}) {
  const state = { acked: [], unknown: [], refused: [], errors: [], running: true, n: 0 };
  const lane = async () => {
    while (state.running) {
      const k = state.n++;
      const node = nodes[k % nodes.length];
      const data = `p${k}`;
      let res;
      try {
        res = await publish(node.url, topic, data);
      } catch (err) {
        state.errors.push(`${data} on ${node.name}: ${err.message}`);
        continue;
      }
      if (res.status === 201) state.acked.push({ id: res.json.id, topic, data, at: Date.now() });
      else if (res.status === 503 && res.json?.error === 'outcome_unknown') state.unknown.push(data);
      else if (res.status === 503 && res.json?.error === 'unavailable') {
        state.refused.push(data);
        await sleep(20); // a refusal is immediate: do not spin
      } else state.errors.push(`${data} on ${node.name}: ${res.status} ${res.text}`);
    }
  };
  const done = Promise.all(Array.from({ length: lanes }, lane));
  state.stop = async () => { state.running = false; await done; };
  state.waitAcked = (n, timeout = 20_000) => until(() => state.acked.length >= n,
    { timeout, what: () => `${n} acknowledged publishes (have ${state.acked.length}, refused ${state.refused.length}, unknown ${state.unknown.length}, errors ${JSON.stringify(state.errors.slice(0, 3))})` });
  return state;
}

/**
 * The newest of ids (in the newest epoch, which the publisher saw last): not
 * the last answered, since with several lanes in flight answers come out of
 * seq order.
 */
export function newestId(ids) {
  const epoch = splitId(ids.at(-1)).epoch;
  return ids.filter((id) => splitId(id).epoch === epoch)
    .reduce((a, b) => (splitId(b).seq > splitId(a).seq ? b : a));
}

/** Checks one subscriber's items after a steady publisher ran; returns assertSequence's result. */
export function checkDelivery(label, items, pub, { gapsAllowed }) {
  assert.deepEqual(pub.errors, [], 'publisher errors');
  const result = assertSequence(items, { label, acked: pub.acked, topics: [pub.acked[0].topic] });
  const allowed = new Set([...pub.acked.map((a) => a.data), ...pub.unknown]);
  const refused = new Set(pub.refused);
  for (const m of result.messages) {
    assert.ok(!refused.has(m.data), `${label}: ${m.id} carries ${m.data}, whose publish was refused with 503 unavailable`);
    assert.ok(allowed.has(m.data), `${label}: ${m.id} carries ${m.data}, which nobody published`);
  }
  const byData = new Map(pub.acked.map((a) => [a.data, a.id]));
  for (const m of result.messages) {
    if (byData.has(m.data)) assert.equal(m.id, byData.get(m.data), `${label}: ${m.data} delivered with the id its publisher got`);
  }
  if (!gapsAllowed) assert.deepEqual(result.gaps, [], `${label}: nothing was lost, so no gap`);
  return result;
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

/**
 * Has Redis refuse, while during() runs, every read that would have to write
 * the hub afresh (-OOM: memory full with the hub key set aside). The limit is
 * set before the hub leaves and lifted after it is back, so no read finds the
 * hub missing while it may write it (a new epoch): the epoch does not change.
 */
export async function refuseReads(redis, during) {
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
  await redis.cli('RENAME', '{herald}:hub', '{herald}:hub-away');
  try {
    return await during();
  } finally {
    await redis.cli('RENAME', '{herald}:hub-away', '{herald}:hub');
    await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
  }
}
