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
import { createServer, connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  startHerald, subscribe, openWS, publish, publishOk, publishBatch, request, until, assertError,
} from '../lib/harness.mjs';

const TIMEOUT_MS = 1000; // cluster.timeout_ms of both nodes
const MISSED = 1500; // messages published while a node is away: more than one read (1024) returns
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

// Several commands on one connection, sent at once (no round trip between
// them): resolves once Redis answered them all (answers not parsed beyond counting lines).
function redisPipeline(port, commands) {
  const encode = (args) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => sock.write(commands.map(encode).join('')));
    let text = '';
    sock.setEncoding('utf8').on('data', (d) => {
      text += d;
      // Every command here answers with one line (integer, status or error).
      if (text.split('\r\n').length > commands.length) { sock.end(); resolve(text.split('\r\n').slice(0, commands.length)); }
    });
    sock.on('error', reject);
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

// What the publish script does for one message (without trimming), from
// outside herald; publish: false stores it without telling any node.
const INJECT_SCRIPT = `
    local epoch = redis.call('HGET', KEYS[1], 'e')
    local prev = redis.call('HGET', KEYS[3], 'l') or '0'
    local seq
    for i = 1, tonumber(ARGV[4]) do
      seq = redis.call('HINCRBY', KEYS[1], 's', 1)
      redis.call('XADD', KEYS[2], seq .. '-0', 'd', ARGV[1], 't', ARGV[2], 'p', prev, 'v', '')
      redis.call('HSET', KEYS[3], 'e', epoch, 'l', seq)
      if ARGV[3] == '1' then
        redis.call('PUBLISH', KEYS[4], epoch .. ':' .. seq .. ':' .. prev .. ':' .. ARGV[2] .. ':0:' .. ARGV[1])
      end
      prev = seq
    end
    return seq`;

// count messages, all with data; resolves the last one's seq.
function injectArgs(topic, data, publish, count = 1) {
  const keys = ['hub', `s:${topic}`, `m:${topic}`, `c:${topic}`].map((k) => `{${PREFIX}}:${k}`);
  return ['EVAL', INJECT_SCRIPT, '4', ...keys, data, String(Date.now()), publish ? '1' : '0', String(count)];
}

async function injectMessage(topic, data, { publish = true } = {}) {
  return Number(await redisCli(redis.port, ...injectArgs(topic, data, publish)));
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

test('publishes pipelined on one connection are served in order: each answer is its own request\'s message', async () => {
  // A publish holds its connection until Redis answers; requests pipelined
  // behind it wait as held input, and bytes that arrive while the held ones
  // are being resumed must queue behind them.
  const topic = 'c-pipeline';
  const n = 900; // within history.max_messages (1000), so every message can be read back
  const sock = connect(a.port, a.host);
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  let text = '';
  sock.setEncoding('utf8').on('data', (d) => { text += d; });
  try {
    for (let i = 0; i < n; i++) {
      const body = `p${i}`;
      sock.write(`POST /topics/${topic} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      if (i % 4 === 3) await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await until(() => (text.match(/HTTP\/1\.1 201/g) ?? []).length === n,
      { timeout: 20_000, what: () => `${n} answers (got ${(text.match(/HTTP\/1\.1 \d+/g) ?? []).length})` });
  } finally {
    sock.destroy();
  }
  const ids = [...text.matchAll(/"id":"([^"]+)"/g)].map((m) => m[1]);
  assert.equal(ids.length, n);
  const answer = await request(`${b.url}/poll?topic=${topic}&since=earliest&limit=1000&timeout=0`);
  const dataOf = new Map(answer.json.messages.map((m) => [m.id, m.data]));
  const wrong = ids.map((id, i) => [i, id, dataOf.get(id)]).filter(([i, , data]) => data !== `p${i}`);
  assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} answers name another request's message`);
  assert.deepEqual(answer.json.messages.map((m) => m.data), ids.map((_, i) => `p${i}`), 'stored in request order');
});

test('subscribing and publishing at once: each new subscriber gets the message exactly once', async () => {
  // The SUBSCRIBE on Redis may be confirmed after the subscriber got its
  // preamble: what was published in between is read from Redis then.
  const clients = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
    const topic = `c-race-${i}`;
    const sse = await subscribe(b.url, `/events?topic=${topic}`);
    const sent = await publishOk(a.url, topic, `m${i}`);
    return { sse, sent };
  }));
  for (const { sse, sent } of clients) {
    const [event] = await sse.waitEvents(1);
    assert.equal(event.id, sent.id);
  }
  await clients[0].sse.expectNoMore(200);
  for (const { sse } of clients) {
    assert.equal(sse.events.length, 1, 'no duplicate');
    sse.close();
  }
});

test('a poll without since on B reads only what is published after it arrived, whatever B saw', async () => {
  const topic = 'c-arrival';
  const old = [await publishOk(a.url, topic, 'old 1'), await publishOk(a.url, topic, 'old 2')];
  const now = await request(`${b.url}/poll?topic=${topic}&timeout=0`);
  assert.equal(now.status, 200);
  assert.deepEqual(now.json.messages, []);
  assert.equal(now.json.cursor, old[1].id, 'the cluster\'s newest id, not B\'s');
  const waiting = request(`${b.url}/poll?topic=${topic}&timeout=5`);
  await until(async () => (await request(`${b.url}/topics/${topic}`)).json?.subscribers >= 1,
    { what: 'the long-poll to wait on B' });
  const fresh = await publishOk(a.url, topic, 'new');
  const answer = await waiting;
  assert.deepEqual(answer.json.messages.map((m) => m.id), [fresh.id]);
});

test('a new subscriber on a node that did not follow its topic gets no older message', async () => {
  const topic = 'c-stale';
  await publishOk(a.url, topic, 'old 1');
  await publishOk(a.url, topic, 'old 2');
  const sse = await subscribe(b.url, `/events?topic=${topic}`);
  await subscribedOnRedis(topic, 1);
  const fresh = await publishOk(a.url, topic, 'new');
  const [event] = await sse.waitEvents(1);
  assert.equal(event.id, fresh.id);
  await sse.expectNoMore(200);
  sse.close();
});

test('a topic stays subscribed on Redis a while after its last subscriber left (long-polls come back)', async () => {
  const topic = 'c-linger';
  const channel = `{${PREFIX}}:c:${topic}`;
  const sse = await subscribe(b.url, `/events?topic=${topic}`);
  await subscribedOnRedis(topic, 1);
  sse.close();
  await until(async () => (await request(`${b.url}/topics/${topic}`)).json?.subscribers !== 1,
    { what: 'the subscriber to leave B' });
  await new Promise((resolve) => setTimeout(resolve, 300)); // what an unsubscribe would take, many times over
  assert.equal((await redisCli(redis.port, 'PUBSUB', 'NUMSUB', channel)).split('\n')[1], '1');
  // A poll coming back is served as usual, and a message published now reaches it.
  const waiting = request(`${b.url}/poll?topic=${topic}&timeout=5`);
  await until(async () => (await request(`${b.url}/topics/${topic}`)).json?.subscribers >= 1,
    { what: 'the long-poll to wait on B' });
  const sent = await publishOk(a.url, topic, 'again');
  assert.deepEqual((await waiting).json.messages.map((m) => m.id), [sent.id]);
});

test('history trimmed in Redis: a resume on another node gets a gap, then what is held', async () => {
  const topic = 'c-trim';
  const small = await startHerald({ config: { ...nodeConfig(1), history: { max_messages: 2 } } });
  try {
    await small.waitForStderr(/cluster: Redis \S+ is up/);
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await publishOk(small.url, topic, `m${i}`)).id);
    const polled = await request(`${b.url}/poll?topic=${topic}&since=${ids[0]}&timeout=0`);
    assert.equal(polled.status, 200, polled.text);
    assert.deepEqual(polled.json.messages.map((m) => m.id), ids.slice(3));
    assert.equal(polled.json.gap, true);
    assert.deepEqual(polled.json.gaps, [{ topic, from: ids[0], to: ids[2] }]);
    const sse = await subscribe(b.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': ids[3] } });
    const [event] = await sse.waitEvents(1);
    assert.equal(event.id, ids[4], 'from a cursor still held: no gap');
    sse.close();
    const earliest = await request(`${b.url}/poll?topic=${topic}&since=earliest&timeout=0`);
    assert.deepEqual(earliest.json.messages.map((m) => m.id), ids.slice(3));
    assert.equal(earliest.json.gap, false);
  } finally {
    await small.stop();
  }
});

test('a cursor beyond what B has seen, but issued, is accepted; a malformed one is refused', async () => {
  const topic = 'c-cursor';
  const sent = await publishOk(a.url, 'c-cursor-other', 'B never subscribed to this topic');
  const polled = await request(`${b.url}/poll?topic=${topic}&since=${sent.id}&timeout=0`);
  assert.equal(polled.status, 200, polled.text);
  assert.deepEqual(polled.json.messages, []);
  assertError(await request(`${b.url}/poll?topic=${topic}&since=nonsense&timeout=0`), 400, 'invalid_cursor');
});

test('a cursor of the epoch beyond the cluster\'s newest id: 400 on SSE and poll, an error frame that subscribes nothing on WebSocket', async () => {
  const topic = 'c-future';
  const kept = 'c-future-kept';
  const { id } = await publishOk(a.url, topic, 'newest');
  const [epoch, seq] = id.split('-');
  const future = `${epoch}-${BigInt(seq) + 1000n}`;
  assertError(await request(`${b.url}/events?topic=${topic}`, { headers: { 'Last-Event-ID': future } }), 400, 'invalid_cursor');
  assertError(await request(`${b.url}/poll?topic=${topic}&since=${future}&timeout=0`), 400, 'invalid_cursor');
  const ws = await openWS(b.url, '/ws');
  try {
    await ws.ok({ op: 'subscribe', topics: [kept] });
    const refused = await ws.call({ op: 'subscribe', topics: [topic], since: future });
    assert.equal(refused.type, 'error', JSON.stringify(refused));
    assert.equal(refused.error, 'invalid_cursor');
    await ws.ok({ op: 'subscribe', topics: [`${topic}-other`], since: id }); // an issued id is fine
    const m = await publishOk(a.url, kept, 'still delivered');
    await publishOk(a.url, topic, 'not subscribed');
    const got = await ws.waitEnvelopes(1, { topic: kept });
    assert.equal(got[0].id, m.id);
    await ws.expectNoMore(300, { pred: (j) => j.topic === topic });
    await ws.assertUsable();
  } finally {
    ws.close();
  }
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
  // The middle message is stored but never published on the channel: as
  // if the pub/sub connection had dropped it.
  const epoch = first.id.split('-')[0];
  const lostSeq = await injectMessage(topic, 'lost', { publish: false });
  const nextSeq = await injectMessage(topic, 'next');
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

// Stores one message per (topic, publish) pair, in one atomic step (as the
// publish script would, one after the other); publish '0' stores it without
// telling any node. Resolves the seqs.
const INJECT_MANY_SCRIPT = `
    local epoch = redis.call('HGET', KEYS[1], 'e')
    local prefix, now = ARGV[1], ARGV[2]
    local seqs = {}
    for i = 3, #ARGV, 2 do
      local topic, publish = ARGV[i], ARGV[i + 1]
      local meta = prefix .. ':m:' .. topic
      local prev = redis.call('HGET', meta, 'l') or '0'
      local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
      redis.call('XADD', prefix .. ':s:' .. topic, seq .. '-0', 'd', 'x' .. seq, 't', now, 'p', prev, 'v', '')
      redis.call('HSET', meta, 'e', epoch, 'l', seq)
      if publish == '1' then
        redis.call('PUBLISH', prefix .. ':c:' .. topic, epoch .. ':' .. seq .. ':' .. prev .. ':' .. now .. ':0:x' .. seq)
      end
      seqs[#seqs + 1] = seq
    end
    return seqs`;

async function injectMany(pairs) {
  const args = pairs.flatMap(([topic, publish]) => [topic, publish ? '1' : '0']);
  const out = await redisCli(redis.port, 'EVAL', INJECT_MANY_SCRIPT, '1', `{${PREFIX}}:hub`, `{${PREFIX}}`, String(Date.now()), ...args);
  return out.split('\n').map(Number);
}

test('a pub/sub message lost on its way, with later messages of other topics: all delivered in seq order across topics', async () => {
  const [t1, t2] = ['c-lost-1', 'c-lost-2'];
  const sse = await subscribe(b.url, `/events?topic=${t1}&topic=${t2}`);
  await subscribedOnRedis(t1, 1);
  await subscribedOnRedis(t2, 1);
  const first = await publishOk(a.url, t1, 'first');
  await sse.waitEvents(1);
  const epoch = first.id.split('-')[0];
  // In one step: t1's next message is lost on pub/sub, the one after reveals
  // it, then t2 and t1 go on. The read of t1 sees all of t1's, newer than
  // t2's held message: they must still come out in seq order.
  const seqs = await injectMany([[t1, false], [t1, true], [t2, true], [t1, true], [t2, true]]);
  const events = await sse.waitEvents(1 + seqs.length);
  assert.deepEqual(events.map((e) => [e.id, e.data]),
    [[first.id, 'first'], ...seqs.map((q) => [`${epoch}-${q}`, `x${q}`])]);
  const after = await publishOk(a.url, t2, 'after');
  await sse.waitFor((st) => st.events.length === 2 + seqs.length, { what: 'the message after' });
  assert.equal(sse.events.at(-1).id, after.id);
  sse.close();
});

test('after a reconnect, what was published meanwhile is read and delivered in order (more than one read holds)', async () => {
  const topic = 'c-missed';
  const sse = await subscribe(b.url, `/events?topic=${topic}`);
  await subscribedOnRedis(topic, 1);
  const first = await publishOk(a.url, topic, 'first');
  await sse.waitEvents(1);
  // Every node's connections are dropped, and a message is stored before
  // they come back (herald waits at least 125 ms before reconnecting).
  const reconnects = (await request(`${b.url}/metrics`)).text.match(/^herald_cluster_reconnects_total (\d+)$/m)[1];
  const answers = await redisPipeline(redis.port, [['CLIENT', 'KILL', 'TYPE', 'pubsub'],
    ['CLIENT', 'KILL', 'TYPE', 'normal'], injectArgs(topic, 'missed', false, MISSED)]);
  const missedSeq = Number(answers[2].slice(1));
  await until(async () => (await request(`${b.url}/metrics`)).text.match(/^herald_cluster_reconnects_total (\d+)$/m)[1] !== reconnects,
    { timeout: 10_000, what: 'B to reconnect' });
  const events = await sse.waitEvents(1 + MISSED, { timeout: 10_000 });
  const epoch = first.id.split('-')[0];
  const firstMissed = missedSeq - MISSED + 1;
  assert.deepEqual(events.map((e) => [e.id, e.data]), [[first.id, 'first'],
    ...Array.from({ length: MISSED }, (_, i) => [`${epoch}-${firstMissed + i}`, 'missed'])]);
  assert.equal(sse.stream.ended, false);
  await until(async () => (await request(`${a.url}/healthz`)).status === 200, { what: 'A to reconnect' });
  const after = await publishOk(a.url, topic, 'after');
  await sse.waitFor((st) => st.events.length === 2 + MISSED, { what: 'the message after' });
  assert.equal(sse.events[1 + MISSED].id, after.id);
  sse.close();
});

test('Redis killed and restarted empty: a new epoch, a gap to subscribers, and publishing works again', async () => {
  const old = await subscribe(b.url, '/events?topic=c-restart');
  const oldWs = await openWS(b.url, '/ws?topic=c-restart');
  await subscribedOnRedis('c-restart', 1);
  const before = await publishOk(a.url, 'c-restart', 'before');
  await old.waitEvents(1);
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
  // (It may get a gap first: it subscribed while B was still in the old epoch.)
  await sse.waitFor((st) => st.events.some((e) => e.id === after.id), { timeout: 10_000, what: 'the new message' });
  sse.close();
  // Connected through the restart: a gap from its last id, then the new epoch's message.
  const newEpoch = after.id.split('-')[0];
  const events = await old.waitEvents(3, { timeout: 10_000 });
  assert.deepEqual(events.map((e) => [e.event, e.data && e.event === 'herald-gap' ? JSON.parse(e.data) : e.id]), [
    [undefined, before.id],
    ['herald-gap', { topic: 'c-restart', from: before.id, to: `${newEpoch}-0` }],
    [undefined, after.id],
  ]);
  const gap = await oldWs.waitJson((j) => j.type === 'gap');
  assert.deepEqual(gap, { type: 'gap', topic: 'c-restart', from: before.id, to: `${newEpoch}-0` });
  await oldWs.waitFor((c) => c.envelopes('c-restart').some((m) => m.id === after.id));
  old.close();
  oldWs.close();
});

test('after a new epoch, a topic\'s first message whose predecessor the node missed: the hole is read, both delivered in order', async () => {
  const [t, u] = ['c-epoch-hole', 'c-epoch-other'];
  const sse = await subscribe(b.url, `/events?topic=${t}&topic=${u}`);
  await subscribedOnRedis(t, 1);
  await subscribedOnRedis(u, 1);
  const before = await publishOk(a.url, t, 'before');
  await sse.waitFor((st) => st.events.some((e) => e.id === before.id), { what: 'the old epoch\'s message' });
  await redisCli(redis.port, 'FLUSHALL');
  // B learns the new epoch from another topic; then t's first message of
  // the new epoch is stored without telling any node, and its successor
  // (prev = that one) is published.
  const other = await publishOk(a.url, u, 'other');
  const epoch = other.id.split('-')[0];
  assert.notEqual(epoch, before.id.split('-')[0], 'FLUSHALL: a new epoch');
  await sse.waitFor((st) => st.events.some((e) => e.id === other.id), { what: 'the new epoch\'s first message' });
  const seqs = await injectMany([[t, false], [t, true]]);
  const ids = seqs.map((q) => `${epoch}-${q}`);
  await sse.waitFor((st) => st.events.some((e) => e.id === ids[1]), { what: 'the published successor' });
  const newEpoch = sse.events.filter((e) => e.event !== 'herald-gap' && e.id.startsWith(`${epoch}-`));
  assert.deepEqual(newEpoch.map((e) => [e.id, e.data]), [[other.id, 'other'], [ids[0], `x${seqs[0]}`], [ids[1], `x${seqs[1]}`]]);
  sse.close();
});

test('a node whose Redis cannot be reached: healthz 503, publish 503, subscribers accepted, clean stop', async () => {
  const nowhere = await freePort();
  const lone = await startHerald({ config: { cluster: { redis: `redis://127.0.0.1:${nowhere}`, timeout_ms: TIMEOUT_MS } } });
  try {
    const health = await request(`${lone.url}/healthz`);
    assertError(health, 503, 'unavailable');
    assertError(await publish(lone.url, 'c-lone', 'x'), 503, 'unavailable');
    const sse = await subscribe(lone.url, '/events?topic=c-lone');
    const resume = await subscribe(lone.url, '/events?topic=c-lone', { headers: { 'Last-Event-ID': '0badf00d-3' } });
    await lone.waitForStderr(/cluster: Redis 127\.0\.0\.1:\d+ is down/, 5000);
    assert.equal(sse.stream.ended, false);
    sse.close();
    resume.close();
  } finally {
    await lone.stop();
  }
});
