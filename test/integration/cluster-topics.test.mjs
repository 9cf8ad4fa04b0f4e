// GET /topics/{t} and GET /topics in cluster mode (docs/api.md, "Scale-out
// (Redis): cluster mode"): subscribers are the node's own, history and last
// id the cluster's, read from Redis; a listing pages through the cluster's
// topics (plus the node's own subscribed ones) exactly as one node would;
// while Redis is down both answer 503 at once.
//
// Each answer is compared with one memory-engine node that got the same
// publishes and subscribers: the cluster must be indistinguishable from it,
// except for ids.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, publishOk, publishBatch, subscribe, request, assertError, RawConn, sleep, until,
} from '../lib/harness.mjs';
import {
  startRedis, startCluster, poll, waitHealthy, waitUnhealthy,
} from '../lib/cluster.mjs';

const HISTORY = 20; // history.max_messages of every node
const config = { history: { max_messages: HISTORY } };

let redis;
let cluster;
let A;
let B;
let C;
let single; // one memory-engine node: the reference

before(async () => {
  redis = await startRedis();
  [cluster, single] = await Promise.all([
    startCluster(3, { redis, config }),
    startHerald({ config }),
  ]);
  ({ A, B, C } = cluster);
});

after(async () => {
  await cluster?.stop();
  await single?.stop();
  await redis?.stop();
});

/** Publishes the same items (one batch) to the cluster through node and to the single node. */
async function publishBoth(node, items) {
  const res = await publishBatch(node.url, items);
  assert.equal(res.status, 201, `batch on ${node.name}: ${res.text}`);
  const ref = await publishBatch(single.url, items);
  assert.equal(ref.status, 201, `batch on the single node: ${ref.text}`);
  return res.json.messages.map((m) => m.id);
}

/** GET /topics/{topic} on node; asserts 200. */
async function info(node, topic) {
  const res = await request(`${node.url}/topics/${topic}`);
  assert.equal(res.status, 200, `GET /topics/${topic} on ${node.name ?? 'the single node'}: ${res.status} ${res.text}`);
  return res.json;
}

/** Every page of GET /topics with query and limit, following next; resolves [pages]. */
async function pages(node, query, limit) {
  const out = [];
  let after = null;
  for (;;) {
    const q = new URLSearchParams(query);
    q.set('limit', String(limit));
    if (after !== null) q.set('after', after);
    const res = await request(`${node.url}/topics?${q}`);
    assert.equal(res.status, 200, `GET /topics?${q}: ${res.text}`);
    out.push(res.json);
    after = res.json.next;
    if (after === null) return out;
    assert.ok(out.length < 100, 'paging ends');
  }
}

/** A page without ids (epochs and seqs differ between the cluster and the single node). */
function withoutIds(page) {
  return {
    topics: page.topics.map(({ last_id: lastId, ...rest }) => ({ ...rest, has_last_id: lastId !== null })),
    next: page.next,
  };
}

test('GET /topics/{t} on a node that never followed the topic: the cluster\'s history and last id', async () => {
  const topic = 'far.info';
  const ids = await publishBoth(A, [
    { topic, data: 'one' }, { topic, data: 'två', event: 'e' }, { topic, data: '' },
  ]);
  const ref = await info(single, topic);
  for (const node of [A, B, C]) {
    const got = await info(node, topic);
    assert.equal(got.topic, topic);
    assert.equal(got.last_id, ids.at(-1), `${node.name}: last_id is the cluster's newest`);
    assert.deepEqual(got.history, ref.history, `${node.name}: history counted as one node counts it`);
    assert.equal(got.subscribers, 0);
    assert.deepEqual(got.subscribers_by_transport, { sse: 0, websocket: 0, poll: 0 });
  }
  // Never published, nobody subscribed: 404 on every node, as on one.
  assertError(await request(`${single.url}/topics/far.none`), 404, 'not_found');
  for (const node of [A, B, C]) assertError(await request(`${node.url}/topics/far.none`), 404, 'not_found');
});

test('counts after trimming (history.max_messages) agree with what /poll returns', async () => {
  const topic = 'far.trimmed';
  const items = Array.from({ length: HISTORY + 13 }, (_, i) => ({ topic, data: `m${i}`.repeat(i % 4) }));
  const ids = await publishBoth(B, items);
  const ref = await info(single, topic);
  assert.equal(ref.history.messages, HISTORY);
  const got = await info(C, topic);
  assert.deepEqual(got.history, ref.history);
  assert.equal(got.last_id, ids.at(-1));
  const answer = await poll(C, [topic], { since: 'earliest', timeout: 0, limit: 1000 });
  assert.equal(answer.messages.length, got.history.messages, '/poll returns what GET /topics counts');
  assert.deepEqual(answer.messages.map((m) => m.id), ids.slice(-HISTORY));
});

test('a topic with subscribers on this node only: listed and counted there, 404 elsewhere', async () => {
  const topic = 'far.quiet';
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  const sseRef = await subscribe(single.url, `/events?topic=${topic}`);
  try {
    const ref = await info(single, topic);
    assert.deepEqual(await info(B, topic), ref);
    assert.equal(ref.subscribers, 1);
    for (const node of [A, C]) assertError(await request(`${node.url}/topics/${topic}`), 404, 'not_found');
    // Once it has history, every node finds it; B still counts its own subscriber.
    const [id] = await publishBoth(C, [{ topic, data: 'x' }]);
    assert.equal((await info(A, topic)).subscribers, 0);
    const onB = await info(B, topic);
    assert.equal(onB.subscribers, 1);
    assert.equal(onB.last_id, id);
    assert.deepEqual(onB.history, (await info(single, topic)).history);
  } finally {
    sseB.close();
    sseRef.close();
  }
});

test('GET /topics pages through the cluster\'s topics as one node would, on every node', async () => {
  const names = ['ls.a', 'ls.b', 'ls.b.1', 'ls.b/2', 'ls.c', 'ls.c~', 'ls.d', 'ls.e:x', 'ls.f', 'ls.g',
    'ls-a', 'lt.z', 'ls'];
  // Spread over the nodes, one batch each, some topics more than once.
  const nodes = [A, B, C];
  for (const [i, topic] of names.entries()) {
    await publishBoth(nodes[i % 3], Array.from({ length: 1 + (i % 3) }, (_, k) => ({ topic, data: `${topic}#${k}` })));
  }
  // A subscriber-only topic on B (and on the reference) is listed there in name order.
  const sseB = await subscribe(B.url, '/events?topic=ls.bb');
  const sseRef = await subscribe(single.url, '/events?topic=ls.bb');
  try {
    for (const [query, limit] of [[{ prefix: 'ls.' }, 3], [{ prefix: 'ls.' }, 1], [{ prefix: 'ls.' }, 1000],
      [{ prefix: 'ls.b' }, 2], [{ prefix: 'ls.', after: 'ls.b.1' }, 4], [{ prefix: 'ls.', after: 'ls.zzz' }, 5],
      [{ prefix: 'ls.', after: 'a' }, 5], [{ prefix: 'l', after: 'ls.f' }, 2], [{ prefix: 'nothing' }, 5]]) {
      const want = (await pages(single, query, limit)).map(withoutIds);
      const label = `${JSON.stringify(query)} limit ${limit}`;
      assert.deepEqual((await pages(B, query, limit)).map(withoutIds), want, `B: ${label}`);
      // A and C do not have B's subscriber: the same, without ls.bb.
      const names = (await pages(A, query, 1000)).flatMap((p) => p.topics.map((t) => t.topic));
      const refNames = (await pages(single, query, 1000)).flatMap((p) => p.topics.map((t) => t.topic));
      assert.deepEqual(names, refNames.filter((n) => n !== 'ls.bb'), `A: ${label}`);
    }
    // last_id of a listed topic is the cluster's, on every node.
    const newest = await publishOk(C.url, 'ls.c', 'newest');
    for (const node of nodes) {
      const [page] = await pages(node, { prefix: 'ls.c' }, 1);
      assert.deepEqual(page.topics[0], { topic: 'ls.c', subscribers: 0, history_messages: 3, last_id: newest.id });
    }
  } finally {
    sseB.close();
    sseRef.close();
  }
});

test('a topic whose keys expired (cluster idle TTL) leaves the listing and is 404', async () => {
  await publishOk(A.url, 'gone.x', 'x');
  await publishOk(A.url, 'gone.y', 'y');
  const listed = async (node) => (await pages(node, { prefix: 'gone.' }, 10)).flatMap((p) => p.topics.map((t) => t.topic));
  assert.deepEqual(await listed(C), ['gone.x', 'gone.y']);
  assert.equal(await redis.cli('ZSCORE', '{herald}:topics', 'gone.x'), '0');
  // What Redis's EXPIRE of an idle topic does.
  await redis.cli('DEL', '{herald}:m:gone.x', '{herald}:s:gone.x');
  assert.deepEqual(await listed(C), ['gone.y']);
  assert.equal(await redis.cli('ZSCORE', '{herald}:topics', 'gone.x'), null, 'the listing dropped the stale name');
  assertError(await request(`${B.url}/topics/gone.x`), 404, 'not_found');
  // Published again: listed again.
  await publishOk(B.url, 'gone.x', 'back');
  assert.deepEqual(await listed(A), ['gone.x', 'gone.y']);
  // Many stale names in a row: a page still fills (the script's work per call is bounded).
  const many = Array.from({ length: 60 }, (_, i) => ({ topic: `gone.m${String(i).padStart(2, '0')}`, data: 'd' }));
  await publishBatch(A.url, many);
  await redis.cli('DEL', ...many.slice(0, 55).flatMap((m) => [`{herald}:m:${m.topic}`, `{herald}:s:${m.topic}`]));
  const [first] = await pages(C, { prefix: 'gone.' }, 3);
  assert.deepEqual(first.topics.map((t) => t.topic), ['gone.m55', 'gone.m56', 'gone.m57']);
  assert.equal(first.next, 'gone.m57');
});

test('history.ttl_s: expired entries are not counted, as /poll does not return them', async () => {
  // Two nodes of their own (another prefix on the same Redis) with a 1 s TTL.
  const ttl = await startCluster(2, { redis, config: { history: { ttl_s: 1 }, cluster: { prefix: 'ttl' } } });
  try {
    const old = await publishOk(ttl.A.url, 'ttl.a', 'old');
    await publishOk(ttl.A.url, 'ttl.b', 'alone');
    await sleep(500);
    const young = await publishOk(ttl.A.url, 'ttl.a', 'young');
    let got;
    await until(async () => {
      got = await info(ttl.B, 'ttl.a');
      return got.history.messages === 1;
    }, { timeout: 3000, interval: 50, what: () => `the old entry to expire: ${JSON.stringify(got)}` });
    const answer = await poll(ttl.B, ['ttl.a'], { since: 'earliest', timeout: 0 });
    assert.deepEqual(answer.messages.map((m) => m.id), [young.id], `${old.id} expired`);
    assert.equal(got.last_id, young.id);
    // Every entry of ttl.b expires (nothing trims it: no publish since): gone.
    // It was published after ttl.a's old entry, so it may expire a little later.
    let gone;
    await until(async () => {
      gone = await request(`${ttl.B.url}/topics/ttl.b`);
      return gone.status !== 200;
    }, { timeout: 3000, interval: 50, what: () => `ttl.b to expire: ${gone?.text}` });
    assertError(gone, 404, 'not_found');
    const list = await request(`${ttl.A.url}/topics?prefix=ttl.`);
    assert.deepEqual(list.json.topics.map((t) => t.topic), ['ttl.a']);
  } finally {
    await ttl.stop();
  }
});

test('history.ttl_s: expired entries at the oldest end take no place in a page (nothing beyond it is skipped)', async () => {
  const ttl = await startCluster(1, { redis, config: { history: { ttl_s: 3 }, cluster: { prefix: 'ttlpage' } } });
  try {
    const topic = 'ttl.page';
    const old = [(await publishOk(ttl.A.url, topic, 'old0')).id, (await publishOk(ttl.A.url, topic, 'old1')).id];
    // The young ones are published half way through the old ones' TTL, so the
    // publish does not trim them: they expire later, while still in the stream.
    await sleep(1500);
    const res = await publishBatch(ttl.A.url, Array.from({ length: 20 }, (_, i) => ({ topic, data: `young${i}` })));
    assert.equal(res.status, 201, res.text);
    const young = res.json.messages.map((m) => m.id);
    let answer = await poll(ttl.A, [topic], { since: 'earliest', limit: 1000, timeout: 0 });
    assert.deepEqual(answer.messages.map((m) => m.id), [...old, ...young], 'the old ones were not expired yet');
    await until(async () => {
      answer = await poll(ttl.A, [topic], { since: 'earliest', limit: 1000, timeout: 0 });
      return answer.messages.length === young.length;
    }, { timeout: 5000, interval: 50, what: () => `${old} to expire: ${JSON.stringify(answer)}` });
    // Page through with limit 5: the two expired entries must not end the first page early.
    const got = [];
    let cursor = 'earliest';
    for (let page = 0; page < 10; page++) {
      answer = await poll(ttl.A, [topic], { since: cursor, limit: 5, timeout: 0 });
      got.push(...answer.messages.map((m) => m.id));
      cursor = answer.cursor;
      if (!answer.more) break;
    }
    assert.deepEqual(got, young, 'every young message, in order, none skipped');
  } finally {
    await ttl.stop();
  }
});

test('a client that goes away while its answer waits for Redis does not disturb the node', async () => {
  const topic = 'far.info';
  await redis.kill('SIGSTOP'); // Redis stops answering: the node still thinks it is up
  try {
    const conns = [];
    for (const path of [`/topics/${topic}`, '/topics?prefix=far.', '/topics']) {
      const conn = await RawConn.connect(A.host, A.port);
      await conn.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      conns.push(conn);
    }
    // Give the requests time to reach the engine, then go.
    await sleep(200);
    for (const conn of conns) conn.destroy();
  } finally {
    await redis.kill('SIGCONT');
  }
  await waitHealthy(A);
  const got = await info(A, topic);
  assert.equal(got.topic, topic);
  assert.equal((await request(`${A.url}/topics?prefix=far.`)).status, 200);
});

test('FLUSHALL: every topic is gone from the listing and 404', async () => {
  await publishOk(A.url, 'flush.a', 'a');
  assert.equal((await info(B, 'flush.a')).history.messages, 1);
  await redis.cli('FLUSHALL');
  assertError(await request(`${B.url}/topics/flush.a`), 404, 'not_found');
  const [page] = await pages(C, {}, 100);
  assert.deepEqual(page, { topics: [], next: null });
});

test('Redis down: GET /topics/{t} and GET /topics answer 503 unavailable at once; subscribers stay', async () => {
  const topic = 'down.t';
  const sse = await subscribe(B.url, `/events?topic=${topic}`);
  try {
    await redis.stop();
    await waitUnhealthy(B);
    for (const path of [`/topics/${topic}`, '/topics', '/topics?prefix=down.&limit=5']) {
      const start = Date.now();
      const res = await request(`${B.url}${path}`, { timeout: 5000 });
      assertError(res, 503, 'unavailable');
      assert.equal(res.headers.get('retry-after'), '1');
      assert.ok(Date.now() - start < 1000, `${path} answered in ${Date.now() - start} ms`);
    }
    assert.equal(sse.stream.ended, false, 'the subscriber is still connected');
    await redis.restart();
    await Promise.all([waitHealthy(A), waitHealthy(B)]);
    const res = await publishOk(A.url, topic, 'after');
    await sse.waitFor(() => sse.events.some((e) => e.id === res.id), { what: 'the message after the outage' });
    const got = await info(B, topic);
    assert.equal(got.subscribers, 1);
    assert.equal(got.last_id, res.id);
  } finally {
    sse.close();
  }
});
