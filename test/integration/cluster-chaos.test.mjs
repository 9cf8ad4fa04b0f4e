// Scale-out under failure (SPEC §5): Redis stopped, killed, flushed, started
// late, stalled behind a proxy, its pub/sub connections killed or wedged.
// herald must refuse publishes at once (503, never queued, never dropped
// silently), keep its subscribers, say so on /healthz and /metrics, come
// back by itself, and then deliver every acknowledged message exactly once in
// order, or say where history lost it (a gap; a new epoch after data loss).
//
// Each test has its own Redis and nodes. Bounds: cluster.timeout_ms is
// TIMEOUT_MS; MARGIN_MS is added for a loaded machine and sanitizer builds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  publish, publishOk, publishBatch, subscribe, openSSE, openWS, request, assertError, sleep, until,
} from '../lib/harness.mjs';
import {
  startRedis, startProxy, startCluster, freePort, waitHealthy, waitUnhealthy, healthz, metric, poll,
  assertSequence, sseItems, wsItems, pollItems, itemsOf, waitForId, shapeOf, assertGapsFrom, splitId,
  steadyPublisher, newestId, checkDelivery,
  onTestEnd,
} from '../lib/cluster.mjs';

const TIMEOUT_MS = 1000;   // cluster.timeout_ms
const MARGIN_MS = 1000;    // scheduling slack on a loaded 2-core machine / ASan
const HEALTHY_WITHIN_MS = 10_000; // SPEC: healthy within 10 s of Redis answering
const BACKOFF_CAP_MS = 5000; // SPEC: reconnect backoff capped at 5 s
const SILENT_STALL_MS = 8000; // "a connection that stops answering", noticed "within a few seconds"
const CONFIG = { heartbeat_s: 1, cluster: { timeout_ms: TIMEOUT_MS } };

/** Starts a Redis (unless given) and n nodes, stopped when t ends. */
async function setup(t, n, { redis, via, config = CONFIG, waitHealthy: wait = true } = {}) {
  const r = redis ?? await startRedis();
  if (!redis) onTestEnd(t, () => r.stop());
  const cluster = await startCluster(n, { redis: via ?? r, config, waitHealthy: wait });
  onTestEnd(t, () => cluster.stop());
  return { redis: r, cluster, ...cluster };
}

/** Asserts the 503 a publish gets while the engine cannot publish; code: expected error code(s). */
function assertRefused(res, codes = ['unavailable']) {
  const json = assertError(res, 503);
  assert.ok(codes.includes(json.error), `503 error ${json.error}, expected ${codes.join(' or ')}: ${res.text}`);
  assert.match(res.headers.get('retry-after') ?? '', /^\d+$/, 'Retry-After on a 503 publish');
  return json;
}

/** Publishes and measures: resolves {res, ms}. */
async function timedPublish(node, topic, data) {
  const t0 = Date.now();
  const res = await publish(node.url, topic, data);
  return { res, ms: Date.now() - t0 };
}

/** /healthz must be 503 unavailable naming the redis engine and its state. */
async function assertUnhealthy(node) {
  const res = await healthz(node);
  const json = assertError(res, 503, 'unavailable');
  assert.match(json.message, /redis/i, `/healthz on ${node.name} names the engine: ${res.text}`);
  assert.match(json.message, /connecting|down/i, `/healthz on ${node.name} names the state: ${res.text}`);
}

test('Redis stopped: 503 at once, subscribers kept with heartbeats, every node unhealthy; restarted: a new epoch, deliveries resume', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const topic = 'outage';
  const sseA = await subscribe(A.url, `/events?topic=${topic}`);
  const wsB = await openWS(B.url, '/ws');
  await wsB.ok({ op: 'subscribe', topics: [topic] });
  const m1 = await publishOk(A.url, topic, 'before');
  await sseA.waitEvents(1);
  await wsB.waitEnvelopes(1);
  for (const node of [A, B]) assert.equal(await metric(node, 'herald_cluster_up'), 1, `herald_cluster_up on ${node.name}`);

  await redis.kill('SIGTERM');
  for (const node of [A, B]) {
    await waitUnhealthy(node, { timeout: TIMEOUT_MS + MARGIN_MS });
    await assertUnhealthy(node);
    assert.equal(await metric(node, 'herald_cluster_up'), 0, `herald_cluster_up on ${node.name}`);
    const { res, ms } = await timedPublish(node, topic, 'while down');
    assertRefused(res);
    assert.ok(ms <= TIMEOUT_MS + MARGIN_MS, `publish on ${node.name} refused after ${ms} ms (timeout_ms ${TIMEOUT_MS})`);
    assertRefused(await publishBatch(node.url, [{ topic, data: 'b1' }, { topic, data: 'b2' }]));
  }
  const wsErr = await wsB.call({ op: 'publish', topic, data: 'ws while down', ref: 'down' });
  assert.equal(wsErr.type, 'error');
  assert.equal(wsErr.error, 'unavailable', JSON.stringify(wsErr));
  assert.equal(wsErr.ref, 'down');

  // Subscribers stay, and heartbeats go on (heartbeat_s is 1).
  const hbBefore = sseA.stream.comments.filter((c) => c === 'hb').length;
  const pingsBefore = wsB.pings.length;
  await sseA.waitFor((s) => s.comments.filter((c) => c === 'hb').length > hbBefore, { timeout: 3000, what: 'an SSE heartbeat during the outage' });
  await wsB.waitFor(() => wsB.pings.length > pingsBefore, { timeout: 3000, what: 'a WebSocket ping during the outage' });
  await wsB.assertUsable();

  // New subscribers are accepted during the outage: answered at once or held, never refused.
  const lateSse = openSSE(B.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': m1.id }, timeout: 20_000 });
  const lateWs = await openWS(A.url, '/ws');
  const lateAck = lateWs.call({ op: 'subscribe', topics: [topic], since: m1.id, ref: 'late' }, { timeout: 20_000 });
  const latePoll = poll(A, [topic], { since: m1.id, timeout: 5 });
  // Awaited later: keep an early failure from counting as an unhandled rejection meanwhile.
  lateAck.catch(() => {});
  latePoll.catch(() => {});
  let lateSseSettled = null;
  lateSse.then((c) => { lateSseSettled = c; }, (err) => { lateSseSettled = err; });
  // A poll is not held past its timeout: nothing, and the cursor it came with.
  for (const timeout of [0, 1]) {
    const t0 = Date.now();
    const answer = await poll(B, [topic], { since: m1.id, timeout });
    const ms = Date.now() - t0;
    assert.deepEqual(answer, { messages: [], cursor: m1.id, gap: false, more: false }, `poll timeout=${timeout} during the outage`);
    assert.ok(ms <= timeout * 1000 + MARGIN_MS, `poll timeout=${timeout} answered after ${ms} ms`);
  }
  await sleep(300); // proving a negative: nothing refuses them meanwhile
  if (lateSseSettled) assert.equal(lateSseSettled.status, 200, `SSE during the outage: ${lateSseSettled.status ?? lateSseSettled} ${lateSseSettled.body ?? ''}`);
  assert.equal(sseA.stream.ended, false);
  assert.equal(wsB.closed, null);

  await redis.restart();
  for (const node of [A, B]) {
    const ms = await waitHealthy(node, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });
    assert.ok(ms <= HEALTHY_WITHIN_MS, `${node.name} healthy ${ms} ms after Redis answered`);
    assert.equal(await metric(node, 'herald_cluster_up'), 1);
  }
  const m2 = await publishOk(B.url, topic, 'after');
  assert.notEqual(splitId(m2.id).epoch, splitId(m1.id).epoch, 'a Redis restart without persistence starts a new epoch');

  for (const [label, client] of [['SSE on A', sseA], ['WebSocket on B', wsB]]) {
    const got = await waitForId(client, m2.id, { label });
    assertSequence(got, { label, acked: [m1.id, m2.id], only: [m1.id, m2.id], topics: [topic] });
    assert.deepEqual(shapeOf(got), ['message', 'gap', 'message'], `${label}: ${JSON.stringify(got)}`);
    assertGapsFrom(got, m1.id, label);
  }
  const late = await lateSse;
  try {
    assert.equal(late.status, 200, `SSE opened during the outage: ${late.status} ${late.body}`);
    const items = await waitForId(late, m2.id, { label: 'the SSE opened during the outage' });
    assertSequence(items, { label: 'late SSE', only: [m2.id] });
    assert.deepEqual(shapeOf(items), ['gap', 'message'], `its old-epoch cursor is answered with a gap: ${JSON.stringify(items)}`);
    assertGapsFrom(items, m1.id, 'late SSE');
    assert.equal((await lateAck).type, 'ack', 'the subscribe op sent during the outage is acknowledged');
    const wsGot = await waitForId(lateWs, m2.id, { label: 'the WebSocket opened during the outage' });
    assert.deepEqual(shapeOf(wsGot), ['gap', 'message'], JSON.stringify(wsGot));
    assertGapsFrom(wsGot, m1.id, 'late WebSocket');
    const answer = await latePoll;
    assertSequence(pollItems([answer]), { label: 'long-poll opened during the outage', only: [m2.id] });
    if (!answer.gap && answer.messages.length === 0) assert.equal(answer.cursor, m1.id, 'a poll that timed out keeps its cursor');
    assert.deepEqual((await wsB.call({ op: 'publish', topic, data: 'ws after' })).type, 'ack');
  } finally {
    late.close();
    lateWs.close();
    sseA.close();
    wsB.close();
  }
});

test('pub/sub connections killed (CLIENT KILL TYPE pubsub) under a publish stream: every acknowledged message once, in order', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const topic = 'pubsub-kill';
  const sseA = await subscribe(A.url, `/events?topic=${topic}`);
  const wsB = await openWS(B.url, '/ws');
  try {
    await wsB.ok({ op: 'subscribe', topics: [topic] });
    const pub = steadyPublisher([A, B], topic);
    try {
      await pub.waitAcked(30);
      const killed = await redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
      assert.ok(killed >= 2, `CLIENT KILL TYPE pubsub killed ${killed} connections (one per node expected)`);
      const n = pub.acked.length;
      await pub.waitAcked(n + 50);
    } finally {
      await pub.stop();
    }
    const lastId = newestId(pub.acked.map((a) => a.id));
    const views = [['SSE on A', sseA], ['WebSocket on B', wsB]];
    for (const [label, client] of views) await waitForId(client, lastId, { timeout: 10_000, label });
    await Promise.all([sseA.expectNoMore(300), wsB.expectNoMore(0)]);
    for (const [label, client] of views) {
      const { ids } = checkDelivery(label, itemsOf(client), pub, { gapsAllowed: false });
      for (const a of pub.acked) assert.ok(ids.includes(a.id), `${label}: ${a.id} (${a.data}) delivered`);
    }
  } finally {
    sseA.close();
    wsB.close();
  }
});

test('a wedged pub/sub connection (Redis stops sending on it) is noticed; what was missed arrives once, in order', async (t) => {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = await startProxy(redis.port);
  onTestEnd(t, () => proxy.close());
  const { A, B } = await setup(t, 2, { redis, via: [redis, proxy] }); // B reaches Redis through the proxy
  const topic = 'wedged';
  await proxy.waitFor((p) => p.connections.some((c) => c.pubsub), { what: 'B\'s pub/sub connection' });
  const sseA = await subscribe(A.url, `/events?topic=${topic}`);
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  const wsB = await openWS(B.url, '/ws');
  try {
    await wsB.ok({ op: 'subscribe', topics: [topic] });
    const first = await publishOk(A.url, topic, 'first');
    await sseB.waitEvents(1);

    proxy.pause({ filter: (c) => c.pubsub, direction: 'down', newConnections: false });
    const acked = [first.id];
    for (let i = 0; i < 5; i++) acked.push((await publishOk(A.url, topic, `a${i}`)).id);
    for (let i = 0; i < 2; i++) acked.push((await publishOk(B.url, topic, `b${i}`)).id); // B's commands still work
    await sseA.waitEvents(acked.length);

    const t0 = Date.now();
    for (const [label, client] of [['SSE on B', sseB], ['WebSocket on B', wsB]]) {
      await waitForId(client, acked.at(-1), { timeout: SILENT_STALL_MS + HEALTHY_WITHIN_MS, label });
    }
    const noticedMs = Date.now() - t0;
    await Promise.all([sseB.expectNoMore(300), wsB.expectNoMore(0), sseA.expectNoMore(0)]);
    for (const [label, items] of [['SSE on A', sseItems(sseA)], ['SSE on B', sseItems(sseB)], ['WebSocket on B', wsItems(wsB)]]) {
      const { ids, gaps } = assertSequence(items, { label, acked, only: acked, topics: [topic] });
      assert.deepEqual(gaps, [], `${label}: history held everything`);
      assert.deepEqual(ids, acked, `${label}: once each, in order`);
    }
    assert.ok(proxy.connections.filter((c) => c.pubsub).length >= 1, 'B subscribed again');
    // And B hears live messages again.
    const after = await publishOk(A.url, topic, 'after');
    await waitForId(sseB, after.id, { label: 'SSE on B, live after the wedge' });
    t.diagnostic(`B caught up ${noticedMs} ms after the last publish`);
  } finally {
    sseA.close();
    sseB.close();
    wsB.close();
  }
});

test('a node cut off while others publish past its history: after reconnecting, a gap and then what history holds', async (t) => {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = await startProxy(redis.port);
  onTestEnd(t, () => proxy.close());
  const history = 5;
  const config = { ...CONFIG, history: { max_messages: history } };
  const { A, B } = await setup(t, 2, { redis, via: [redis, proxy], config }); // B through the proxy
  const topic = 'overflow';
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  const wsB = await openWS(B.url, '/ws');
  try {
    await wsB.ok({ op: 'subscribe', topics: [topic] });
    const m0 = await publishOk(A.url, topic, 'm0');
    await waitForId(sseB, m0.id, { label: 'SSE on B' });
    await waitForId(wsB, m0.id, { label: 'WebSocket on B' });

    // Cut B's connections; its reconnect attempts are held until resume().
    proxy.pause({ filter: () => false, newConnections: true });
    proxy.cut();
    await waitUnhealthy(B, { timeout: TIMEOUT_MS + MARGIN_MS });
    const ids = [];
    for (let i = 0; i < history + 7; i++) ids.push((await publishOk(A.url, topic, `a${i}`)).id);
    const lostNewest = ids[ids.length - history - 1];
    assert.equal((await healthz(B)).status, 503, 'B is still cut off');

    proxy.resume();
    await waitHealthy(B, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });
    for (const [label, client] of [['SSE on B', sseB], ['WebSocket on B', wsB]]) {
      const got = await waitForId(client, ids.at(-1), { timeout: 5000, label });
      const { ids: delivered, epochs } = assertSequence(got, { label, acked: [m0.id, ...ids], topics: [topic] });
      assert.deepEqual(epochs, [splitId(m0.id).epoch], `${label}: Redis lost nothing, the epoch stays`);
      assert.deepEqual(delivered, [m0.id, ...ids.slice(-history)], `${label}: what history holds, once, in order`);
      assert.deepEqual(shapeOf(got), ['message', 'gap', ...Array(history).fill('message')], `${label}: ${JSON.stringify(got)}`);
      assertGapsFrom(got, m0.id, label);
      assert.equal(got.filter((i) => i.type === 'gap').at(-1).to, lostNewest, `${label}: the gap ends at the newest message history lost`);
    }
    await Promise.all([sseB.expectNoMore(300), wsB.expectNoMore(0)]);
  } finally {
    sseB.close();
    wsB.close();
  }
});

test('FLUSHALL: a new epoch; live subscribers and old cursors get a gap; no id is reused', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const topic = 'flush';
  const cold = 'flush-cold'; // no subscriber anywhere: a resume on it must ask Redis
  const c1 = await publishOk(A.url, cold, 'c1');
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  const wsA = await openWS(A.url, '/ws');
  try {
    await wsA.ok({ op: 'subscribe', topics: [topic] });
    const old = [];
    for (let i = 0; i < 3; i++) old.push((await publishOk(i % 2 ? A.url : B.url, topic, `old${i}`)).id);
    await sseB.waitEvents(3);
    await wsA.waitEnvelopes(3);
    const oldEpoch = splitId(old[0]).epoch;

    assert.equal(await redis.cli('FLUSHALL'), 'OK');

    // An old cursor on a topic nobody follows: a gap, never a position in a new sequence.
    const coldSse = await subscribe(B.url, `/events?topic=${cold}`, { headers: { 'Last-Event-ID': c1.id } });
    try {
      await coldSse.waitEvents(1);
      const items = sseItems(coldSse);
      assert.equal(items[0].type, 'gap', `the old cursor after FLUSHALL: ${JSON.stringify(items)}`);
      assert.equal(items[0].from, c1.id);
      assert.equal(items[0].topic, cold);
      await coldSse.expectNoMore(300);
    } finally {
      coldSse.close();
    }

    const n1 = await publishOk(A.url, topic, 'new');
    const { epoch: newEpoch, seq } = splitId(n1.id);
    assert.notEqual(newEpoch, oldEpoch, 'FLUSHALL starts a new epoch');
    assert.equal(seq, 1n, 'a new epoch starts its sequence at 1 (docs/api.md)');
    assert.ok(![...old, c1.id].includes(n1.id));

    for (const [label, client] of [['SSE on B', sseB], ['WebSocket on A', wsA]]) {
      const got = await waitForId(client, n1.id, { label });
      assertSequence(got, { label, only: [...old, n1.id], topics: [topic] });
      assert.deepEqual(shapeOf(got), ['message', 'message', 'message', 'gap', 'message'], `${label}: ${JSON.stringify(got)}`);
      assertGapsFrom(got, old[2], label);
    }
    await Promise.all([sseB.expectNoMore(300), wsA.expectNoMore(0)]);

    // Old cursors on every node and transport: a gap, then what the new epoch holds.
    const wantAfter = (items, label) => {
      assertSequence(items, { label, only: [n1.id] });
      assert.deepEqual(shapeOf(items), ['gap', 'message'], `${label}: ${JSON.stringify(items)}`);
      assertGapsFrom(items, old[0], label);
      assert.equal(items.at(-1).id, n1.id);
    };
    const answer = await poll(B, [topic], { since: old[0] });
    assert.equal(answer.gap, true);
    wantAfter(pollItems([answer]), 'poll on B');
    const resumed = await subscribe(A.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': old[0] } });
    const wsB = await openWS(B.url, '/ws');
    try {
      wantAfter(await waitForId(resumed, n1.id, { label: 'SSE resumed on A' }), 'SSE resumed on A');
      await wsB.ok({ op: 'subscribe', topics: [topic], since: old[0] });
      wantAfter(await waitForId(wsB, n1.id, { label: 'WebSocket resumed on B' }), 'WebSocket resumed on B');
    } finally {
      resumed.close();
      wsB.close();
    }
    // An id of the new epoch beyond its newest is still refused.
    assertError(await request(`${B.url}/poll?topic=${topic}&since=${newEpoch}-${seq + 100n}&timeout=0`), 400, 'invalid_cursor');
  } finally {
    sseB.close();
    wsA.close();
  }
});

test('kill -9 of Redis under a steady publish stream: every acknowledged id delivered once or reported in a gap', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const topic = 'kill9';
  const sseA = await subscribe(A.url, `/events?topic=${topic}`);
  const wsB = await openWS(B.url, '/ws');
  const sseB = await subscribe(B.url, `/events?topic=${topic}&format=json`);
  try {
    await wsB.ok({ op: 'subscribe', topics: [topic] });
    const pub = steadyPublisher([A, B], topic, { lanes: 3 });
    let killedAt;
    try {
      await pub.waitAcked(50);
      killedAt = pub.acked.length;
      await redis.kill('SIGKILL');
      await redis.restart();
      await pub.waitAcked(killedAt + 50);
    } finally {
      await pub.stop();
    }
    const ids = pub.acked.map((a) => a.id);
    assert.equal(new Set(ids).size, ids.length, 'no id acknowledged twice');
    const epochs = [...new Set(ids.map((id) => splitId(id).epoch))];
    assert.ok(epochs.length >= 2, `the restart without persistence started a new epoch: ${epochs}`);
    assert.ok(ids.slice(killedAt).some((id) => splitId(id).epoch !== epochs[0]));
    // The newest id, not the last answered: with several lanes in flight, answers come out of seq order.
    const lastId = newestId(ids);
    const views = [['SSE on A', sseA], ['WebSocket on B', wsB], ['SSE (json) on B', sseB]];
    for (const [label, client] of views) await waitForId(client, lastId, { timeout: 10_000, label });
    await Promise.all([sseA.expectNoMore(300), wsB.expectNoMore(0), sseB.expectNoMore(0)]);
    for (const [label, client] of views) {
      const { gaps } = checkDelivery(label, itemsOf(client), pub, { gapsAllowed: true });
      assert.ok(gaps.length >= 1, `${label}: the epoch change is announced with a gap`);
    }
  } finally {
    sseA.close();
    wsB.close();
    sseB.close();
  }
});

test('herald started before Redis: unhealthy and refusing meanwhile, healthy within 10 s of Redis answering', async (t) => {
  const port = await freePort();
  let redis;
  onTestEnd(t, () => redis?.stop()); // registered first: runs after the nodes stopped
  const { A, B } = await setup(t, 2, { redis: { url: `redis://127.0.0.1:${port}` }, waitHealthy: false });
  const topic = 'late-redis';
  for (const node of [A, B]) {
    await waitUnhealthy(node, { timeout: TIMEOUT_MS + MARGIN_MS });
    await assertUnhealthy(node);
    const { res, ms } = await timedPublish(node, topic, 'no redis yet');
    assertRefused(res);
    assert.ok(ms <= TIMEOUT_MS + MARGIN_MS, `refused after ${ms} ms`);
    assert.equal(await metric(node, 'herald_cluster_up'), 0);
  }
  const pending = openSSE(A.url, `/events?topic=${topic}`, { timeout: 30_000 });
  pending.catch(() => {}); // awaited below
  // Stay down long enough for the reconnect backoff to reach its 5 s cap,
  // proving meanwhile that herald keeps answering and stays unhealthy.
  const downUntil = Date.now() + 7000;
  while (Date.now() < downUntil) {
    for (const node of [A, B]) assert.equal((await healthz(node)).status, 503);
    await sleep(250);
  }
  redis = await startRedis({ port });
  for (const node of [A, B]) {
    const ms = await waitHealthy(node, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });
    assert.ok(ms <= HEALTHY_WITHIN_MS, `${node.name} healthy ${ms} ms after Redis answered`);
    // After 7 s of failures the backoff is at its cap: the next attempt comes within 5 s.
    assert.ok(ms <= BACKOFF_CAP_MS + TIMEOUT_MS + MARGIN_MS, `${node.name} healthy ${ms} ms after Redis answered: is the reconnect backoff capped at 5 s?`);
    assert.equal(await metric(node, 'herald_cluster_up'), 1);
  }
  const sse = await pending;
  try {
    assert.equal(sse.status, 200, `SSE opened before Redis: ${sse.status} ${sse.body}`);
    const m = await publishOk(B.url, topic, 'hello');
    await sse.waitEvents(1);
    assert.equal(sse.events[0].id, m.id);
  } finally {
    sse.close();
  }
});

test('a subscribe without since while a resume is being sent is acked only once its live delivery is in place', async (t) => {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = await startProxy(redis.port);
  onTestEnd(t, () => proxy.close());
  const { A, B } = await setup(t, 2, { redis, via: [redis, proxy] }); // B reaches Redis through the proxy
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await publishOk(A.url, 'late-old', `o${i}`)).id);
  const ws = await openWS(B.url, '/ws');
  try {
    // B's command connection holds its requests (its pub/sub connection goes on):
    // neither the resume's read nor B's position for the new topic can be had.
    proxy.pause({ filter: (c) => !c.pubsub, direction: 'up' });
    await ws.send({ op: 'subscribe', topics: ['late-old'], since: ids[0], ref: 1 });
    await ws.send({ op: 'subscribe', topics: ['late-new'], ref: 2 });
    // At most 16 such subscribes (refs 2–17) wait for their ack; past that, a clear error.
    for (let ref = 3; ref <= 18; ref++) await ws.send({ op: 'subscribe', topics: [`late-x${ref}`], ref });
    const refused = await ws.waitJson((j) => j.ref === 18);
    assert.equal(refused.type, 'error', JSON.stringify(refused));
    assert.equal(refused.error, 'resume_in_progress', JSON.stringify(refused));
    // An ack now would promise delivery B cannot give yet: a message published
    // right after it, before B's position read, would be missed.
    await ws.expectNoMore(400, { from: 0, pred: (j) => j.type !== 'error' });
    assert.deepEqual(ws.json.filter((j) => j.type !== 'error'), [], 'nothing is acked while B cannot reach Redis');
    proxy.resume();
    for (let ref = 3; ref <= 17; ref++) await ws.waitJson((j) => j.ref === ref && j.type === 'ack');
    await ws.waitJson((j) => j.ref === 1);
    await ws.waitJson((j) => j.ref === 2);
    const acks = ws.json.filter((j) => j.ref <= 2).sort((x, y) => x.ref - y.ref);
    assert.deepEqual(acks, [{ type: 'ack', ref: 1 }, { type: 'ack', ref: 2 }]);
    const after = await publishOk(A.url, 'late-new', 'after the ack');
    const got = await ws.waitEnvelopes(1, { topic: 'late-new' });
    assert.deepEqual(got.map((e) => [e.id, e.data]), [[after.id, 'after the ack']]);
    const old = await ws.waitEnvelopes(2, { topic: 'late-old' });
    assert.deepEqual(old.map((e) => e.id), ids.slice(1), 'the resume is whole');
  } finally {
    ws.close();
  }
});

test('a Redis that stops answering (stalled proxy): 503 within timeout_ms, then recovery with what was missed', async (t) => {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = await startProxy(redis.port);
  onTestEnd(t, () => proxy.close());
  const { A, B } = await setup(t, 2, { redis, via: [proxy, redis] }); // A reaches Redis through the proxy
  const topic = 'stall';
  const sseA = await subscribe(A.url, `/events?topic=${topic}`);
  const wsA = await openWS(A.url, '/ws');
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  try {
    await wsA.ok({ op: 'subscribe', topics: [topic] });
    const first = await publishOk(A.url, topic, 'first');
    await sseA.waitEvents(1);

    // A publish in flight when Redis stops answering: 503 within timeout_ms.
    proxy.pause();
    const { res, ms } = await timedPublish(A, topic, 'in flight');
    assertRefused(res, ['outcome_unknown', 'unavailable']);
    assert.ok(ms <= TIMEOUT_MS + MARGIN_MS, `publish into a stalled Redis answered after ${ms} ms (timeout_ms ${TIMEOUT_MS})`);
    await waitUnhealthy(A, { timeout: TIMEOUT_MS + MARGIN_MS });
    await assertUnhealthy(A);
    assert.equal(await metric(A, 'herald_cluster_up'), 0);
    assert.equal(await metric(B, 'herald_cluster_up'), 1);
    const again = await timedPublish(A, topic, 'while stalled');
    assertRefused(again.res);
    assert.ok(again.ms <= TIMEOUT_MS + MARGIN_MS, `second publish refused after ${again.ms} ms`);
    const wsErr = await wsA.call({ op: 'publish', topic, data: 'ws while stalled' }, { timeout: TIMEOUT_MS + MARGIN_MS + 1000 });
    assert.equal(wsErr.type, 'error');
    assert.ok(['unavailable', 'outcome_unknown'].includes(wsErr.error), JSON.stringify(wsErr));

    // B is not behind the proxy: it goes on.
    assert.equal((await healthz(B)).status, 200);
    const missed = [];
    for (let i = 0; i < 4; i++) missed.push((await publishOk(B.url, topic, `b${i}`)).id);
    await sseB.waitEvents(1 + missed.length);
    assert.equal(sseA.stream.ended, false, 'A keeps its subscribers');
    await wsA.assertUsable();

    proxy.resume();
    const healthyMs = await waitHealthy(A, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });
    assert.ok(healthyMs <= HEALTHY_WITHIN_MS, `A healthy ${healthyMs} ms after the proxy resumed`);
    const later = await publishOk(A.url, topic, 'later');
    const acked = [first.id, ...missed, later.id];
    // 'in flight' may or may not have been stored (outcome unknown): allowed, not required.
    for (const [label, client] of [['SSE on A', sseA], ['WebSocket on A', wsA], ['SSE on B', sseB]]) {
      const got = await waitForId(client, later.id, { label });
      const { gaps, messages } = assertSequence(got, { label, acked, topics: [topic] });
      assert.deepEqual(gaps, [], `${label}: Redis lost nothing`);
      assert.deepEqual(messages.map((m) => m.data).filter((d) => d !== 'in flight'), ['first', 'b0', 'b1', 'b2', 'b3', 'later'], `${label}`);
    }

    // A connection that stops answering with nothing in flight is noticed too.
    proxy.pause();
    const t0 = Date.now();
    await waitUnhealthy(A, { timeout: SILENT_STALL_MS + MARGIN_MS });
    const noticed = Date.now() - t0;
    assert.ok(noticed <= SILENT_STALL_MS, `an idle stalled connection noticed after ${noticed} ms`);
    proxy.resume();
    await waitHealthy(A, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });
  } finally {
    sseA.close();
    wsA.close();
    sseB.close();
  }
});
