// Scale-out delivery (SPEC §5): three herald nodes on one real Redis act as
// one hub. A message published on any node reaches subscribers on every node
// and every transport with the same id and the same bytes, exactly once and
// in id order; an id from one node is a cursor on every other; history, gaps,
// batches and the history counts of GET /topics are the cluster's (subscriber
// counts are each node's own).
//
// HERALD_CLUSTER_SINGLE=1 runs these against one memory-engine node (see
// test/lib/cluster.mjs), which checks the tests themselves.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  publishOk, publishBatch, subscribe, openWS, request, assertError, sleep, ID_RE,
} from '../lib/harness.mjs';
import {
  startRedis, startCluster, assertSequence, sseItems, wsItems, pollItems, messageIds, splitId, poll, newestCursor,
} from '../lib/cluster.mjs';

const HISTORY = 100; // history.max_messages of every node

let redis;
let cluster;
let A;
let B;
let C;

before(async () => {
  redis = await startRedis();
  cluster = await startCluster(3, { redis, config: { history: { max_messages: HISTORY } } });
  ({ A, B, C } = cluster);
});

after(async () => {
  await cluster?.stop();
  await redis?.stop();
});

/** Long-polls node from cursor until `n` messages arrived (or timeout); resolves the answers. */
async function pollUntil(node, topics, since, n, { timeout = 15_000 } = {}) {
  const answers = [];
  let cursor = since;
  let got = 0;
  const deadline = Date.now() + timeout;
  while (got < n) {
    assert.ok(Date.now() < deadline, `long-poll on ${node.name}: ${got} of ${n} messages after ${timeout} ms`);
    const a = await poll(node, topics, { since: cursor, timeout: 5, limit: 1000 });
    answers.push(a);
    got += a.messages.length;
    cursor = a.cursor;
  }
  return answers;
}

/** Publishes n messages to topic on node through /publish batches; resolves the ids. */
async function publishMany(node, topic, n, prefix = 'm') {
  const ids = [];
  for (let i = 0; i < n; i += 50) {
    const items = Array.from({ length: Math.min(50, n - i) }, (_, k) => ({ topic, data: `${prefix}${i + k}` }));
    const res = await publishBatch(node.url, items);
    assert.equal(res.status, 201, `batch on ${node.name}: ${res.text}`);
    ids.push(...res.json.messages.map((m) => m.id));
  }
  return ids;
}

test('a publish on A reaches SSE on B, WebSocket on C and a long-poll on B with the same id and bytes', async () => {
  const topic = 'fan-out';
  const data = 'héllo\nwörld ✓ "quoted" <b>';
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  const sseJsonA = await subscribe(A.url, `/events?topic=${topic}&format=json`);
  const wsC = await openWS(C.url, '/ws');
  try {
    await wsC.ok({ op: 'subscribe', topics: [topic] });
    const cursor = await newestCursor(B);
    const longPoll = poll(B, [topic], { since: cursor, timeout: 10 });
    longPoll.catch(() => {}); // awaited below
    const res = await publishOk(A.url, topic, data, { event: 'created' });
    assert.equal(res.topic, topic);

    const [ev] = await sseB.waitEvents(1);
    assert.equal(ev.id, res.id, 'SSE on B: the id A answered');
    assert.equal(ev.event, 'created');
    assert.equal(ev.data, data);
    const [evA] = await sseJsonA.waitEvents(1);
    const [envC] = await wsC.waitEnvelopes(1);
    const answer = await longPoll;
    assert.equal(answer.gap, false);
    assert.equal(answer.messages.length, 1, `long-poll on B: ${JSON.stringify(answer)}`);
    const envA = JSON.parse(evA.data);
    assert.equal(evA.id, res.id);
    assert.deepEqual(envC, { type: 'message', topic, id: res.id, event: 'created', data, time: envC.time });
    assert.equal(typeof envC.time, 'number');
    assert.deepEqual(envA, envC, 'SSE format=json on A and WebSocket on C carry the same envelope (same time)');
    assert.deepEqual(answer.messages[0], envC, 'long-poll on B: the same envelope');

    await Promise.all([sseB.expectNoMore(300), wsC.expectNoMore(0), sseJsonA.expectNoMore(0)]);
  } finally {
    sseB.close();
    sseJsonA.close();
    wsC.close();
  }
});

test('an id issued on A is a cursor on B and C at once, for any set of topics', async () => {
  const x = 'resume-x';
  const y = 'resume-y';
  const x1 = await publishOk(A.url, x, 'x1');
  const y1 = await publishOk(C.url, y, 'y1');
  const x2 = await publishOk(B.url, x, 'x2');
  const y2 = await publishOk(A.url, y, 'y2');
  const expected = [y1.id, x2.id, y2.id];
  let x3Id;

  const sse = await subscribe(B.url, `/events?topic=${x}&topic=${y}`, { headers: { 'Last-Event-ID': x1.id } });
  const ws = await openWS(C.url, '/ws');
  try {
    await sse.waitEvents(3);
    assert.deepEqual(sse.events.map((e) => e.id), expected, 'SSE on B resumed after A\'s id, in id order');
    assert.deepEqual(sse.events.map((e) => e.data), ['y1', 'x2', 'y2']);
    await ws.ok({ op: 'subscribe', topics: [x, y], since: x1.id });
    await ws.waitEnvelopes(3);
    assert.deepEqual(messageIds(wsItems(ws)), expected, 'WebSocket on C');
    const answer = await poll(B, [x, y], { since: x1.id });
    assert.deepEqual(messageIds(pollItems([answer])), expected, 'poll on B');
    assert.equal(answer.gap, false);

    // Live messages follow the catch-up on both.
    const x3 = await publishOk(C.url, x, 'x3');
    x3Id = x3.id;
    await sse.waitEvents(4);
    await ws.waitEnvelopes(4);
    assert.equal(sse.events[3].id, x3.id);
    assert.equal(ws.envelopes()[3].id, x3.id);
    await Promise.all([sse.expectNoMore(300), ws.expectNoMore(0)]);
  } finally {
    sse.close();
    ws.close();
  }

  // 201 means Redis stored it: the message is in history for every node at
  // once. And a node checks a cursor against the cluster's sequence, not its
  // own: an id A just issued is never "beyond the newest id" on B or C.
  let prev = x3Id;
  for (let i = 0; i < 50; i++) {
    const { id } = await publishOk(A.url, x, `fresh${i}`);
    const node = i % 2 ? B : C;
    const read = await poll(node, [x], { since: prev });
    assert.deepEqual(read.messages.map((m) => m.id), [id], `round ${i}: ${id} from A in history on ${node.name}`);
    const res = await request(`${node.url}/poll?topic=${x}&since=${id}&timeout=0`);
    assert.equal(res.status, 200, `round ${i}: ${id} from A as a cursor on ${node.name}: ${res.status} ${res.text}`);
    assert.deepEqual(res.json.messages, []);
    assert.equal(res.json.gap, false);
    prev = id;
  }

  // A cursor of the current epoch beyond the cluster's newest id is refused on every node.
  const { epoch, seq } = splitId((await publishOk(A.url, x, 'last')).id);
  const future = `${epoch}-${seq + 1000n}`;
  for (const node of [A, B, C]) {
    assertError(await request(`${node.url}/poll?topic=${x}&since=${future}&timeout=0`), 400, 'invalid_cursor');
    assertError(await request(`${node.url}/events?topic=${x}`, { headers: { 'Last-Event-ID': future } }), 400, 'invalid_cursor');
  }
});

test('history is the cluster\'s: gaps across nodes past history.max_messages, none at the exact trim edge', async () => {
  const topic = 'gaps';
  const ids = await publishMany(A, topic, HISTORY + 30, 'g');
  const lostNewest = ids[29]; // ids[0..29] were trimmed, ids[30..] are held

  // A cursor before the trim: a gap (cursor, newest lost], then all that is held.
  const sse = await subscribe(B.url, `/events?topic=${topic}&last_event_id=${ids[0]}`);
  const ws = await openWS(C.url, '/ws');
  try {
    await sse.waitEvents(1 + HISTORY);
    const items = sseItems(sse);
    assert.deepEqual(items[0], { type: 'gap', topic, from: ids[0], to: lostNewest }, 'SSE on B: the gap first');
    assert.deepEqual(messageIds(items), ids.slice(30));
    await ws.ok({ op: 'subscribe', topics: [topic], since: ids[0] });
    await ws.waitEnvelopes(HISTORY);
    const wItems = wsItems(ws);
    assert.deepEqual(wItems[0], { type: 'gap', topic, from: ids[0], to: lostNewest }, 'WebSocket on C: the gap first');
    assert.deepEqual(messageIds(wItems), ids.slice(30));
    const answer = await poll(B, [topic], { since: ids[0], limit: 1000 });
    assert.equal(answer.gap, true);
    assert.deepEqual(answer.gaps, [{ topic, from: ids[0], to: lostNewest }]);
    assert.deepEqual(answer.messages.map((m) => m.id), ids.slice(30));
  } finally {
    sse.close();
    ws.close();
  }

  // One before the edge: exactly the newest lost message is reported.
  const before = await poll(C, [topic], { since: ids[28], limit: 1000 });
  assert.deepEqual(before.gaps, [{ topic, from: ids[28], to: lostNewest }]);
  assert.deepEqual(before.messages.map((m) => m.id), ids.slice(30));

  // At the edge (the cursor is the newest trimmed message): nothing was lost, no gap.
  for (const node of [A, B, C]) {
    const edge = await poll(node, [topic], { since: lostNewest, limit: 1000 });
    assert.equal(edge.gap, false, `${node.name}: no gap at the trim edge: ${JSON.stringify(edge.gaps)}`);
    assert.deepEqual(edge.messages.map((m) => m.id), ids.slice(30));
  }
  const sseEdge = await subscribe(C.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': lostNewest } });
  try {
    await sseEdge.waitEvents(HISTORY);
    await sseEdge.expectNoMore(300);
    assert.deepEqual(sseItems(sseEdge).map((i) => i.type === 'gap' ? 'gap' : i.id), ids.slice(30), 'SSE on C: no gap at the edge');
  } finally {
    sseEdge.close();
  }
});

test('a batch is all or nothing on every node', async () => {
  const t1 = 'batch-1';
  const t2 = 'batch-2';
  const subs = [
    await subscribe(A.url, `/events?topic=${t1}&topic=${t2}`),
    await subscribe(B.url, `/events?topic=${t1}&topic=${t2}&format=json`),
  ];
  const ws = await openWS(C.url, '/ws');
  try {
    await ws.ok({ op: 'subscribe', topics: [t1, t2] });
    const badItems = [
      [{ topic: t1, data: 'ok' }, { topic: 'bad topic!', data: 'x' }],
      [{ topic: t1, data: 'ok' }, { topic: t2, data: 'x', event: 'bad event!' }],
      [{ topic: t1, data: 'ok' }, { topic: t2, data: 'x'.repeat(65537) }],
      [{ topic: t1, data: 'ok' }, { topic: t2 }],
    ];
    const codes = ['invalid_topic', 'invalid_event', 'payload_too_large', 'invalid_json'];
    for (const [k, items] of badItems.entries()) {
      const node = [A, B, C][k % 3];
      const res = await publishBatch(node.url, items);
      assertError(res, codes[k] === 'payload_too_large' ? 413 : 400, codes[k]);
    }
    await Promise.all([...subs.map((s) => s.expectNoMore(300)), ws.expectNoMore(0)]);
    for (const node of [A, B, C]) {
      const res = await request(`${node.url}/topics/${t1}`);
      assert.equal(res.status, 200, `${node.name}: ${res.text}`); // it has subscribers
      assert.equal(res.json.last_id, null, `${node.name}: nothing was ever published to ${t1}`);
      assert.equal(res.json.history.messages, 0);
    }

    const good = await publishBatch(B.url, [{ topic: t1, data: 'a' }, { topic: t2, data: 'b', event: 'e' }, { topic: t1, data: 'c' }]);
    assert.equal(good.status, 201, good.text);
    const ids = good.json.messages.map((m) => m.id);
    assert.deepEqual(good.json.messages.map((m) => m.topic), [t1, t2, t1]);
    ids.forEach((id) => assert.match(id, ID_RE));
    assertSequence(ids.map((id) => ({ type: 'message', id })), { label: 'the batch answer' });
    for (const s of subs) await s.waitEvents(3);
    await ws.waitEnvelopes(3);
    for (const [label, items] of [['SSE on A', sseItems(subs[0])], ['SSE on B', sseItems(subs[1])], ['WebSocket on C', wsItems(ws)]]) {
      assert.deepEqual(messageIds(items), ids, `${label}: the whole batch, in order`);
    }
    assert.deepEqual(wsItems(ws).map((e) => [e.topic, e.data, e.event]), [[t1, 'a', undefined], [t2, 'b', 'e'], [t1, 'c', undefined]]);
    await Promise.all([...subs.map((s) => s.expectNoMore(300)), ws.expectNoMore(0)]);
  } finally {
    subs.forEach((s) => s.close());
    ws.close();
  }
});

test('concurrent publishers on A and B: subscribers on A, B and C see one identical, increasing sequence', async () => {
  const topics = ['conc-1', 'conc-2'];
  const perNode = 150;
  const q = topics.map((t) => `topic=${t}`).join('&');
  const sseA = await subscribe(A.url, `/events?${q}&format=json`);
  const wsB = await openWS(B.url, '/ws');
  const sseC = await subscribe(C.url, `/events?${q}`);
  try {
    await wsB.ok({ op: 'subscribe', topics });
    const cursor = await newestCursor(C);
    const pollC = pollUntil(C, topics, cursor, 2 * perNode);
    pollC.catch(() => {}); // awaited below

    const acked = [];
    const publisher = async (node, lane) => {
      for (let i = lane; i < perNode; i += 4) {
        const topic = topics[i % 2];
        const res = await publishOk(node.url, topic, `${node.name}${i}`);
        acked.push({ id: res.id, topic });
      }
    };
    await Promise.all([A, B].flatMap((node) => [0, 1, 2, 3].map((lane) => publisher(node, lane))));
    assert.equal(acked.length, 2 * perNode);
    const expected = acked.map((a) => a.id).sort((x, y) => {
      const a = splitId(x);
      const b = splitId(y);
      assert.equal(a.epoch, b.epoch, 'one epoch throughout');
      return a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0;
    });
    assert.equal(new Set(expected).size, expected.length, 'no id issued twice across nodes');

    await sseA.waitEvents(expected.length, { timeout: 20_000 });
    await wsB.waitEnvelopes(expected.length, { timeout: 20_000 });
    await sseC.waitEvents(expected.length, { timeout: 20_000 });
    const polled = await pollC;
    const views = {
      'SSE (json) on A': sseItems(sseA),
      'WebSocket on B': wsItems(wsB),
      'SSE on C': sseItems(sseC),
      'long-poll on C': pollItems(polled),
    };
    for (const [label, items] of Object.entries(views)) {
      const { ids, gaps } = assertSequence(items, { label, acked, only: expected, topics });
      assert.deepEqual(gaps, [], `${label}: no gap`);
      assert.deepEqual(ids, expected, `${label}: every message once, in id order`);
    }
    assert.deepEqual(views['WebSocket on B'], views['SSE (json) on A'].map(({ sseEvent, ...env }) => env), 'same envelopes on A and B');
    await Promise.all([sseA.expectNoMore(300), wsB.expectNoMore(0), sseC.expectNoMore(0)]);
  } finally {
    sseA.close();
    wsB.close();
    sseC.close();
  }
});

test('subscribe on B, publish on A at once: nothing missed, nothing twice (200 WebSocket + 50 SSE rounds)', async () => {
  const ws = await openWS(B.url, '/ws');
  const acked = [];
  try {
    for (let i = 0; i < 200; i++) {
      const topic = `race-ws-${i}`;
      await ws.ok({ op: 'subscribe', topics: [topic] });
      const { id } = await publishOk(A.url, topic, `r${i}`);
      acked.push(id);
      await ws.waitFor(() => ws.envelopes(topic).length >= 1, { what: `round ${i}: ${id} on B` });
      await ws.ok({ op: 'unsubscribe', topics: [topic] });
    }
    await ws.expectNoMore(300);
    const items = wsItems(ws);
    const { ids, gaps } = assertSequence(items, { label: 'WebSocket on B', acked, only: acked });
    assert.deepEqual(gaps, []);
    assert.deepEqual(ids, acked);
  } finally {
    ws.close();
  }

  for (let i = 0; i < 50; i++) {
    const topic = `race-sse-${i}`;
    const sse = await subscribe(C.url, `/events?topic=${topic}`);
    try {
      const { id } = await publishOk(A.url, topic, `s${i}`);
      await sse.waitEvents(1);
      assert.equal(sse.events[0].id, id, `round ${i}`);
      if (i % 10 === 0) await sse.expectNoMore(100);
      assert.equal(sse.events.length, 1, `round ${i}: once`);
    } finally {
      sse.close();
    }
  }
});

test('resuming on another node while A publishes: no hole and no duplicate at the seam', async () => {
  const topic = 'seam';
  let last = (await publishOk(A.url, topic, 'start')).id;
  const acked = [last];
  const received = [last];
  let publishing = true;
  const publisher = (async () => {
    for (let i = 0; publishing; i++) {
      acked.push((await publishOk(A.url, topic, `p${i}`)).id);
      await sleep(2); // pace, so that history (HISTORY messages) outlasts a hop
    }
  })();
  try {
    const hops = [B, C, A];
    for (let hop = 0; hop < 45; hop++) {
      const node = hops[hop % 3];
      let got;
      if (hop % 2 === 0) {
        const sse = await subscribe(node.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': last } });
        await sse.waitEvents(3, { timeout: 10_000 });
        got = sseItems(sse);
        sse.close();
      } else {
        const ws = await openWS(node.url, '/ws');
        await ws.ok({ op: 'subscribe', topics: [topic], since: last });
        await ws.waitEnvelopes(3, { timeout: 10_000 });
        got = wsItems(ws);
        ws.close();
      }
      assert.deepEqual(got.filter((i) => i.type === 'gap'), [], `hop ${hop} on ${node.name} from ${last}: no gap`);
      received.push(...messageIds(got));
      last = received.at(-1);
    }
  } finally {
    publishing = false;
    await publisher;
  }
  // The rest, after the publisher stopped.
  const rest = await poll(B, [topic], { since: received.at(-1), limit: 1000 });
  assert.equal(rest.gap, false);
  received.push(...rest.messages.map((m) => m.id));
  assertSequence(received.map((id) => ({ type: 'message', id })), { label: 'the hopping subscriber' });
  const sorted = [...acked].sort((x, y) => (splitId(x).seq < splitId(y).seq ? -1 : 1));
  assert.deepEqual(received, sorted, 'every message exactly once across the hops');
});

test('counts: a node counts its own subscribers; history and last id are the cluster\'s', async () => {
  // docs/api.md: `subscribers` (publish answers, GET /topics/{t}, GET /topics)
  // is this node's count; history and last_id of GET /topics/{t} and
  // history_messages/last_id of GET /topics are the cluster's, from Redis.
  const topic = 'counts';
  const sse = await subscribe(B.url, `/events?topic=${topic}`);
  const ws = await openWS(B.url, '/ws');
  try {
    await ws.ok({ op: 'subscribe', topics: [topic] });
    // Both subscribers are B's at once (they were answered): B's own count needs no waiting.
    const published = [];
    const onB = await publishOk(B.url, topic, 'b0');
    published.push(onB.id);
    assert.equal(onB.subscribers, 2, 'B counts its two subscribers');
    const infoB = await request(`${B.url}/topics/${topic}`);
    assert.equal(infoB.status, 200, infoB.text);
    assert.equal(infoB.json.subscribers, 2);
    assert.deepEqual(infoB.json.subscribers_by_transport, { sse: 1, websocket: 1, poll: 0 });

    const onA = await publishOk(A.url, topic, 'a');
    published.push(onA.id);
    assert.equal(onA.subscribers, A === B ? 2 : 0, 'A counts its own subscribers (none; one node in HERALD_CLUSTER_SINGLE)');
    for (const node of [A, B, C]) {
      const info = await request(`${node.url}/topics/${topic}`);
      assert.equal(info.status, 200, `${node.name}: the topic has history in Redis: ${info.text}`);
      assert.equal(info.json.last_id, onA.id, `${node.name}: last_id is the cluster's newest`);
      assert.equal(info.json.history.messages, published.length, `${node.name}: history is the cluster's`);
      assert.equal(info.json.subscribers, node === B ? 2 : 0, `${node.name} counts its own subscribers`);
      const list = await request(`${node.url}/topics?prefix=${topic}&limit=1`);
      assert.equal(list.status, 200, list.text);
      assert.deepEqual(list.json.topics[0], {
        topic, subscribers: node === B ? 2 : 0, history_messages: published.length, last_id: onA.id,
      }, `${node.name}: GET /topics says the same`);
    }
    await sse.waitEvents(published.length);
    await ws.waitEnvelopes(published.length);
    assert.deepEqual(sse.events.map((e) => e.id), published);
  } finally {
    sse.close();
    ws.close();
  }
  // The WebSocket publish op answers the same way, and its message is the cluster's.
  const wsA = await openWS(A.url, '/ws');
  try {
    const before = await newestCursor(C);
    const ack = await wsA.ok({ op: 'publish', topic, data: 'via ws' });
    assert.match(ack.id, ID_RE);
    assert.equal(ack.topic, topic);
    assert.equal(typeof ack.subscribers, 'number');
    const answer = await poll(C, [topic], { since: before });
    assert.deepEqual(answer.messages.map((m) => [m.id, m.data]), [[ack.id, 'via ws']]);
  } finally {
    wsA.close();
  }
});
