// Reads from Redis that cannot be answered (SPEC §5: a failure of Redis is
// said, never hidden; nothing unbounded): a read Redis refuses is a 503 or
// the end of the stream, never an empty answer whose cursor skips what lay
// in between; one topic whose key an operator gave another type stalls no
// other topic; reads waiting for Redis are bounded and dropped when their
// client went away; reads that found the link full go once it drains.
//
// Faults are injected with real Redis commands (SET over a herald key,
// CONFIG SET maxmemory, SCRIPT FLUSH), a stopped Redis, and a tiny bound on
// the bytes in flight (cluster.max_inflight_bytes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { publishOk, subscribe, openSSE, openWS, request, assertError, until, withTimeout } from '../lib/harness.mjs';
import {
  startRedis, startCluster, startProxy, startMonitor, waitHealthy, waitUnhealthy, poll, sseItems, freePort,
  waitForId, messageIds, onTestEnd, refuseReads,
} from '../lib/cluster.mjs';

const MARGIN_MS = 1500; // scheduling slack on a loaded 2-core machine / ASan
const CONFIG = { heartbeat_s: 1, cluster: { timeout_ms: 1000 } };

async function setup(t, n, { cluster: extra = {} } = {}) {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const config = { ...CONFIG, cluster: { ...CONFIG.cluster, ...extra } };
  const cluster = await startCluster(n, { redis, config });
  onTestEnd(t, () => cluster.stop());
  return { redis, ...cluster };
}

/**
 * Nodes A (straight to Redis) and B (through a proxy that can hold B's
 * commands while its pub/sub connection goes on), with a timeout_ms long
 * enough that a held read does not take B's link down.
 */
async function setupHeld(t, extra = {}) {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = await startProxy(redis.port);
  onTestEnd(t, () => proxy.close());
  // One worker: a subscriber that saw a live message tells that every subscriber of B has it.
  const config = { ...CONFIG, workers: 1, cluster: { timeout_ms: 10_000 }, ...extra };
  const cluster = await startCluster(2, { redis: [redis, proxy], config });
  onTestEnd(t, () => cluster.stop());
  const hold = () => proxy.pause({ filter: (c) => !c.pubsub, direction: 'up' });
  return { redis, proxy, hold, ...cluster };
}

/** GET /poll that must be refused: 503 unavailable with Retry-After. */
async function assertPollUnavailable(node, query, label) {
  const res = await request(`${node.url}/poll?${query}`);
  const json = assertError(res, 503, 'unavailable');
  assert.match(res.headers.get('retry-after') ?? '', /^\d+$/, `${label}: Retry-After`);
  return json;
}

test('a topic Redis cannot read (its key of another type) is a gap up to the cut in /poll, SSE and WebSocket resumes, the other topics are read; -OOM is 503, never an empty answer', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const m1 = await publishOk(A.url, 'bad', 'b1');
  const g1 = await publishOk(A.url, 'good', 'g1');
  // Another node's client, not disturbed by any of this.
  const bystander = await subscribe(B.url, '/events?topic=good');
  await redis.cli('SET', '{herald}:s:bad', 'an operator wrote here');
  const since = encodeURIComponent(m1.id);
  const badGap = { topic: 'bad', from: m1.id, to: g1.id }; // up to the read's cut

  // Polls: the bad topic alone or with a good one gets a gap for it (the client moves on),
  // never an empty answer that skips in silence nor a 503 it would retry forever.
  for (const query of [`topic=bad&since=${since}`, `topic=good&topic=bad&since=${since}`]) {
    const res = await request(`${B.url}/poll?${query}&timeout=0`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.gap, true, res.text);
    assert.deepEqual(res.json.gaps, [badGap], res.text);
    assert.deepEqual(messageIds(res.json.messages), query.includes('good') ? [g1.id] : [], res.text);
    assert.equal(res.json.cursor, g1.id, res.text);
  }
  await B.waitForStderr(/Redis refused a read: topic bad: WRONGTYPE \{herald\}:s:bad is a string, not a stream; a read from a cursor gets a gap for it/);

  // SSE resume: the gap, then the stream stays (no reconnect from the same cursor forever).
  const sse = await subscribe(B.url, '/events?topic=bad&topic=good', { headers: { 'Last-Event-ID': m1.id } });
  const resumed = await waitForId(sse, g1.id, { label: 'the SSE resume' });
  assert.ok(sse.events.some((e) => e.event === 'herald-gap' && JSON.parse(e.data).topic === 'bad'),
    JSON.stringify(sse.events));
  assert.deepEqual(messageIds(resumed), [g1.id]);

  // WebSocket: a subscribe op with since is acknowledged, with the gap; so is the upgrade's.
  const ws = await openWS(B.url, '/ws');
  const acked = await ws.call({ op: 'subscribe', topics: ['bad'], since: m1.id, ref: 'r1' });
  assert.notEqual(acked.type, 'error', JSON.stringify(acked));
  await ws.assertUsable();
  const wsUpgrade = await openWS(B.url, `/ws?topic=bad&topic=good&since=${since}`);
  await wsUpgrade.waitEnvelopes(1, { topic: 'good' });
  await wsUpgrade.assertUsable();
  assert.equal(sse.stream.ended, false, 'the SSE resume stays');
  sse.close();
  wsUpgrade.close();

  // -OOM: the read script has to create a lost hub, which Redis refuses past maxmemory.
  await redis.cli('DEL', '{herald}:s:bad');
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
  await redis.cli('DEL', '{herald}:hub');
  try {
    await assertPollUnavailable(B, `topic=good&since=${encodeURIComponent(g1.id)}&timeout=0`, '-OOM');
    await B.waitForStderr(/Redis refused a read: .*OOM/);
  } finally {
    await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
  }

  assert.equal(bystander.stream.ended, false, 'the bystander stream stays');
  const g2 = await publishOk(A.url, 'good', 'g2');
  await waitForId(bystander, g2.id, { label: 'the bystander on B' });
  bystander.close();
  ws.close();
});

test('a topic whose stream key has another type stalls no other topic: its catch-up is a gap, the others deliver in order', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const sseGood = await subscribe(B.url, '/events?topic=good');
  const g1 = await publishOk(A.url, 'good', 'g1');
  await waitForId(sseGood, g1.id, { label: 'good on B' });
  await publishOk(A.url, 'bad', 'b1');
  await redis.cli('SET', '{herald}:s:bad', 'an operator wrote here');
  // A new subscriber of the bad topic on B: B's catch-up round reads it (from where it started).
  const sseBad = await subscribe(B.url, '/events?topic=bad');
  await B.waitForStderr(/WRONGTYPE \{herald\}:s:bad is a string, not a stream; its subscribers on this node get a gap/);
  const ids = [];
  for (let i = 2; i <= 5; i++) ids.push((await publishOk(A.url, 'good', `g${i}`)).id);
  const items = await waitForId(sseGood, ids.at(-1), { label: 'good on B', timeout: 5000 });
  assert.deepEqual(messageIds(items), [g1.id, ...ids], 'the good topic delivers, in order');
  assert.equal(sseBad.stream.ended, false);
  sseGood.close();
  sseBad.close();
});

test('reads waiting for Redis: those whose client left are not sent when it is back; a poll without a cursor is answered at its timeout with the newest id, not refused', async (t) => {
  const { redis, A } = await setup(t, 1);
  const m1 = await publishOk(A.url, 'wait', 'm1');
  await redis.kill('SIGTERM');
  await waitUnhealthy(A);
  // Each is answered at its timeout with its cursor; its read is cancelled.
  const N = 60;
  const answers = await Promise.all(Array.from({ length: N }, () => poll(A, ['wait'], { since: m1.id, timeout: 1 })));
  for (const a of answers) assert.equal(a.cursor, m1.id);
  // Without a cursor, a new subscriber is not refused (SPEC §5): at its timeout, not held until
  // Redis is back, it gets nothing and the node's newest id, which skips nothing.
  const t0 = Date.now();
  const res = await request(`${A.url}/poll?topic=wait&timeout=1`);
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json.messages, []);
  assert.equal(res.json.cursor, m1.id, 'the newest id this node saw');
  assert.ok(Date.now() - t0 <= 1000 + MARGIN_MS, `answered after ${Date.now() - t0} ms`);

  await redis.restart();
  await waitHealthy(A);
  // A read sent after whatever waited: once answered, Redis ran everything before it.
  await poll(A, ['wait'], { since: m1.id });
  const stats = await redis.cli('INFO', 'commandstats');
  const calls = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  assert.ok(calls < N / 2, `${calls} script calls after Redis came back: the ${N} cancelled reads were sent`);
});

test('reads that found the link full go once answers drain, not at the next reconnect', async (t) => {
  const { A } = await setup(t, 1, { cluster: { max_inflight_bytes: 1 } });
  // One command in flight fills the link: every other read waits for room.
  const first = await poll(A, ['full']);
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    poll(A, [`full-${i}`], { since: first.cursor })));
  for (const a of answers) assert.deepEqual(a.messages, []);
});

test('a subscribe op with since for a busy topic whose read Redis refuses (-OOM) is undone alone: live messages it skipped meanwhile were its own, the connection stays', async (t) => {
  const { redis, proxy, hold, A, B } = await setupHeld(t);
  // The resume's cursor lies before what B's own history of the topic holds: only Redis has m1.
  const m0 = await publishOk(A.url, 'busy', 'm0');
  await publishOk(A.url, 'busy', 'm1');
  // Sees B's live messages of the busy topic: once it has one, so has every subscriber on B.
  const watcher = await subscribe(B.url, '/events?topic=busy');
  const ws = await openWS(B.url, '/ws');
  await ws.ok({ op: 'subscribe', topics: ['kept'] });
  // B delivers live before it is held: its catch-up rounds for the new topics are over.
  const m2 = await publishOk(A.url, 'busy', 'm2');
  await waitForId(watcher, m2.id, { label: 'the watcher on B' });
  hold();
  await ws.send({ op: 'subscribe', topics: ['busy'], since: m0.id, ref: 'busy' });
  // Live messages of the topic reach B while its read is held: the catch-up skips them.
  let live;
  for (let i = 3; i <= 5; i++) live = await publishOk(A.url, 'busy', `m${i}`);
  await waitForId(watcher, live.id, { label: 'the watcher on B' });
  // The held read then has to create a lost hub, which Redis refuses past maxmemory. (A
  // topic whose key has another type is a gap instead: see above.)
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
  await redis.cli('DEL', '{herald}:hub');
  try {
    proxy.resume();
    const reply = await ws.waitJson((j) => j.ref === 'busy');
    assert.deepEqual([reply.type, reply.error], ['error', 'unavailable'], JSON.stringify(reply));
    await ws.assertUsable();
  } finally {
    await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
  }
  const k1 = await publishOk(A.url, 'kept', 'k1');
  const kept = await ws.waitEnvelopes(1, { topic: 'kept' });
  assert.deepEqual(kept.map((e) => e.id), [k1.id], 'the other subscription stays');
  assert.deepEqual(ws.envelopes('busy'), [], 'nothing of the refused topic was delivered');
  // The op was undone: the topic is no longer the connection's.
  const after = await publishOk(A.url, 'busy', 'after');
  await waitForId(watcher, after.id, { label: 'the watcher on B' });
  const k2 = await publishOk(A.url, 'kept', 'k2');
  await ws.waitEnvelopes(2, { topic: 'kept' });
  assert.deepEqual(ws.envelopes().map((e) => e.id), [k1.id, k2.id]);
  watcher.close();
  ws.close();
});

test('a subscribe without since made during a resume whose ack read Redis refuses gets an error frame and is undone; the connection stays', async (t) => {
  const { redis, proxy, hold, A, B } = await setupHeld(t);
  const o1 = await publishOk(A.url, 'resumed', 'o1');
  await publishOk(A.url, 'resumed', 'o2');
  const ws = await openWS(B.url, '/ws');
  await ws.ok({ op: 'subscribe', topics: ['kept'] });
  hold();
  await ws.send({ op: 'subscribe', topics: ['resumed'], since: o1.id, ref: 'resume' });
  // Made while the resume is under way: its ack waits for a read of its own (without a cursor).
  await ws.send({ op: 'subscribe', topics: ['late'], ref: 'late' });
  // -OOM: both held reads have to create a lost hub, which Redis refuses past maxmemory.
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
  await redis.cli('DEL', '{herald}:hub');
  try {
    proxy.resume();
    for (const ref of ['resume', 'late']) {
      const refused = await ws.waitJson((j) => j.ref === ref);
      assert.deepEqual([refused.type, refused.error], ['error', 'unavailable'], JSON.stringify(refused));
    }
    await ws.assertUsable();
  } finally {
    await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
  }
  // Both ops were undone; the subscription made before stays.
  await publishOk(A.url, 'late', 'not for this connection');
  await publishOk(A.url, 'resumed', 'not for this connection either');
  const k1 = await publishOk(A.url, 'kept', 'k1');
  await ws.waitEnvelopes(1, { topic: 'kept' });
  assert.deepEqual(ws.envelopes().map((e) => e.id), [k1.id]);
  assert.equal(ws.closed, null);
  ws.close();
});

test('a poll past its timeout whose read then stalls (Redis stops answering) is answered within a second of the link going down, not held for the outage', async (t) => {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = await startProxy(redis.port);
  onTestEnd(t, () => proxy.close());
  const monitor = await startMonitor(redis.port);
  onTestEnd(t, () => monitor.close());
  const { A } = await startCluster(1, { redis: proxy, config: CONFIG }).then((c) => {
    onTestEnd(t, () => c.stop());
    return c;
  });
  const m1 = await publishOk(A.url, 'stalls', 'm1');
  await monitor.sync(redis);
  const reads = () => monitor.count((l) => /"EVALSHA"/i.test(l) && l.includes('"stalls"'));
  const before = reads();
  const TIMEOUT_S = 2;
  const t0 = Date.now();
  const answer = request(`${A.url}/poll?topic=stalls&since=${encodeURIComponent(m1.id)}&timeout=${TIMEOUT_S}`,
    { timeout: 30_000 });
  // Its first read found nothing: it waits. Then Redis stops answering.
  await until(() => reads() > before, { what: 'the poll\'s first read' });
  proxy.pause();
  try {
    // At the timeout the engine was still up: its read was sent and stalled; timeout_ms later
    // the link is down, and a second after that the poll is answered.
    const bound = TIMEOUT_S * 1000 + CONFIG.cluster.timeout_ms + 1000 + 3 * MARGIN_MS;
    const res = await withTimeout(answer, bound, 'the poll to be answered while Redis stalls');
    const ms = Date.now() - t0;
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.messages, []);
    assert.equal(res.json.cursor, m1.id, 'answered with its own cursor');
    assert.ok(ms >= TIMEOUT_S * 1000, `answered after ${ms} ms, before its timeout`);
  } finally {
    proxy.resume();
  }
  await waitHealthy(A);
});

test('a long outage with topics coming and going: the position reads of topics whose linger ended are dropped, not sent when Redis is back', { timeout: 60_000 }, async (t) => {
  const { redis, A } = await setup(t, 1);
  const m0 = await publishOk(A.url, 'warm', 'm0');
  await redis.kill('SIGTERM');
  await waitUnhealthy(A);
  // Per-user topics: each subscriber comes and goes; its topic's position read waits for Redis.
  const N = 300;
  for (let i = 0; i < N; i += 50) {
    await Promise.all(Array.from({ length: 50 }, async (_, k) => {
      const sse = await subscribe(A.url, `/events?topic=user-${i + k}`);
      sse.close();
    }));
  }
  const subscribed = async () => {
    const res = await request(`${A.url}/metrics`);
    return Number(/^herald_cluster_subscribed_topics (\d+)/m.exec(res.text)?.[1]);
  };
  await until(async () => (await subscribed()) >= N, { what: 'the topics subscribed' });
  // Their linger (30 s) ends while Redis is still away: the node forgets them.
  await until(async () => (await subscribed()) === 0, { timeout: 40_000, interval: 500, what: 'the linger to end' });
  await redis.restart();
  await waitHealthy(A);
  // A read sent after whatever waited: once answered, Redis ran everything before it.
  await poll(A, ['warm'], { since: m0.id });
  const stats = await redis.cli('INFO', 'commandstats');
  const calls = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  assert.ok(calls < 20, `${calls} script calls after Redis came back: the forgotten topics' position reads were sent`);
});

const oomRefusals = (info) => Number(/errorstat_OOM:count=(\d+)/.exec(info)?.[1] ?? 0);

/**
 * Has Redis refuse the one read B sends in send() (refuseReads), then lets
 * Redis answer B's later reads: the refusal is held on its way back to B, so
 * B learns of it only after it sent what follows, whose answers come behind it.
 */
async function refuseOneRead(redis, proxy, send) {
  const before = oomRefusals(await redis.cli('INFO', 'errorstats'));
  await refuseReads(redis, async () => {
    proxy.pause({ filter: (c) => !c.pubsub, direction: 'down' });
    await send();
    await until(async () => oomRefusals(await redis.cli('INFO', 'errorstats')) > before,
      { what: 'Redis refusing the read' });
  });
}

/**
 * A subscribe op with since whose read Redis refuses, then meanwhile(ws),
 * which sends ops of which the one with ref `confirming` names topic x again
 * and is acked: x stays live, the connection stays.
 */
async function assertRefusedOpLeavesTopic(t, confirming, meanwhile) {
  const { redis, proxy, A, B } = await setupHeld(t);
  const x0 = await publishOk(A.url, 'x', 'x0');
  const ws = await openWS(B.url, '/ws');
  await settle(B);
  await refuseOneRead(redis, proxy, () => ws.send({ op: 'subscribe', topics: ['x'], since: x0.id, ref: 'first' }));
  await meanwhile(ws);
  proxy.resume();
  const refused = await ws.waitJson((j) => j.ref === 'first');
  assert.deepEqual([refused.type, refused.error], ['error', 'unavailable'], JSON.stringify(refused));
  const acked = await ws.waitJson((j) => j.ref === confirming);
  assert.equal(acked.type, 'ack', JSON.stringify(acked));
  // The later op confirmed x: it stays live.
  const x1 = await publishOk(A.url, 'x', 'x1');
  const got = await ws.waitEnvelopes(1, { topic: 'x' });
  assert.deepEqual(got.map((e) => e.id), [x1.id]);
  assert.equal(ws.closed, null);
  ws.close();
}

test('a refused subscribe op leaves a topic a later op confirmed: a resume that fails, a subscribe without since made meanwhile keeps the topic live', async (t) => {
  // Made during the resume: x is the connection's already; its own read succeeds.
  await assertRefusedOpLeavesTopic(t, 'late', (ws) => ws.send({ op: 'subscribe', topics: ['x'], ref: 'late' }));
});

test('a refused subscribe op leaves a topic the client unsubscribed from and subscribed to again meanwhile', async (t) => {
  await assertRefusedOpLeavesTopic(t, 'again', async (ws) => {
    await ws.send({ op: 'unsubscribe', topics: ['x'], ref: 'off' });
    // Adds x again, with a read of its own that succeeds.
    await ws.send({ op: 'subscribe', topics: ['x'], ref: 'again' });
  });
});

test('a poll without a cursor on a node that never reached Redis is refused at its timeout: it has no id of the cluster to give', async (t) => {
  const port = await freePort(); // nothing listens there
  const { A } = await startCluster(1, { redis: { url: `redis://127.0.0.1:${port}` }, config: CONFIG, waitHealthy: false });
  onTestEnd(t, () => A.stop());
  await waitUnhealthy(A);
  const t0 = Date.now();
  // Not "00000000-0": a cursor of no epoch would read as another epoch's (a false gap, all history).
  const json = await assertPollUnavailable(A, 'topic=never&timeout=1', 'never reached Redis');
  assert.equal(json.error, 'unavailable');
  assert.ok(Date.now() - t0 <= 1000 + MARGIN_MS, `answered after ${Date.now() - t0} ms`);
  // Other clients are not disturbed: the node still answers.
  assert.equal((await request(`${A.url}/healthz`)).status, 503);
});

/** B's live messages of topic reach every subscriber there once the watcher has them (one worker). */
async function watchOn(A, B, topic) {
  const watcher = await subscribe(B.url, `/events?topic=${topic}`);
  const w0 = await publishOk(A.url, topic, 'w0');
  await waitForId(watcher, w0.id, { label: 'the watcher on B' });
  return watcher;
}

/** Once a read B sends now is answered, B's command connection has nothing else under way (in order). */
async function settle(B) {
  await poll(B, ['settle']);
}

test('a subscribe without since made during a resume holds its topics\' live messages until its ack: sent after it, or never when its read is refused', async (t) => {
  const { redis, proxy, hold, A, B } = await setupHeld(t);
  // The resumes' cursor lies before what B's own history of the topics holds: only Redis has o2.
  const o1 = await publishOk(A.url, 'resumed', 'o1');
  await publishOk(A.url, 'resumed', 'o2');
  await publishOk(A.url, 'resumed-2', 'o2');
  // Every topic is B's before it is held: B holds live messages while its catch-up round for a new one waits.
  const watchers = [];
  for (const topic of ['resumed', 'resumed-2', 'late-ok', 'late-bad']) watchers.push(await watchOn(A, B, topic));
  const [, , okWatcher, badWatcher] = watchers;
  const ws = await openWS(B.url, '/ws');
  await ws.ok({ op: 'subscribe', topics: ['kept'] });

  // Acked: what was published meanwhile comes after the ack, in order.
  await settle(B);
  hold();
  await ws.send({ op: 'subscribe', topics: ['resumed'], since: o1.id, ref: 'resume' });
  await ws.send({ op: 'subscribe', topics: ['late-ok'], ref: 'late' });
  const l1 = await publishOk(A.url, 'late-ok', 'l1');
  const l2 = await publishOk(A.url, 'late-ok', 'l2');
  await waitForId(okWatcher, l2.id, { label: 'the watcher on B' });
  assert.deepEqual(ws.envelopes('late-ok'), [], 'held until the ack');
  proxy.resume();
  await ws.waitJson((j) => j.ref === 'late' && j.type === 'ack');
  await ws.waitEnvelopes(2, { topic: 'late-ok' });
  const frames = ws.json.filter((j) => j.ref === 'late' || j.topic === 'late-ok');
  assert.deepEqual(frames.map((j) => j.id ?? j.type), ['ack', l1.id, l2.id]);
  await ws.waitEnvelopes(1, { topic: 'resumed' });

  // Refused: nothing of it was sent, the topic is undone, the connection stays.
  await settle(B);
  hold();
  await ws.send({ op: 'subscribe', topics: ['resumed-2'], since: o1.id, ref: 'resume-2' });
  await ws.send({ op: 'subscribe', topics: ['late-bad'], ref: 'late-2' });
  const b1 = await publishOk(A.url, 'late-bad', 'b1');
  await waitForId(badWatcher, b1.id, { label: 'the watcher on B' });
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
  await redis.cli('DEL', '{herald}:hub');
  try {
    proxy.resume();
    const refused = await ws.waitJson((j) => j.ref === 'late-2');
    assert.deepEqual([refused.type, refused.error], ['error', 'unavailable'], JSON.stringify(refused));
    await ws.assertUsable();
  } finally {
    await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
  }
  assert.deepEqual(ws.envelopes('late-bad'), [], 'nothing of the refused op was sent');
  const k1 = await publishOk(A.url, 'kept', 'k1');
  await ws.waitEnvelopes(1, { topic: 'kept' });
  assert.deepEqual(ws.envelopes('late-bad'), []);
  assert.equal(ws.closed, null);
  for (const w of watchers) w.close();
  ws.close();
});

test('live messages held for subscribes waiting for their ack are bounded: past limits.max_outbound_bytes the connection closes with 1013', async (t) => {
  const { proxy, hold, A, B } = await setupHeld(t, { limits: { max_outbound_bytes: 4096 } });
  // The resume's cursor lies before what B's own history of the topic holds: only Redis has o2.
  const o1 = await publishOk(A.url, 'resumed', 'o1');
  await publishOk(A.url, 'resumed', 'o2');
  const watchers = [];
  for (const topic of ['resumed', 'flood']) watchers.push(await watchOn(A, B, topic));
  const bystander = await openWS(B.url, '/ws');
  await bystander.ok({ op: 'subscribe', topics: ['flood'] });
  const ws = await openWS(B.url, '/ws');
  await settle(B);
  hold();
  await ws.send({ op: 'subscribe', topics: ['resumed'], since: o1.id, ref: 'resume' });
  await ws.send({ op: 'subscribe', topics: ['flood'], ref: 'late' });
  const data = 'x'.repeat(1000);
  for (let i = 0; i < 6; i++) await publishOk(A.url, 'flood', data);
  const closed = await ws.waitClose();
  assert.deepEqual([closed.code, closed.reason], [1013, 'too many messages held'], JSON.stringify(closed));
  assert.deepEqual(ws.envelopes('flood'), [], 'nothing held was sent');
  proxy.resume();
  // The other client on the node is not disturbed.
  await bystander.waitEnvelopes(6, { topic: 'flood' });
  for (const w of watchers) w.close();
  bystander.close();
});
