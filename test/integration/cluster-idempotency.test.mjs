// Idempotent publish in cluster mode (SPEC §5, docs/api.md): the keys live
// in Redis beside the history and are checked and set inside the publish
// script, so a key is one publish cluster-wide. A key used on node A and
// retried on node B publishes one message, seen once by subscribers of both
// nodes, and B answers 200 with A's id; concurrent retries from two nodes
// publish once; a key expires after publish.idempotency_ttl_s; after Redis
// loses its data (FLUSHALL: a new epoch) the key is new again.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { publish, publishBatch, subscribe, openWS, until, assertError } from '../lib/harness.mjs';
import { startRedis, startCluster, splitId } from '../lib/cluster.mjs';

let redis;
let cluster;
let A;
let B;

before(async () => {
  redis = await startRedis();
  cluster = await startCluster(2, { redis, config: { publish: { idempotency_ttl_s: 2 } } });
  ({ A, B } = cluster);
});

after(async () => {
  await cluster?.stop();
  await redis?.stop();
});

function keyed(key) {
  return { headers: { 'Idempotency-Key': key } };
}

/** An SSE subscriber on each node, in place (the cluster acknowledges subscriptions late). */
async function subscribersOf(topic) {
  const wsA = await openWS(A.url, '/ws');
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  await wsA.ok({ op: 'subscribe', topics: [topic] });
  // B's SSE subscription is live once a probe published on A reaches it.
  const probe = await publish(A.url, topic, 'probe');
  assert.equal(probe.status, 201, probe.text);
  await sseB.waitEvents(1);
  await wsA.waitEnvelopes(1, { topic });
  return { wsA, sseB, close: () => { wsA.close(); sseB.close(); } };
}

test('a key used on A and retried on B publishes one message to subscribers of both nodes', async () => {
  const topic = 'cl-idem';
  const subs = await subscribersOf(topic);
  try {
    const first = await publish(A.url, topic, 'one', keyed('k1'));
    assert.equal(first.status, 201, first.text);
    const again = await publish(B.url, topic, 'retry', keyed('k1'));
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.id, first.json.id);
    assert.equal(again.json.duplicate, true);
    const ws = await openWS(B.url, '/ws');
    try {
      const ack = await ws.ok({ op: 'publish', topic, data: 'ws retry', idempotency_key: 'k1' });
      assert.equal(ack.id, first.json.id);
      assert.equal(ack.duplicate, true);
    } finally {
      ws.close();
    }
    // A batch on B: one repeat, one new item, one repeat of that new item.
    const batch = await publishBatch(B.url, [
      { topic, data: 'one again', idempotency_key: 'k1' },
      { topic, data: 'two', idempotency_key: 'k2' },
      { topic, data: 'two again', idempotency_key: 'k2' },
    ]);
    assert.equal(batch.status, 201, batch.text);
    const m = batch.json.messages;
    assert.deepEqual(m.map((x) => [x.id, x.duplicate]), [[first.json.id, true], [m[1].id, undefined], [m[1].id, true]]);
    const all = await publishBatch(A.url, [{ topic, data: 'x', idempotency_key: 'k2' }]);
    assert.equal(all.status, 200, all.text);

    const next = await publish(A.url, topic, 'three');
    await subs.sseB.waitEvents(4);
    await subs.wsA.waitEnvelopes(4, { topic });
    const expected = [first.json.id, m[1].id, next.json.id];
    assert.deepEqual(subs.sseB.events.slice(1).map((e) => e.id), expected);
    assert.deepEqual(subs.wsA.envelopes(topic).slice(1).map((e) => e.id), expected);
    assert.deepEqual(subs.sseB.events.slice(1).map((e) => e.data), ['one', 'two', 'three']);
    assertError(await publish(B.url, topic, 'x', keyed('')), 400, 'invalid_idempotency_key');
  } finally {
    subs.close();
  }
});

test('concurrent retries of one key from both nodes publish one message', async () => {
  const topic = 'cl-idem-race';
  const subs = await subscribersOf(topic);
  try {
    for (let round = 0; round < 3; round++) {
      const key = `race-${round}`;
      const answers = await Promise.all(Array.from({ length: 16 }, (_, i) =>
        publish((i % 2 ? A : B).url, topic, `try ${i}`, keyed(key))));
      assert.ok(answers.every((r) => r.status === 200 || r.status === 201), answers.map((r) => r.text).join('\n'));
      assert.equal(answers.filter((r) => r.status === 201).length, 1, answers.map((r) => r.text).join('\n'));
      assert.equal(new Set(answers.map((r) => r.json.id)).size, 1);
      await subs.sseB.waitEvents(round + 2);
      await subs.wsA.waitEnvelopes(round + 2, { topic });
      assert.equal(subs.sseB.events[round + 1].id, answers[0].json.id);
    }
    await subs.sseB.expectNoMore(150, { from: 4 });
    assert.equal(subs.wsA.envelopes(topic).length, 4);
  } finally {
    subs.close();
  }
});

test('a key expires after publish.idempotency_ttl_s', async () => {
  const topic = 'cl-idem-ttl';
  const started = Date.now();
  const first = await publish(A.url, topic, 'one', keyed('t1'));
  assert.equal(first.status, 201, first.text);
  let last;
  await until(async () => {
    last = await publish(B.url, topic, 'two', keyed('t1'));
    if (last.status === 200) assert.equal(last.json.id, first.json.id);
    return last.status === 201;
  }, { timeout: 8000, interval: 100, what: 'the key to expire in Redis' });
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 1900, `the key expired after ${elapsed} ms, before the 2 s TTL`);
  assert.notEqual(last.json.id, first.json.id);
});

test('after FLUSHALL (a new epoch) the key is new again', async () => {
  const topic = 'cl-idem-epoch';
  const first = await publish(A.url, topic, 'one', keyed('e1'));
  assert.equal(first.status, 201, first.text);
  assert.equal((await publish(B.url, topic, 'one', keyed('e1'))).status, 200);
  assert.equal(await redis.cli('FLUSHALL'), 'OK');
  const again = await publish(B.url, topic, 'one', keyed('e1'));
  assert.equal(again.status, 201, again.text);
  assert.notEqual(splitId(again.json.id).epoch, splitId(first.json.id).epoch);
  const retry = await publish(A.url, topic, 'one', keyed('e1'));
  assert.equal(retry.status, 200, retry.text);
  assert.equal(retry.json.id, again.json.id);
});
