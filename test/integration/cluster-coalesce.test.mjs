// Group commit in cluster mode (docs/api.md "Scale-out"): publishes that
// reach a node's engine while a publish script call is under way go to
// Redis together, as one call, in the order they were posted. Each request
// still gets its own ids and its own outcome: many connections publishing
// at once (HTTP, pipelined; WebSocket, many in flight) get distinct ids
// that increase per connection, each answer names its own message, and
// every message reaches the subscribers on the other node once. A request
// Redis refuses (an operator's key of the wrong type) fails alone; the
// others in its call are published. Also run against herald-tsan (workers
// and the engine thread hand requests over).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  subscribe, openWS, publishBatch, request, until, assertError, RawConn, parseResponses,
} from '../lib/harness.mjs';
import {
  startRedis, startCluster, metric, sseItems, messageIds, splitId,
} from '../lib/cluster.mjs';

const CONFIG = { workers: 2, heartbeat_s: 5 };

async function setup(t) {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const cluster = await startCluster(2, { redis, config: CONFIG });
  t.after(() => cluster.stop());
  return { redis, ...cluster };
}

/** Redis's count of calls of a command (INFO commandstats), 0 when never called. */
async function commandCalls(redis, command) {
  const info = await redis.cli('INFO', 'commandstats');
  const m = new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(info);
  return m ? Number(m[1]) : 0;
}

function topicRequest(topic, body) {
  return `POST /topics/${topic} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** Sends requests pipelined on one connection (in a few writes); resolves the parsed answers. */
async function pipelined(node, requests, { timeout = 20_000 } = {}) {
  const conn = await RawConn.connect(node.host, node.port);
  try {
    for (let i = 0; i < requests.length; i += 25) await conn.write(requests.slice(i, i + 25).join(''));
    let answers = [];
    await until(() => {
      answers = parseResponses(conn.buf).responses.filter((r) => r.complete);
      return answers.length >= requests.length;
    }, { timeout, what: () => `${requests.length} answers (got ${answers.length})` });
    return answers.map((a) => ({ status: a.status, json: a.json }));
  } finally {
    conn.socket.destroy();
  }
}

function assertIncreasing(ids, label) {
  for (let i = 1; i < ids.length; i++) {
    const [p, c] = [splitId(ids[i - 1]), splitId(ids[i])];
    assert.equal(c.epoch, p.epoch, `${label}: one epoch`);
    assert.ok(c.seq > p.seq, `${label}: ids increase in request order: ${ids[i - 1]} then ${ids[i]}`);
  }
}

/** The messages B holds of topic, id → data (one read, within history.max_messages). */
async function stored(node, topic) {
  const res = await request(`${node.url}/poll?topic=${topic}&since=earliest&limit=1000&timeout=0`);
  assert.equal(res.status, 200);
  return new Map(res.json.messages.map((m) => [m.id, m.data]));
}

/** Waits until sub got n messages; asserts they are exactly `ids` (in order), once each, with `data`. */
async function assertDeliveredOnce(sub, expected, label) {
  await sub.waitFor(() => messageIds(sseItems(sub)).length >= expected.length,
    { timeout: 15_000, what: `${expected.length} messages on ${label} (got ${messageIds(sseItems(sub)).length})` });
  const got = sseItems(sub).filter((i) => i.type === 'message');
  assert.deepEqual(got.map((i) => i.id), expected.map((e) => e.id), `${label}: every message once, in id order`);
  assert.deepEqual(got.map((i) => i.data), expected.map((e) => e.data), `${label}: each id carries its own data`);
}

test('many connections publishing at once: calls carry several publishes, each gets its own id, increasing per connection, delivered once', async (t) => {
  const { redis, A, B } = await setup(t);
  const topics = ['gc-0', 'gc-1', 'gc-2'];
  const subs = await Promise.all(topics.map((tp) => subscribe(B.url, `/events?topic=${tp}`)));
  t.after(() => subs.forEach((s) => s.close()));
  const callsBefore = await commandCalls(redis, 'evalsha');

  // Six HTTP connections with 100 publishes pipelined each (two per topic), and a
  // WebSocket with 100 publishes in flight at once; all to node A.
  const CONNS = 6;
  const N = 100;
  const ws = await openWS(A.url, '/ws');
  t.after(() => ws.close());
  const wsPublishes = Array.from({ length: N }, (_, i) => ws.call({ op: 'publish', topic: topics[0], data: `w-${i}`, ref: `w${i}` }, { timeout: 20_000 }));
  const httpAnswers = await Promise.all(Array.from({ length: CONNS }, (_, c) => pipelined(A,
    Array.from({ length: N }, (_, i) => topicRequest(topics[c % topics.length], `c${c}-${i}`)))));
  const wsAcks = await Promise.all(wsPublishes);

  const published = []; // {id, topic, data}
  httpAnswers.forEach((answers, c) => {
    assert.deepEqual(answers.map((a) => a.status), Array(N).fill(201), `connection ${c}: every publish 201`);
    const ids = answers.map((a) => a.json.id);
    assertIncreasing(ids, `connection ${c}`);
    ids.forEach((id, i) => published.push({ id, topic: topics[c % topics.length], data: `c${c}-${i}` }));
  });
  assert.deepEqual(wsAcks.map((a) => a.type), Array(N).fill('ack'), 'every WebSocket publish acknowledged');
  assertIncreasing(wsAcks.map((a) => a.id), 'WebSocket');
  wsAcks.forEach((a, i) => published.push({ id: a.id, topic: topics[0], data: `w-${i}` }));
  assert.equal(new Set(published.map((p) => p.id)).size, published.length, 'ids are distinct');

  // Fewer script calls than publishes: requests that were queued together went together.
  const calls = await commandCalls(redis, 'evalsha') - callsBefore;
  assert.ok(calls < published.length, `${calls} publish script calls for ${published.length} publishes`);

  // Each answer names its own message, and every subscriber on B gets its topic's once.
  for (const topic of topics) {
    const mine = published.filter((p) => p.topic === topic)
      .sort((x, y) => (splitId(x.id).seq < splitId(y.id).seq ? -1 : 1));
    const held = await stored(B, topic);
    assert.deepEqual(mine.filter((p) => held.get(p.id) !== p.data).slice(0, 3), [], `${topic}: each answer's id holds that request's message`);
    await assertDeliveredOnce(subs[topics.indexOf(topic)], mine, `the subscriber of ${topic} on B`);
  }
});

test('a request Redis refuses (an operator key of the wrong type) fails alone: the publishes coalesced with it are stored, counted once each', async (t) => {
  const { redis, A, B } = await setup(t);
  // An operator left a string where the topic's meta hash belongs: the script refuses any publish to it.
  await redis.cli('SET', '{herald}:m:gb-bad', 'not a hash');
  const topics = ['gb-0', 'gb-1'];
  const subs = await Promise.all(topics.map((tp) => subscribe(B.url, `/events?topic=${tp}`)));
  t.after(() => subs.forEach((s) => s.close()));
  const errors = async () => (await metric(A, 'herald_cluster_publish_failures_total', 'reason="error"')) ?? 0;
  const errorsBefore = await errors();

  // Redis holds the first call for a moment, so that what follows queues on
  // node A and goes as one call with the bad requests among the good ones.
  assert.equal(await redis.cli('CLIENT', 'PAUSE', '300', 'ALL'), 'OK');
  // Four connections publish good messages, pipelined; a fifth mixes single
  // publishes to the bad topic among good ones; /publish batches with and
  // without a bad item go at the same time.
  const N = 60;
  const good = Array.from({ length: 4 }, (_, c) => pipelined(A,
    Array.from({ length: N }, (_, i) => topicRequest(topics[c % 2], `c${c}-${i}`))));
  const mixedBodies = Array.from({ length: N }, (_, i) => (i % 3 === 1 ? ['gb-bad', `bad-${i}`] : [topics[i % 2], `m-${i}`]));
  const mixed = pipelined(A, mixedBodies.map(([tp, body]) => topicRequest(tp, body)));
  const batches = Array.from({ length: 6 }, (_, k) => publishBatch(A.url, k % 2 === 0
    ? [{ topic: topics[0], data: `b${k}-0` }, { topic: 'gb-bad', data: `b${k}-bad` }, { topic: topics[1], data: `b${k}-2` }]
    : [{ topic: topics[0], data: `b${k}-0` }, { topic: topics[1], data: `b${k}-1` }]));
  const [goodAnswers, mixedAnswers, batchAnswers] = await Promise.all([Promise.all(good), mixed, Promise.all(batches)]);

  const published = [];
  goodAnswers.forEach((answers, c) => {
    assert.deepEqual(answers.map((a) => a.status), Array(N).fill(201), `connection ${c}: every publish 201`);
    assertIncreasing(answers.map((a) => a.json.id), `connection ${c}`);
    answers.forEach((a, i) => published.push({ id: a.json.id, topic: topics[c % 2], data: `c${c}-${i}` }));
  });
  const mixedGood = [];
  mixedAnswers.forEach((a, i) => {
    const [tp, body] = mixedBodies[i];
    if (tp === 'gb-bad') {
      assert.equal(a.status, 503, `mixed request ${i} (bad topic)`);
      assert.equal(a.json.error, 'unavailable');
    } else {
      assert.equal(a.status, 201, `mixed request ${i}`);
      mixedGood.push(a.json.id);
      published.push({ id: a.json.id, topic: tp, data: body });
    }
  });
  assertIncreasing(mixedGood, 'the mixed connection');
  let refusedBatches = 0;
  batchAnswers.forEach((res, k) => {
    if (k % 2 === 0) {
      assertError(res, 503, 'unavailable'); // all or nothing: its good items are not stored
      refusedBatches++;
    } else {
      assert.equal(res.status, 201, `batch ${k}: ${res.text}`);
      const ids = res.json.messages.map((m) => m.id);
      assertIncreasing(ids, `batch ${k}`);
      ids.forEach((id, i) => published.push({ id, topic: topics[i], data: `b${k}-${i}` }));
    }
  });
  assert.equal(new Set(published.map((p) => p.id)).size, published.length, 'ids are distinct');

  // Nothing reached the bad topic; each refused request counts once.
  assert.equal(await redis.cli('TYPE', '{herald}:m:gb-bad'), 'string');
  assert.equal(await redis.cli('EXISTS', '{herald}:s:gb-bad'), 0);
  const refused = mixedBodies.filter(([tp]) => tp === 'gb-bad').length + refusedBatches;
  assert.equal(await errors() - errorsBefore, refused);

  for (const topic of topics) {
    const mine = published.filter((p) => p.topic === topic)
      .sort((x, y) => (splitId(x.id).seq < splitId(y.id).seq ? -1 : 1));
    const held = await stored(B, topic);
    assert.equal(held.size, mine.length, `${topic}: only the accepted publishes are stored`);
    assert.deepEqual(mine.filter((p) => held.get(p.id) !== p.data).slice(0, 3), [], `${topic}: each answer's id holds that request's message`);
    await assertDeliveredOnce(subs[topics.indexOf(topic)], mine, `the subscriber of ${topic} on B`);
  }
  // The node goes on publishing.
  const after = await publishBatch(A.url, [{ topic: topics[0], data: 'after' }]);
  assert.equal(after.status, 201);
});
