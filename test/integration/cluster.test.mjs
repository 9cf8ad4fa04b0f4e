// Cluster mode (SPEC §5): two herald nodes sharing one redis-server act as
// one hub. A message published on A reaches subscribers of every transport
// on B with the same id; an id issued by A is a cursor on B; a batch keeps
// its order; with Redis stopped, publishing answers 503 at once, /healthz
// says so and subscribers stay connected; once Redis is back, publishing
// and delivery resume. Also run against herald-tsan (the engine thread
// talks to the workers). A missing redis-server is a failure, not a skip:
// deps/install.sh installs it.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startHerald, subscribe, openWS, publish, publishOk, publishBatch, request, until, assertError,
} from '../lib/harness.mjs';

const TIMEOUT_MS = 1000; // cluster.timeout_ms of both nodes
const PREFIX = `t${process.pid}`;

// ---------------------------------------------------------------- redis-server, this file's own

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function redisCli(port, ...args) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--raw', ...args], { timeout: 5000 },
      (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
  });
}

async function startRedisServer(port) {
  const dir = mkdtempSync(join(tmpdir(), 'herald-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  const failed = new Promise((_, reject) => {
    child.on('error', (err) => reject(new Error(`redis-server could not start (deps/install.sh installs it): ${err.message}`)));
    child.on('exit', (code) => reject(new Error(`redis-server exited (${code}): ${out}`)));
  });
  await Promise.race([failed, until(() => /Ready to accept connections/.test(out), { timeout: 5000, what: 'redis-server to start' })]);
  failed.catch(() => {});
  return {
    port,
    child,
    async stop() {
      child.kill('SIGKILL');
      await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.on('exit', resolve)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// Live delivery on a node starts once its SUBSCRIBE to the topic's channel is confirmed.
async function subscribedOnRedis(topic, nodes) {
  const channel = `{${PREFIX}}:c:${topic}`;
  await until(async () => Number((await redisCli(redis.port, 'PUBSUB', 'NUMSUB', channel)).split('\n')[1]) >= nodes,
    { timeout: 5000, what: `${nodes} node(s) subscribed to ${channel}` });
}

let redisPort;
let redis;
let a;
let b;

function nodeConfig(workers) {
  return { workers, cluster: { redis: `redis://127.0.0.1:${redisPort}`, prefix: PREFIX, timeout_ms: TIMEOUT_MS } };
}

before(async () => {
  redisPort = await freePort();
  redis = await startRedisServer(redisPort);
  a = await startHerald({ config: nodeConfig(1) });
  b = await startHerald({ config: nodeConfig(2) });
  await a.waitForStderr(/cluster: Redis \S+ is up/);
  await b.waitForStderr(/cluster: Redis \S+ is up/);
});

after(async () => {
  await a?.stop();
  await b?.stop();
  await redis?.stop();
});

// ---------------------------------------------------------------- tests

test('a message published on A reaches SSE, WebSocket and long-poll on B with the same id', async () => {
  const topic = 'c-fanout';
  const sse = await subscribe(b.url, `/events?topic=${topic}`);
  const ws = await openWS(b.url, `/ws?topic=${topic}`);
  await subscribedOnRedis(topic, 1);
  const poll = request(`${b.url}/poll?topic=${topic}&timeout=5`);
  // The long-poll waits on B: give it a moment to register before publishing.
  await until(async () => (await request(`${b.url}/topics/${topic}`)).json?.subscribers >= 3,
    { what: 'the long-poll to wait on B' });
  const sent = await publishOk(a.url, topic, 'from A');
  const [event] = await sse.waitEvents(1);
  assert.equal(event.id, sent.id);
  assert.equal(event.data, 'from A');
  const [envelope] = (await ws.waitFor((c) => c.envelopes(topic).length >= 1) && ws.envelopes(topic));
  assert.equal(envelope.id, sent.id);
  assert.equal(envelope.data, 'from A');
  const polled = await poll;
  assert.equal(polled.status, 200);
  assert.deepEqual(polled.json.messages.map((m) => [m.id, m.data]), [[sent.id, 'from A']]);
  sse.close();
  ws.close();
});

test('resume on B with an id issued by A gets exactly the later messages', async () => {
  const topic = 'c-resume';
  const first = await publishOk(a.url, topic, 'one');
  const later = [await publishOk(a.url, topic, 'two'), await publishOk(b.url, topic, 'three')];
  const sse = await subscribe(b.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': first.id } });
  const events = await sse.waitEvents(2);
  assert.deepEqual(events.map((e) => [e.id, e.data]), [[later[0].id, 'two'], [later[1].id, 'three']]);
  await sse.expectNoMore(200);
  sse.close();
  const polled = await request(`${b.url}/poll?topic=${topic}&since=${first.id}&timeout=0`);
  assert.deepEqual(polled.json.messages.map((m) => m.id), later.map((m) => m.id));
  assert.equal(polled.json.cursor, later[1].id);
  assert.equal(polled.json.gap, false);
});

test('a /publish batch on A arrives on B in order, with consecutive ids', async () => {
  const topics = ['c-batch-1', 'c-batch-2'];
  const sse = await subscribe(b.url, `/events?topic=${topics[0]}&topic=${topics[1]}`);
  await subscribedOnRedis(topics[0], 1);
  await subscribedOnRedis(topics[1], 1);
  const items = Array.from({ length: 10 }, (_, i) => ({ topic: topics[i % 2], data: `m${i}` }));
  const res = await publishBatch(a.url, items);
  assert.equal(res.status, 201, res.text);
  const ids = res.json.messages.map((m) => m.id);
  const events = await sse.waitEvents(10);
  assert.deepEqual(events.map((e) => [e.id, e.data]), items.map((it, i) => [ids[i], it.data]));
  sse.close();
});

test('a cursor beyond what B has seen, but issued, is accepted; a malformed one is refused', async () => {
  const topic = 'c-cursor';
  const sent = await publishOk(a.url, 'c-cursor-other', 'B never subscribed to this topic');
  const polled = await request(`${b.url}/poll?topic=${topic}&since=${sent.id}&timeout=0`);
  assert.equal(polled.status, 200, polled.text);
  assert.deepEqual(polled.json.messages, []);
  assertError(await request(`${b.url}/poll?topic=${topic}&since=nonsense&timeout=0`), 400, 'invalid_cursor');
});

test('Redis stopped: publish 503 unavailable at once, /healthz 503, subscribers stay; back: deliveries resume', async () => {
  const topic = 'c-outage';
  const sse = await subscribe(b.url, `/events?topic=${topic}`);
  await subscribedOnRedis(topic, 1);
  await publishOk(a.url, topic, 'before');
  await sse.waitEvents(1);
  const wsPublisher = await openWS(a.url, '/ws');

  redis.child.kill('SIGSTOP');
  try {
    // The first publish may already be on its way: then its outcome is unknown.
    const started = Date.now();
    const first = await publish(a.url, topic, 'during');
    assert.equal(first.status, 503, first.text);
    assert.ok(['unavailable', 'outcome_unknown'].includes(first.json.error), first.text);
    assert.ok(Date.now() - started < TIMEOUT_MS + 1500, `answered after ${Date.now() - started} ms`);
    await until(async () => (await request(`${a.url}/healthz`)).status === 503,
      { timeout: TIMEOUT_MS * 3, what: '/healthz on A to say 503' });
    const health = await request(`${a.url}/healthz`);
    const down = await request(`${a.url}/metrics`);
    assert.match(down.text, /^herald_cluster_up 0$/m);
    assert.match(down.text, /^herald_cluster_state\{state="up"\} 0$/m);
    assertError(health, 503, 'unavailable');
    assert.match(health.text, /redis/);
    const t0 = Date.now();
    const refused = await publish(a.url, topic, 'during');
    assertError(refused, 503, 'unavailable');
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.ok(Date.now() - t0 < 500, 'refused at once');
    const wsReply = await wsPublisher.call({ op: 'publish', topic, data: 'during', ref: 'p' });
    assert.equal(wsReply.type, 'error', JSON.stringify(wsReply));
    assert.equal(wsReply.error, 'unavailable');
    assert.equal(wsReply.ref, 'p');
    assert.equal(sse.stream.ended, false, 'the subscriber on B stays connected');
  } finally {
    redis.child.kill('SIGCONT');
  }
  await until(async () => (await request(`${a.url}/healthz`)).status === 200,
    { timeout: 10_000, what: '/healthz on A to recover' });
  await until(async () => (await request(`${b.url}/healthz`)).status === 200,
    { timeout: 10_000, what: '/healthz on B to recover' });
  await subscribedOnRedis(topic, 1);
  const up = await request(`${a.url}/metrics`);
  assert.match(up.text, /^herald_cluster_up 1$/m);
  assert.match(up.text, /^herald_cluster_state\{state="up"\} 1$/m);
  assert.match(up.text, /^herald_cluster_reconnects_total [1-9]/m);
  const after = await publishOk(a.url, topic, 'after');
  await sse.waitFor((s) => s.events.some((e) => e.id === after.id), { what: 'the message published after the outage' });
  assert.equal(sse.stream.ended, false);
  sse.close();
  wsPublisher.close();
});

test('a pub/sub message lost on its way is read from Redis and delivered in order', async () => {
  const topic = 'c-lost';
  const sse = await subscribe(b.url, `/events?topic=${topic}`);
  await subscribedOnRedis(topic, 1);
  const first = await publishOk(a.url, topic, 'first');
  await sse.waitEvents(1);
  // What the publish script does, except that the middle message is never
  // published on the channel: as if the pub/sub connection had dropped it.
  const hub = `{${PREFIX}}:hub`;
  const stream = `{${PREFIX}}:s:${topic}`;
  const meta = `{${PREFIX}}:m:${topic}`;
  const channel = `{${PREFIX}}:c:${topic}`;
  const script = `
    local epoch = redis.call('HGET', KEYS[1], 'e')
    local prev = tonumber(ARGV[1])
    local lost = redis.call('HINCRBY', KEYS[1], 's', 1)
    redis.call('XADD', KEYS[2], lost .. '-0', 'd', 'lost', 't', ARGV[2], 'p', prev, 'v', '')
    local next = redis.call('HINCRBY', KEYS[1], 's', 1)
    redis.call('XADD', KEYS[2], next .. '-0', 'd', 'next', 't', ARGV[2], 'p', lost, 'v', '')
    redis.call('HSET', KEYS[3], 'l', next)
    redis.call('PUBLISH', KEYS[4], epoch .. ':' .. next .. ':' .. lost .. ':' .. ARGV[2] .. ':0:next')
    return {lost, next}`;
  const [, seq] = first.id.split('-');
  const out = await redisCli(redis.port, 'EVAL', script, '4', hub, stream, meta, channel, seq, String(Date.now()));
  const [lostSeq, nextSeq] = out.split('\n').map(Number);
  const epoch = first.id.split('-')[0];
  const events = await sse.waitEvents(3);
  assert.deepEqual(events.map((e) => [e.id, e.data]),
    [[first.id, 'first'], [`${epoch}-${lostSeq}`, 'lost'], [`${epoch}-${nextSeq}`, 'next']]);
  const metrics = await request(`${b.url}/metrics`);
  assert.match(metrics.text, /^herald_cluster_lost_reads_total [1-9]/m);
  const after = await publishOk(a.url, topic, 'after');
  await sse.waitFor((st) => st.events.length === 4, { what: 'the message after' });
  assert.equal(sse.events[3].id, after.id);
  sse.close();
});

test('Redis killed and restarted empty: a new epoch, and publishing works again', async () => {
  const before = await publishOk(a.url, 'c-restart', 'before');
  await redis.stop();
  const refused = await publish(a.url, 'c-restart', 'while down');
  assert.equal(refused.status, 503, refused.text);
  redis = await startRedisServer(redisPort);
  await until(async () => (await request(`${a.url}/healthz`)).status === 200,
    { timeout: 10_000, what: '/healthz on A to recover' });
  const sse = await subscribe(b.url, '/events?topic=c-restart');
  await subscribedOnRedis('c-restart', 1);
  const after = await publishOk(a.url, 'c-restart', 'after');
  assert.notEqual(after.id.split('-')[0], before.id.split('-')[0], 'Redis lost everything: a new epoch');
  const [event] = await sse.waitEvents(1, { timeout: 10_000 });
  assert.equal(event.id, after.id);
  sse.close();
});
