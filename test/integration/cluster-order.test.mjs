// Cross-topic order of what a node catches up (SPEC §5: every subscriber
// receives every message of its topics once, in id order; an SSE
// Last-Event-ID is a cursor across all of its topics). A node that missed
// messages of several topics (cut off from Redis, its pub/sub connection
// killed) reads them back per topic; the reads must be merged by seq, with
// the live messages that arrive meanwhile, before anything is delivered.
//
// Each test has its own Redis and nodes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { publish, publishBatch, subscribe, openWS, sleep, until } from '../lib/harness.mjs';
import {
  startRedis, startProxy, startCluster, waitHealthy, waitUnhealthy, assertSequence, itemsOf, waitForId,
  splitId,
  onTestEnd,
} from '../lib/cluster.mjs';

const TIMEOUT_MS = 1000; // cluster.timeout_ms
const MARGIN_MS = 1000;
const HEALTHY_WITHIN_MS = 10_000;
const CONFIG = { heartbeat_s: 1, cluster: { timeout_ms: TIMEOUT_MS } };

/** A Redis, a proxy in front of it, and n nodes of which B reaches Redis through the proxy. */
async function setupBehindProxy(t, n, config = CONFIG) {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = await startProxy(redis.port);
  onTestEnd(t, () => proxy.close());
  const via = Array.from({ length: n }, (_, i) => (i === 1 ? proxy : redis));
  const cluster = await startCluster(n, { redis: via, config });
  onTestEnd(t, () => cluster.stop());
  return { redis, proxy, ...cluster };
}

const topicsOf = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

/** An SSE client and a WebSocket client on node, both subscribed to every topic. */
async function subscribers(t, node, topics) {
  const sse = await subscribe(node.url, `/events?${topics.map((x) => `topic=${x}`).join('&')}`);
  onTestEnd(t, () => sse.close());
  const ws = await openWS(node.url, '/ws');
  onTestEnd(t, () => ws.close());
  await ws.ok({ op: 'subscribe', topics });
  return [['SSE on ' + node.name, sse], ['WebSocket on ' + node.name, ws]];
}

/** Publishes n messages one by one, topics in turn, over nodes in turn; resolves [{id, topic, data}]. */
async function publishInterleaved(nodes, topics, n, tag) {
  const acked = [];
  for (let k = 0; k < n; k++) {
    const topic = topics[k % topics.length];
    const data = `${tag}${k}`;
    const res = await publish(nodes[k % nodes.length].url, topic, data);
    assert.equal(res.status, 201, `publish ${data} to ${topic}: ${res.status} ${res.text}`);
    acked.push({ id: res.json.id, topic, data });
  }
  return acked;
}

/** Publishes items ({topic, data}) in batches of 100; resolves [{id, topic, data}] in seq order. */
async function publishBatches(node, items) {
  const acked = [];
  for (let i = 0; i < items.length; i += 100) {
    const part = items.slice(i, i + 100);
    const res = await publishBatch(node.url, part);
    assert.equal(res.status, 201, `batch publish: ${res.status} ${res.text}`);
    res.json.messages.forEach((m, k) => acked.push({ id: m.id, topic: m.topic, data: part[k].data }));
  }
  return acked;
}

const bySeq = (a, b) => (splitId(a.id).seq < splitId(b.id).seq ? -1 : 1);

/** Waits until every client has every expected id, then checks order and completeness. */
async function checkClients(views, acked, { topics, expectIds, gapTopics = [], unknown = [] }) {
  // Polled, not checked on every message: thousands of them arrive.
  for (const [label, client] of views) {
    await until(() => {
      const have = new Set(itemsOf(client).filter((i) => i.type === 'message').map((i) => i.id));
      return expectIds.every((id) => have.has(id));
    }, { timeout: 15_000, interval: 100, what: `${expectIds.length} messages on ${label}` });
  }
  await Promise.all(views.map(([, c], i) => c.expectNoMore(i === 0 ? 300 : 0)));
  const ackedIds = new Set(acked.map((a) => a.id));
  const mayCome = new Set(unknown); // data of publishes answered outcome_unknown
  for (const [label, client] of views) {
    const { ids, messages, gaps } = assertSequence(itemsOf(client), { label, acked, topics });
    for (const m of messages.filter((x) => !ackedIds.has(x.id))) {
      assert.ok(mayCome.has(m.data), `${label}: ${m.id} carries ${m.data}, which nobody published`);
    }
    assert.deepEqual(ids.filter((id) => ackedIds.has(id)), expectIds, `${label}: every message once, in seq order across topics`);
    assert.deepEqual([...new Set(gaps.map((g) => g.topic))].sort(), [...gapTopics].sort(), `${label}: gaps only where history lost messages`);
  }
}

/** Cuts node B off Redis (its reconnects held) and waits until it knows. */
async function cutOff(proxy, B) {
  proxy.pause({ filter: () => false, newConnections: true });
  proxy.cut();
  await waitUnhealthy(B, { timeout: TIMEOUT_MS + MARGIN_MS });
}

test('a node cut off while others publish to several topics interleaved: after reconnecting, every message once, in seq order', async (t) => {
  const { proxy, A, B, C } = await setupBehindProxy(t, 3);
  const topics = topicsOf('order-', 5);
  const views = await subscribers(t, B, topics);
  const before = await publishInterleaved([A], topics, 5, 'before');
  for (const [label, client] of views) await waitForId(client, before.at(-1).id, { label });

  await cutOff(proxy, B);
  const missed = await publishInterleaved([A, C], topics, 200, 'm');
  proxy.resume();
  await waitHealthy(B, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });
  const after = await publishInterleaved([A, B], topics, 10, 'after');

  const acked = [...before, ...missed, ...after];
  await checkClients(views, acked, { topics, expectIds: acked.map((a) => a.id) });
});

test('catch-up of several topics of which one lost history: a gap for that topic only, everything else once, in order', async (t) => {
  const history = 20;
  const config = { ...CONFIG, history: { max_messages: history } };
  const { proxy, A, B } = await setupBehindProxy(t, 2, config);
  const topics = topicsOf('trim-', 4);
  const views = await subscribers(t, B, topics);
  const before = await publishInterleaved([A], topics, 4, 'before');
  for (const [label, client] of views) await waitForId(client, before.at(-1).id, { label });

  await cutOff(proxy, B);
  // trim-0 gets 60 messages (40 of them trimmed away), the others 10 each, interleaved.
  const items = [];
  for (let k = 0; k < 60; k++) {
    items.push({ topic: 'trim-0', data: `t${k}` });
    if (k % 2 === 0) items.push({ topic: topics[1 + ((k / 2) % 3)], data: `o${k}` });
  }
  const missed = [];
  for (const it of items) missed.push(...await publishInterleaved([A], [it.topic], 1, it.data));
  proxy.resume();
  await waitHealthy(B, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });

  const trimmed = missed.filter((m) => m.topic === 'trim-0');
  const kept = new Set(trimmed.slice(-history).map((m) => m.id));
  const expect = [...before, ...missed.filter((m) => m.topic !== 'trim-0' || kept.has(m.id))].map((m) => m.id);
  await checkClients(views, [...before, ...missed], { topics, expectIds: expect, gapTopics: ['trim-0'] });
  for (const [label, client] of views) {
    const got = itemsOf(client);
    const gap = got.find((i) => i.type === 'gap');
    assert.equal(gap.to, trimmed.at(-history - 1).id, `${label}: the gap ends at the newest trimmed message`);
    const firstKept = got.findIndex((i) => i.id === trimmed.at(-history).id);
    assert.ok(got.indexOf(gap) < firstKept, `${label}: the gap comes before trim-0's next message`);
  }
});

test('a catch-up longer than a read page on several topics: merged across pages, every message once, in order', async (t) => {
  const config = { ...CONFIG, history: { max_messages: 5000 } };
  const { proxy, A, B } = await setupBehindProxy(t, 2, config);
  const topics = topicsOf('page-', 3);
  const views = await subscribers(t, B, topics);
  const before = await publishInterleaved([A], topics, 3, 'before');
  for (const [label, client] of views) await waitForId(client, before.at(-1).id, { label });

  await cutOff(proxy, B);
  // Unevenly interleaved, more than 1024 (one read's page) for two of the topics.
  const items = [];
  for (let k = 0; k < 3300; k++) {
    const topic = k % 11 === 0 ? 'page-2' : topics[k % 2];
    items.push({ topic, data: `p${k}` });
  }
  const missed = await publishBatches(A, items);
  proxy.resume();
  await waitHealthy(B, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });

  const acked = [...before, ...missed];
  await checkClients(views, acked, { topics, expectIds: acked.map((a) => a.id) });
});

test('pub/sub connections killed (CLIENT KILL TYPE pubsub) under interleaved publishes to several topics: every message once, in order', async (t) => {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const cluster = await startCluster(3, { redis, config: CONFIG });
  onTestEnd(t, () => cluster.stop());
  const { A, B, C } = cluster;
  const topics = topicsOf('kill-', 5);
  const views = [...await subscribers(t, A, topics), ...await subscribers(t, B, topics)];

  // Two publishers over A, B and C, topics in turn, while the pub/sub connections are killed.
  const acked = [];
  const unknown = [];
  let running = true;
  let n = 0;
  const lane = async () => {
    while (running) {
      const k = n++;
      const topic = topics[k % topics.length];
      const res = await publish([A, B, C][k % 3].url, topic, `k${k}`);
      if (res.status === 201) acked.push({ id: res.json.id, topic, data: `k${k}` });
      else if (res.status === 503 && res.json?.error === 'outcome_unknown') unknown.push(`k${k}`);
      else if (res.status === 503) await sleep(20);
      else assert.fail(`publish k${k}: ${res.status} ${res.text}`);
    }
  };
  const lanes = Promise.all([lane(), lane()]);
  try {
    await until(() => acked.length >= 50, { timeout: 20_000, what: '50 publishes' });
    for (let round = 0; round < 2; round++) {
      const killed = await redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
      assert.ok(killed >= 3, `CLIENT KILL TYPE pubsub killed ${killed} connections (one per node expected)`);
      const have = acked.length;
      await until(() => acked.length >= have + 100, { timeout: 20_000, what: '100 more publishes' });
    }
  } finally {
    running = false;
    await lanes;
  }
  acked.sort(bySeq);
  await checkClients(views, acked, { topics, expectIds: acked.map((a) => a.id), unknown });
});

test('topics newly subscribed on a node one after the other under interleaved publishes: their seams keep seq order across topics', async (t) => {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const cluster = await startCluster(3, { redis, config: CONFIG });
  onTestEnd(t, () => cluster.stop());
  const { A, B, C } = cluster;
  const topics = topicsOf('seam-', 5);
  const acked = [];
  let running = true;
  let n = 0;
  const lane = async () => {
    while (running) {
      const k = n++;
      const topic = topics[k % topics.length];
      const res = await publish([A, C][k % 2].url, topic, `s${k}`);
      assert.equal(res.status, 201, `publish s${k}: ${res.status} ${res.text}`);
      acked.push({ id: res.json.id, topic, data: `s${k}` });
    }
  };
  const lanes = Promise.all([lane(), lane(), lane()]);
  let ws;
  let sse;
  try {
    await until(() => acked.length >= 20, { what: '20 publishes' });
    // One WebSocket subscribing to one topic after the other (each new on B),
    // and an SSE client on all of them once the last is followed.
    ws = await openWS(B.url, '/ws');
    onTestEnd(t, () => ws.close());
    for (const topic of topics) {
      await ws.ok({ op: 'subscribe', topics: [topic] });
      const have = acked.length;
      await until(() => acked.length >= have + 10, { what: '10 more publishes' });
    }
    sse = await subscribe(B.url, `/events?${topics.map((x) => `topic=${x}`).join('&')}`);
    onTestEnd(t, () => sse.close());
    const have = acked.length;
    await until(() => acked.length >= have + 30, { what: '30 more publishes' });
  } finally {
    running = false;
    await lanes;
  }
  acked.sort(bySeq);
  // Every message published after the SSE client was answered reaches both.
  const lastId = acked.at(-1).id;
  for (const [label, client] of [['WebSocket on B', ws], ['SSE on B', sse]]) {
    await waitForId(client, lastId, { timeout: 10_000, label });
    const { ids } = assertSequence(itemsOf(client), { label, only: acked.map((a) => a.id), topics });
    const from = acked.findIndex((a) => a.id === ids[0]);
    const tail = acked.slice(-20).map((a) => a.id);
    for (const id of tail) assert.ok(ids.includes(id), `${label}: ${id} delivered`);
    assert.ok(from >= 0, `${label}: delivered what was published`);
  }
});

test('a catch-up of more topics than one round reads in full (fewer entries per topic): every message once, in order', async (t) => {
  const config = { ...CONFIG, history: { max_messages: 5000 } };
  const { proxy, A, B } = await setupBehindProxy(t, 2, config);
  const topics = topicsOf('many-', 24);
  const views = await subscribers(t, B, topics);
  const before = await publishInterleaved([A], topics, 24, 'before');
  for (const [label, client] of views) await waitForId(client, before.at(-1).id, { label });

  await cutOff(proxy, B);
  // 24 topics: a round reads 16384 / 24 = 682 entries of each; the busiest hold more.
  const items = [];
  for (let k = 0; k < 17400; k++) items.push({ topic: topics[(k * 7 + (k >> 9)) % 24], data: `n${k}` });
  const missed = await publishBatches(A, items);
  proxy.resume();
  await waitHealthy(B, { timeout: HEALTHY_WITHIN_MS + MARGIN_MS });

  const acked = [...before, ...missed];
  await checkClients(views, acked, { topics, expectIds: acked.map((a) => a.id) });
});
