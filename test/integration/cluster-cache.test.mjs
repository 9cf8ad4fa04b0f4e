// Reads served from a node's own history (issue 12; docs/api.md, "Scale-out
// (Redis): cluster mode", "Reads"): a long-poll loop on a topic the node
// follows costs Redis no read, and whatever the node cannot prove it holds
// (a cursor older than its record, a trimmed range, a resync after pub/sub
// broke off, an id it has not received yet) is still read from Redis, with
// the same answer.
//
// Redis's read script calls are counted with MONITOR: an EVALSHA naming the
// SHA-1 of src/engine/redis_read.lua (the script is embedded verbatim).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { publish, publishOk, subscribe, request, assertError, until, sleep } from '../lib/harness.mjs';
import {
  startRedis, startProxy, startCluster, poll, pollItems, assertSequence, sseItems, messageIds, splitId,
  startMonitor, injectMessage,
} from '../lib/cluster.mjs';

const READ_SHA = createHash('sha1')
  .update(readFileSync(new URL('../../src/engine/redis_read.lua', import.meta.url)))
  .digest('hex');

let redis;
let proxy; // between B and Redis
let cluster;
let A;
let B;
let monitor;

/** Runs fn and resolves [its result, the read script calls Redis saw meanwhile]. */
async function countReads(fn) {
  const isRead = (line) => line.includes(`"${READ_SHA}"`);
  await monitor.sync(redis);
  const before = monitor.count(isRead);
  const result = await fn();
  await monitor.sync(redis);
  return [result, monitor.count(isRead) - before];
}

/**
 * Makes node follow topic: a long-poll waits on it until Redis confirmed
 * the node's SUBSCRIBE (`nodes` nodes subscribed to the channel), then a
 * publish answers it. Resolves that message's id, the newest of the
 * cluster: what the node received last, over pub/sub.
 */
async function follow(node, topic, { publisher = A, prefix = 'herald', nodes = 1 } = {}) {
  const waiting = poll(node, [topic], { timeout: 10 });
  waiting.catch(() => {});
  const channel = `{${prefix}}:c:${topic}`;
  await until(async () => (await redis.cli('PUBSUB', 'NUMSUB', channel))[1] >= nodes,
    { what: `${node.name} to subscribe to ${channel}` });
  const { id } = await publishOk(publisher.url, topic, 'follow');
  const answer = await waiting;
  assert.deepEqual(answer.messages.map((m) => m.id), [id], `${node.name} follows ${topic}`);
  return id;
}

/**
 * Publishes to topic on node every paceMs until stop() (which resolves once
 * the last publish was answered). acked: the ids answered 201, in order;
 * unknown: how many were answered outcome_unknown (they may be delivered).
 */
function publishStream(node, topic, paceMs) {
  const stream = { acked: [], unknown: 0 };
  let publishing = true;
  const done = (async () => {
    for (let i = 0; publishing; i++) {
      const res = await publish(node.url, topic, `p${i}`);
      if (res.status === 201) stream.acked.push(res.json.id);
      else if (res.json?.error === 'outcome_unknown') stream.unknown++;
      await sleep(paceMs);
    }
  })();
  stream.stop = () => { publishing = false; return done; };
  return stream;
}

before(async () => {
  redis = await startRedis();
  proxy = await startProxy(redis.port);
  cluster = await startCluster(2, { redis: [redis, proxy], config: { history: { max_messages: 100 } } });
  ({ A, B } = cluster);
  monitor = await startMonitor(redis.port);
  assert.deepEqual(await redis.cli('SCRIPT', 'EXISTS', READ_SHA), [1], 'the read script is loaded under the SHA-1 of redis_read.lua');
});

after(async () => {
  monitor?.close();
  await cluster?.stop();
  await proxy?.close();
  await redis?.stop();
});

test('a long-poll loop on B of a topic published on A: every message once, in order, and no read from Redis', async () => {
  const topic = 'cache-loop';
  let cursor = await follow(B, topic);
  const acked = [];
  const answers = [];
  const [, reads] = await countReads(async () => {
    for (let round = 0; round < 40; round++) {
      // Half the rounds wait before the publish, half find it (or wait for it) after.
      let answer;
      if (round % 2 === 0) {
        const waiting = poll(B, [topic], { since: cursor, timeout: 10 });
        waiting.catch(() => {});
        acked.push((await publishOk(A.url, topic, `r${round}`)).id);
        answer = await waiting;
      } else {
        acked.push((await publishOk(A.url, topic, `r${round}`)).id);
        answer = await poll(B, [topic], { since: cursor, timeout: 10 });
      }
      assert.equal(answer.gap, false, `round ${round}: ${JSON.stringify(answer)}`);
      assert.ok(answer.messages.length >= 1, `round ${round}`);
      answers.push(answer);
      cursor = answer.cursor;
    }
  });
  const { ids } = assertSequence(pollItems(answers), { label: 'long-poll on B', acked, only: acked });
  assert.deepEqual(ids, acked, 'every message once, in order');
  assert.equal(reads, 0, 'the rounds were answered from B\'s own history');

  // A poll that answers at once (timeout=0) still asks Redis: it must see what
  // A acknowledged, which may not have reached B yet.
  const [now, nowReads] = await countReads(() => poll(B, [topic], { since: cursor }));
  assert.deepEqual(now.messages, []);
  assert.equal(nowReads, 1);
});

test('a cursor older than B\'s record of the topic is read from Redis, a newer one is not', async () => {
  const topic = 'cache-older';
  const early = [];
  for (let i = 0; i < 3; i++) early.push((await publishOk(A.url, topic, `e${i}`)).id);
  const followed = await follow(B, topic); // B's record starts after early[2]

  const [old, oldReads] = await countReads(() => poll(B, [topic], { since: early[0], timeout: 10 }));
  assert.equal(old.gap, false);
  assert.deepEqual(old.messages.map((m) => m.id), [early[1], early[2], followed]);
  assert.equal(oldReads, 1, 'before B\'s record: Redis');

  const next = (await publishOk(A.url, topic, 'next')).id;
  const [recent, recentReads] = await countReads(() => poll(B, [topic], { since: followed, timeout: 10 }));
  assert.deepEqual(recent.messages.map((m) => m.id), [next]);
  assert.equal(recent.cursor, next);
  assert.equal(recentReads, 0, 'within B\'s record: its own history');

  // A topic B does not follow, with one it does: Redis, for both.
  const other = 'cache-unfollowed';
  const o1 = (await publishOk(A.url, other, 'o1')).id;
  const [both, bothReads] = await countReads(() => poll(B, [topic, other], { since: followed, timeout: 10 }));
  assert.deepEqual(both.messages.map((m) => m.id), [next, o1]);
  assert.equal(bothReads, 1);
});

test('an id B has not received yet: not refused, not answered early, and the wait gets what follows', async () => {
  const topic = 'cache-ahead';
  const followed = await follow(B, topic);
  // B's pub/sub connection stops delivering: A's next message is in Redis, not on B.
  proxy.pause({ filter: (c) => c.pubsub, direction: 'down' });
  let resumed = false;
  try {
    const ahead = (await publishOk(A.url, topic, 'ahead')).id;
    const waitingFor = async (p) => Promise.race([p.then(() => 'answered'), sleep(300).then(() => 'waiting')]);
    // From B's newest: the answer waits for `ahead` (B does not have it yet).
    const fromFollowed = poll(B, [topic], { since: followed, timeout: 10 });
    fromFollowed.catch(() => {});
    assert.equal(await waitingFor(fromFollowed), 'waiting', 'B does not answer "nothing new" while it lacks a message');
    // From `ahead` itself: a valid cursor (Redis knows it), nothing after it yet.
    const fromAhead = poll(B, [topic], { since: ahead, timeout: 10 });
    fromAhead.catch(() => {});
    assert.equal(await waitingFor(fromAhead), 'waiting', 'nothing after an id B has not received yet');
    const next = (await publishOk(A.url, topic, 'next')).id;
    proxy.resume();
    resumed = true;
    const a1 = await fromFollowed;
    assert.deepEqual(a1.messages.map((m) => m.id).slice(0, 1), [ahead], `from ${followed}: ${JSON.stringify(a1)}`);
    const a2 = await fromAhead;
    assert.deepEqual(a2.messages.map((m) => m.id), [next], `from ${ahead}: ${JSON.stringify(a2)}`);
    assert.equal(a2.gap, false);
  } finally {
    if (!resumed) proxy.resume();
  }
  // Beyond the cluster's newest id: still refused.
  const { epoch, seq } = splitId((await publishOk(A.url, topic, 'last')).id);
  assertError(await request(`${B.url}/poll?topic=${topic}&since=${epoch}-${seq + 1000n}&timeout=5`), 400, 'invalid_cursor');
  assertError(await request(`${B.url}/events?topic=${topic}`, { headers: { 'Last-Event-ID': `${epoch}-${seq + 1000n}` } }), 400, 'invalid_cursor');
});

test('pub/sub killed (CLIENT KILL TYPE pubsub) under a long-poll loop on B: nothing missed while B catches up', async () => {
  const topic = 'cache-resync';
  let cursor = await follow(B, topic);
  const answers = [];
  const stream = publishStream(A, topic, 5);
  try {
    const deadline = Date.now() + 20_000;
    let killed = 0;
    for (let round = 0; killed < 3 || answers.length < 60; round++) {
      assert.ok(Date.now() < deadline, `long-poll loop on B: ${answers.length} answers, ${killed} kills`);
      if (round % 15 === 5) {
        assert.ok(await redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub') >= 1);
        killed++;
      }
      const answer = await poll(B, [topic], { since: cursor, timeout: 10, limit: 1000 });
      assert.equal(answer.gap, false, `round ${round}: ${JSON.stringify(answer.gaps)}`);
      answers.push(answer);
      cursor = answer.cursor;
    }
  } finally {
    await stream.stop();
  }
  // The rest, once the publisher stopped.
  for (;;) {
    const answer = await poll(B, [topic], { since: cursor, limit: 1000 });
    answers.push(answer);
    cursor = answer.cursor;
    if (!answer.more) break;
  }
  const { acked, unknown } = stream;
  const { ids, gaps } = assertSequence(pollItems(answers), { label: 'long-poll on B', acked });
  assert.deepEqual(gaps, []);
  const ackedSet = new Set(acked);
  assert.deepEqual(ids.filter((id) => ackedSet.has(id)), acked, 'every acknowledged message once, in order');
  if (unknown === 0) assert.deepEqual(ids, acked, 'nothing else');
});

const inject = (topic, data, publish) => injectMessage(redis, topic, data, { publish });

test('a pub/sub message lost on its way: B reads it back in a catch-up round, then its own history answers from before the hole again', async () => {
  const topic = 'cache-hole';
  const followed = await follow(B, topic);
  // The next message never reaches B over pub/sub; the one after reveals it.
  const lost = await inject(topic, 'lost', false);
  const next = await inject(topic, 'next', true);
  // Whatever B answers from meanwhile, nothing is missed.
  const answer = await poll(B, [topic], { since: followed, timeout: 10 });
  assert.deepEqual(answer.messages.map((m) => [m.id, m.data]), [[lost, 'lost'], [next, 'next']]);
  assert.equal(answer.gap, false);
  // The round's read joined B's record (it started at B's last message):
  // once the catch-up is done, B answers from before the hole on its own.
  await until(async () => (await countReads(() => poll(B, [topic], { since: followed, timeout: 10 })))[1] === 0,
    { what: 'B to answer from its own history again' });
  const [again, againReads] = await countReads(() => poll(B, [topic], { since: followed, timeout: 10 }));
  assert.equal(againReads, 0);
  assert.deepEqual(again.messages.map((m) => m.id), [lost, next]);
  assert.equal(again.cursor, next);
});

test('a poller hopping between A and B, and SSE resumes on B, while A publishes: no hole, no duplicate', async () => {
  const topic = 'cache-hops';
  await follow(B, topic);
  await follow(A, topic, { nodes: 2 });
  let last = (await publishOk(A.url, topic, 'start')).id;
  const received = [last];
  const stream = publishStream(A, topic, 2);
  try {
    for (let hop = 0; hop < 120; hop++) {
      if (hop % 4 === 3) {
        const sse = await subscribe(B.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': last } });
        await sse.waitEvents(2, { timeout: 10_000 });
        const got = sseItems(sse);
        sse.close();
        assert.deepEqual(got.filter((i) => i.type === 'gap'), [], `hop ${hop}: SSE on B from ${last}`);
        received.push(...messageIds(got));
      } else {
        const node = hop % 2 ? A : B;
        const answer = await poll(node, [topic], { since: last, timeout: 10, limit: 1000 });
        assert.equal(answer.gap, false, `hop ${hop} on ${node.name}`);
        received.push(...answer.messages.map((m) => m.id));
      }
      last = received.at(-1);
    }
  } finally {
    await stream.stop();
  }
  assert.equal(stream.unknown, 0);
  const acked = [received[0], ...stream.acked];
  const rest = await poll(B, [topic], { since: last, limit: 1000 });
  received.push(...rest.messages.map((m) => m.id));
  assertSequence(received.map((id) => ({ type: 'message', id })), { label: 'the hopping client' });
  const sorted = [...acked].sort((x, y) => (splitId(x).seq < splitId(y).seq ? -1 : 1));
  assert.deepEqual(received, sorted, 'every message exactly once across the hops');
});

test('history.max_messages trims B\'s record like Redis: no gap at the trim edge (from B\'s history), a gap before it (from Redis)', async (t) => {
  const trim = await startCluster(2, { redis, config: { history: { max_messages: 5 }, cluster: { prefix: 'trim' } } });
  t.after(() => trim.stop());
  const topic = 'cache-trim';
  await follow(trim.B, topic, { publisher: trim.A, prefix: 'trim' });
  const ids = [];
  for (let i = 0; i < 8; i++) ids.push((await publishOk(trim.A.url, topic, `t${i}`)).id);
  // B received them all (a wait from the newest but one answers with the newest).
  const tail = await poll(trim.B, [topic], { since: ids[6], timeout: 10 });
  assert.deepEqual(tail.messages.map((m) => m.id), [ids[7]]);
  const held = ids.slice(3); // ids[0..2] are trimmed, in Redis and on B alike

  const [edge, edgeReads] = await countReads(() => poll(trim.B, [topic], { since: ids[2], timeout: 10 }));
  assert.equal(edge.gap, false, JSON.stringify(edge.gaps));
  assert.deepEqual(edge.messages.map((m) => m.id), held);
  assert.equal(edgeReads, 0, 'at the edge: B\'s own history');

  const [gap, gapReads] = await countReads(() => poll(trim.B, [topic], { since: ids[1], timeout: 10 }));
  assert.deepEqual(gap.gaps, [{ topic, from: ids[1], to: ids[2] }]);
  assert.deepEqual(gap.messages.map((m) => m.id), held);
  assert.equal(gapReads, 1, 'before the edge: Redis');

  // The same answers from A (which does not follow the topic: Redis) and over SSE on B.
  const edgeA = await poll(trim.A, [topic], { since: ids[2], timeout: 10 });
  assert.deepEqual([edgeA.gap, edgeA.messages.map((m) => m.id)], [false, held]);
  const gapA = await poll(trim.A, [topic], { since: ids[1], timeout: 10 });
  assert.deepEqual([gapA.gaps, gapA.messages.map((m) => m.id)], [[{ topic, from: ids[1], to: ids[2] }], held]);
  for (const [from, expected] of [[ids[2], held], [ids[1], ['gap', ...held]]]) {
    const sse = await subscribe(trim.B.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': from } });
    try {
      await sse.waitEvents(expected.length);
      await sse.expectNoMore(200);
      assert.deepEqual(sseItems(sse).map((i) => (i.type === 'gap' ? 'gap' : i.id)), expected, `SSE on B from ${from}`);
    } finally {
      sse.close();
    }
  }
});
