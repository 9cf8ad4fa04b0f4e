// Catch-up rounds and epochs at their edges (docs/api.md, "Scale-out
// (Redis): cluster mode"): what a node read back is merged by seq with the
// live messages it held meanwhile, a node emits in seq order, and a gap is
// never hidden. These tests make a pub/sub message go missing on purpose
// (injectMessage: stored like a publish, not told to the nodes), so that
// the next one reveals a hole and starts a round, and then disturb that
// round: Redis forgetting its scripts, too many live messages held, the new
// topic that bounded it leaving; and a late message of an epoch a node left.
//
// Each test has its own Redis and nodes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { publishOk, subscribe, openWS, until, sleep } from '../lib/harness.mjs';
import {
  startRedis, startProxy, startCluster, startMonitor, injectMessage, assertSequence, itemsOf,
  waitForId, splitId, shapeOf, metric, onTestEnd,
} from '../lib/cluster.mjs';

const CONFIG = { heartbeat_s: 1 };
const READ_SHA = createHash('sha1')
  .update(readFileSync(new URL('../../src/engine/redis_read.lua', import.meta.url)))
  .digest('hex');

async function setup(t, { proxied = false, config = CONFIG } = {}) {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  let proxy = null;
  if (proxied) {
    proxy = await startProxy(redis.port);
    onTestEnd(t, () => proxy.close());
  }
  const cluster = await startCluster(1, { redis: proxy ?? redis, config });
  onTestEnd(t, () => cluster.stop());
  return { redis, proxy, A: cluster.A };
}

/** An SSE client and a WebSocket client on node, both on every topic, each past a first message of each. */
async function subscribers(t, node, redis, topics) {
  const sse = await subscribe(node.url, `/events?${topics.map((x) => `topic=${x}`).join('&')}&format=json`);
  onTestEnd(t, () => sse.close());
  const ws = await openWS(node.url, '/ws');
  onTestEnd(t, () => ws.close());
  await ws.ok({ op: 'subscribe', topics });
  const views = [['SSE', sse], ['WebSocket', ws]];
  const first = [];
  for (const topic of topics) first.push({ id: await injectMessage(redis, topic, `first-${topic}`), topic });
  for (const [label, client] of views) await waitForId(client, first.at(-1).id, { label });
  return { views, first };
}

/** Every acked {id, topic} delivered once in seq order or covered by a gap of its topic; returns each view's result. */
function check(views, acked, topics) {
  return views.map(([label, client]) => assertSequence(itemsOf(client), { label, acked, only: acked.map((a) => a.id), topics }));
}

test('a late pub/sub message of the epoch a node just left is dropped: one gap, no stale message, no second epoch change', async (t) => {
  const { redis, A } = await setup(t);
  const topic = 'late';
  const sse = await subscribe(A.url, `/events?topic=${topic}`);
  onTestEnd(t, () => sse.close());
  const old = [];
  for (let i = 0; i < 3; i++) old.push((await publishOk(A.url, topic, `old${i}`)).id);
  await waitForId(sse, old[2], { label: 'SSE' });
  const { epoch: oldEpoch, seq: oldSeq } = splitId(old[2]);

  assert.equal(await redis.cli('FLUSHALL'), 'OK');
  const n1 = await publishOk(A.url, topic, 'new1'); // A's script starts the new epoch: A is in it
  assert.notEqual(splitId(n1.id).epoch, oldEpoch);
  // A message of the old epoch, published before the FLUSHALL, reaches A only now.
  const stale = `${oldEpoch}:${oldSeq + 1n}:${oldSeq}:${Date.now()}:0:stale`;
  assert.equal(await redis.cli('PUBLISH', `{herald}:c:${topic}`, stale), 1);
  const n2 = await publishOk(A.url, topic, 'new2');

  const got = await waitForId(sse, n2.id, { label: 'SSE' });
  await sse.expectNoMore(300);
  const items = itemsOf(sse);
  assertSequence(items, { label: 'SSE', only: [...old, n1.id, n2.id], topics: [topic] });
  assert.deepEqual(shapeOf(items), ['message', 'message', 'message', 'gap', 'message', 'message'], JSON.stringify(got));
  assert.equal(await metric(A, 'herald_cluster_late_messages_total'), 1);
  // A stays in the new epoch: the next publish continues its sequence.
  const n3 = await publishOk(A.url, topic, 'new3');
  assert.equal(splitId(n3.id).seq, splitId(n2.id).seq + 1n);
});

test('SCRIPT FLUSH just before a catch-up round: the round starts over, every read before its barrier; two topics keep seq order', async (t) => {
  const { redis, A } = await setup(t);
  const monitor = await startMonitor(redis.port);
  onTestEnd(t, () => monitor.close());
  const topics = ['noscript-x', 'noscript-y'];
  const { views, first } = await subscribers(t, A, redis, topics);

  // A hole in noscript-x; Redis forgets the scripts; the next message
  // reveals the hole (the round's read meets NOSCRIPT) while noscript-y goes on.
  const acked = [...first];
  acked.push({ id: await injectMessage(redis, topics[0], 'lost', { publish: false }), topic: topics[0] });
  assert.equal(await redis.cli('SCRIPT', 'FLUSH'), 'OK');
  acked.push({ id: await injectMessage(redis, topics[0], 'next'), topic: topics[0] });
  for (let i = 0; i < 20; i++) acked.push({ id: await injectMessage(redis, topics[i % 2], `live${i}`), topic: topics[i % 2] });

  for (const [label, client] of views) await waitForId(client, acked.at(-1).id, { label });
  for (const { ids, gaps } of check(views, acked, topics)) {
    assert.deepEqual(ids, acked.map((a) => a.id), 'every message once, in seq order across both topics');
    assert.deepEqual(gaps, []);
  }
  // Redis ran every read of noscript-x before a barrier of its round: a
  // read retried after NOSCRIPT would have run after the barrier, with
  // none following it.
  await monitor.sync(redis);
  const log = monitor.lines.filter((l) => (l.includes(`"${READ_SHA}"`) && l.includes(`"${topics[0]}"`)) ||
    l.includes('"herald-catch-up:'));
  const lastRead = log.findLastIndex((l) => l.includes(`"${READ_SHA}"`));
  assert.ok(lastRead >= 0, 'the hole was read back from Redis');
  assert.ok(log.slice(lastRead + 1).some((l) => l.includes('"herald-catch-up:')),
    `the last read of the round is followed by its barrier:\n${log.join('\n')}`);
});

test('more live messages held than cluster.max_held_messages while a round reads: a gap for the topic caught up, the rest delivered in order, then delivery resumes', async (t) => {
  const held = 50;
  // A long timeout_ms: the stalled read must not tear the link down.
  const config = { ...CONFIG, cluster: { timeout_ms: 20_000, max_held_messages: held } };
  const { redis, proxy, A } = await setup(t, { proxied: true, config });
  const topics = ['held-x', 'held-y'];
  const { views, first } = await subscribers(t, A, redis, topics);

  const acked = [...first];
  acked.push({ id: await injectMessage(redis, topics[0], 'lost', { publish: false }), topic: topics[0] });
  // The round's read never reaches Redis (the command connection stalls),
  // so every live message is held from the one that reveals the hole on.
  proxy.pause({ filter: (c) => !c.pubsub, direction: 'up', newConnections: false });
  acked.push({ id: await injectMessage(redis, topics[0], 'next'), topic: topics[0] });
  for (let i = 0; i < held + 10; i++) acked.push({ id: await injectMessage(redis, topics[1], `y${i}`), topic: topics[1] });
  // Past the bound the catch-up is given up: what was held goes on.
  for (const [label, client] of views) await waitForId(client, acked.at(-1).id, { label });
  proxy.resume();
  for (let i = 0; i < 4; i++) acked.push({ id: await injectMessage(redis, topics[i % 2], `after${i}`), topic: topics[i % 2] });
  for (const [label, client] of views) await waitForId(client, acked.at(-1).id, { label });
  await Promise.all(views.map(([, c], i) => c.expectNoMore(i === 0 ? 300 : 0)));

  for (const { ids, gaps } of check(views, acked, topics)) {
    assert.deepEqual([...new Set(gaps.map((g) => g.topic))], [topics[0]], 'a gap for the topic whose catch-up was given up only');
    const ys = acked.filter((a) => a.topic === topics[1]).map((a) => a.id);
    assert.deepEqual(ids.filter((id) => ys.includes(id)), ys, 'the other topic lost nothing');
    for (const a of acked.slice(-4)) assert.ok(ids.includes(a.id), `${a.id} delivered after the catch-up was given up`);
  }
  assert.equal(await metric(A, 'herald_cluster_held_overflows_total'), 1);
});

test('the new topic that bounded a catch-up round leaves before it is confirmed: the entries the round kept still go out', { timeout: 90_000 }, async (t) => {
  // A long timeout_ms: replies held back by the proxy must not tear the link down.
  const config = { ...CONFIG, cluster: { timeout_ms: 10_000 } };
  const { redis, proxy, A } = await setup(t, { proxied: true, config });
  const monitor = await startMonitor(redis.port);
  onTestEnd(t, () => monitor.close());
  const isRead = (l) => l.includes(`"${READ_SHA}"`);
  const topic = 'bounded-x';
  const fresh = 'bounded-new';
  const sse = await subscribe(A.url, `/events?topic=${topic}&format=json`);
  onTestEnd(t, () => sse.close());
  const acked = [{ id: await injectMessage(redis, topic, 'first'), topic }];
  await waitForId(sse, acked[0].id, { label: 'SSE' });

  // A hole in bounded-x starts a round whose read waits in the proxy, and
  // more messages follow (held by A while the round runs).
  const command = (c) => !c.pubsub;
  proxy.pause({ filter: command, direction: 'up', newConnections: false });
  const roundsBefore = await metric(A, 'herald_cluster_lost_reads_total');
  acked.push({ id: await injectMessage(redis, topic, 'lost', { publish: false }), topic });
  acked.push({ id: await injectMessage(redis, topic, 'next'), topic });
  await until(async () => (await metric(A, 'herald_cluster_lost_reads_total')) > roundsBefore, { what: 'a catch-up round' });
  const kept = [];
  for (let i = 0; i < 2; i++) kept.push({ id: await injectMessage(redis, topic, `more${i}`), topic });
  acked.push(...kept);
  // Meanwhile A subscribes to a new topic whose SUBSCRIBE never reaches
  // Redis: unconfirmed, it bounds the round at where its subscriber came
  // (after 'next', before 'more').
  proxy.pause({ filter: (c) => c.pubsub, direction: 'up', newConnections: false });
  const ws = await openWS(A.url, '/ws');
  onTestEnd(t, () => ws.close());
  await ws.send(JSON.stringify({ op: 'subscribe', topics: [fresh] }));
  await until(async () => (await metric(A, 'herald_cluster_subscribed_topics')) === 2, { what: 'A to follow the new topic' });
  // Redis runs the round's read, its barrier and the new topic's position
  // read; A gets their answers once the barrier came back over pub/sub.
  const readsBefore = monitor.count(isRead);
  proxy.pause({ filter: command, direction: 'down', newConnections: false });
  proxy.resume({ filter: command, direction: 'up' });
  await until(() => monitor.count(isRead) >= readsBefore + 2, { what: 'the round\'s read and the position read to run' });
  await monitor.sync(redis);
  proxy.resume({ filter: command, direction: 'down' });
  await waitForId(sse, acked[2].id, { label: 'SSE' });
  await sse.expectNoMore(500); // 'more' are kept back, for now rightly

  // The new topic's only subscriber leaves; once its linger (30 s) is over
  // A stops following it, and nothing bounds the round's entries any more.
  ws.close();
  for (const a of kept) await waitForId(sse, a.id, { label: 'SSE', timeout: 45_000 });
  proxy.resume();
  acked.push({ id: await injectMessage(redis, topic, 'after'), topic });
  await waitForId(sse, acked.at(-1).id, { label: 'SSE' });
  const { ids, gaps } = assertSequence(itemsOf(sse), { label: 'SSE', acked, only: acked.map((a) => a.id), topics: [topic] });
  assert.deepEqual(ids, acked.map((a) => a.id));
  assert.deepEqual(gaps, []);
});
