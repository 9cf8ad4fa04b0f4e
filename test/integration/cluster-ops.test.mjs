// The operations side of scale-out (SPEC §5 "Epochs protect cursors",
// "Operations"): a Redis restart starts a new epoch even when Redis kept its
// data, once for the whole cluster; an evicting maxmemory-policy is warned
// about; and /metrics counts epoch changes, publish failures, catch-up
// messages, Redis round trips and subscribed topics.
//
// Each test has its own Redis and nodes (two workers each, so the metrics
// are read across threads).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  publish, publishOk, subscribe, openWS, request, assertError, until,
} from '../lib/harness.mjs';
import {
  startRedis, startProxy, startCluster, waitHealthy, waitUnhealthy, metric, poll,
  assertSequence, pollItems, waitForId, shapeOf, assertGapsFrom, splitId,
  onTestEnd,
} from '../lib/cluster.mjs';

const TIMEOUT_MS = 1000; // cluster.timeout_ms
const CONFIG = { workers: 2, heartbeat_s: 1, cluster: { timeout_ms: TIMEOUT_MS } };
const REASONS = ['lost', 'rollback', 'restart', 'observed'];

async function setup(t, n, { redisArgs = [], via, config = CONFIG } = {}) {
  const redis = await startRedis({ args: redisArgs });
  onTestEnd(t, () => redis.stop());
  let proxy;
  if (via === 'proxy') {
    proxy = await startProxy(redis.port);
    onTestEnd(t, () => proxy.close());
  }
  const cluster = await startCluster(n, { redis: proxy ? [proxy, ...Array(n - 1).fill(redis)] : redis, config });
  onTestEnd(t, () => cluster.stop());
  return { redis, proxy, ...cluster };
}

/** Every sample of /metrics as a map "name{labels}" → number, and the text. */
async function metrics(node) {
  const res = await request(`${node.url}/metrics`);
  assert.equal(res.status, 200);
  const values = new Map();
  for (const line of res.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { values, text: res.text };
}

async function epochChanges(node) {
  const { values } = await metrics(node);
  return Object.fromEntries(REASONS.map((r) => [r, values.get(`herald_cluster_epoch_changes_total{reason="${r}"}`)]));
}

function delta(after, before) {
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
}

test('every new metric has HELP and TYPE lines; the RTT histogram is cumulative and counts publishes', async (t) => {
  const { A } = await setup(t, 1);
  const families = {
    herald_cluster_epoch_changes_total: 'counter',
    herald_cluster_publish_failures_total: 'counter',
    herald_cluster_catchup_messages_total: 'counter',
    herald_cluster_late_messages_total: 'counter',
    herald_cluster_held_overflows_total: 'counter',
    herald_cluster_redis_rtt_seconds: 'histogram',
    herald_cluster_subscribed_topics: 'gauge',
    herald_cluster_redis_config_ok: 'gauge',
    herald_cluster_redis_evicted_keys: 'gauge',
  };
  const before = await metrics(A);
  for (const [name, type] of Object.entries(families)) {
    assert.match(before.text, new RegExp(`^# HELP ${name} \\S`, 'm'), `HELP of ${name}`);
    assert.match(before.text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `TYPE of ${name}`);
  }
  for (const r of ['unavailable', 'full', 'outcome_unknown', 'timeout', 'oom', 'busy', 'error']) {
    assert.equal(before.values.get(`herald_cluster_publish_failures_total{reason="${r}"}`), 0, r);
  }
  const count = (m) => m.values.get('herald_cluster_redis_rtt_seconds_count');
  assert.ok(count(before) >= 1, 'the hello and the handshake were timed');

  for (let i = 0; i < 5; i++) await publishOk(A.url, 'rtt', `m${i}`);
  const after = await metrics(A);
  assert.ok(count(after) >= count(before) + 5, `rtt count ${count(before)} → ${count(after)} after 5 publishes`);
  assert.ok(after.values.get('herald_cluster_redis_rtt_seconds_sum') > before.values.get('herald_cluster_redis_rtt_seconds_sum'));
  const buckets = [...after.values].filter(([k]) => k.startsWith('herald_cluster_redis_rtt_seconds_bucket'));
  assert.equal(buckets.at(-1)[0], 'herald_cluster_redis_rtt_seconds_bucket{le="+Inf"}');
  assert.equal(buckets.at(-1)[1], count(after));
  for (let i = 1; i < buckets.length; i++) {
    assert.ok(buckets[i][1] >= buckets[i - 1][1], `cumulative buckets: ${JSON.stringify(buckets)}`);
    const le = (k) => Number(k.match(/le="([^"]+)"/)[1].replace('+Inf', 'Infinity'));
    assert.ok(le(buckets[i][0]) > le(buckets[i - 1][0]), 'ascending bounds');
  }
});

test('a Redis restart that kept its data starts a new epoch, once for the cluster: gaps to live subscribers and old cursors, no id issued twice', async (t) => {
  const { redis, A, B } = await setup(t, 2, { redisArgs: ['--appendonly', 'yes', '--appendfsync', 'always'] });
  const topic = 'restart';
  const sseA = await subscribe(A.url, `/events?topic=${topic}`);
  const wsB = await openWS(B.url, '/ws');
  try {
    await wsB.ok({ op: 'subscribe', topics: [topic] });
    const old = [(await publishOk(A.url, topic, 'old1')).id, (await publishOk(B.url, topic, 'old2')).id];
    await waitForId(sseA, old[1], { label: 'SSE on A' });
    await waitForId(wsB, old[1], { label: 'WebSocket on B' });
    const before = [await epochChanges(A), await epochChanges(B)];

    await redis.restart();
    await Promise.all([waitHealthy(A), waitHealthy(B)]);
    // The data survived (the topic's meta still names the old epoch's last seq)...
    assert.equal(await redis.cli('HGET', '{herald}:m:restart', 'l'), String(splitId(old[1]).seq));
    // ...but the hub moved to a new epoch, recorded with the new process's run_id.
    const hubEpoch = await redis.cli('HGET', '{herald}:hub', 'e');
    assert.notEqual(hubEpoch, splitId(old[0]).epoch, 'a restart starts a new epoch');
    const info = await redis.cli('INFO', 'server');
    assert.equal(await redis.cli('GET', '{herald}:rid'), info.match(/run_id:(\w+)/)[1]);

    // Once for the cluster: one node's hello rotated (restart), the other followed (observed).
    let changes;
    await until(async () => {
      changes = [delta(await epochChanges(A), before[0]), delta(await epochChanges(B), before[1])];
      return changes.every((c) => c.restart + c.observed === 1);
    }, { timeout: 5000, what: () => `each node to count one epoch change: ${JSON.stringify(changes)}` });
    assert.equal(changes[0].restart + changes[1].restart, 1, `one rotation: ${JSON.stringify(changes)}`);
    for (const c of changes) assert.equal(c.lost + c.rollback, 0, JSON.stringify(changes));

    const n1 = await publishOk(B.url, topic, 'new1');
    const n2 = await publishOk(A.url, topic, 'new2');
    assert.equal(splitId(n1.id).epoch, hubEpoch, 'new ids carry the new epoch');
    assert.equal(splitId(n2.id).epoch, hubEpoch, 'both nodes issue the same epoch');
    assert.equal(splitId(n1.id).seq, 1n, 'the new epoch starts at 1');
    for (const id of [n1.id, n2.id]) assert.ok(!old.includes(id), 'no id is issued twice');

    for (const [label, client] of [['SSE on A', sseA], ['WebSocket on B', wsB]]) {
      const got = await waitForId(client, n2.id, { label });
      assertSequence(got, { label, only: [...old, n1.id, n2.id], topics: [topic] });
      assert.deepEqual(shapeOf(got), ['message', 'message', 'gap', 'message', 'message'], `${label}: ${JSON.stringify(got)}`);
      assertGapsFrom(got, old[1], label);
    }
    // Old cursors, on either node: a gap, then the new epoch's messages.
    const answer = await poll(A, [topic], { since: old[0] });
    assert.equal(answer.gap, true);
    assert.deepEqual(shapeOf(pollItems([answer])), ['gap', 'message', 'message']);
    const resumed = await subscribe(B.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': old[1] } });
    try {
      const items = await waitForId(resumed, n2.id, { label: 'SSE resumed on B' });
      assert.deepEqual(shapeOf(items), ['gap', 'message', 'message'], JSON.stringify(items));
      assertGapsFrom(items, old[1], 'SSE resumed on B');
    } finally {
      resumed.close();
    }
    for (const node of [A, B]) await node.waitForStderr(/cluster: Redis moved to epoch/);
  } finally {
    sseA.close();
    wsB.close();
  }
});

test('FLUSHALL: the node whose script found the hub gone counts "lost", the other "observed"', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const topic = 'flushed';
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  try {
    const m1 = await publishOk(A.url, topic, 'one');
    await waitForId(sseB, m1.id, { label: 'SSE on B' });
    const before = [await epochChanges(A), await epochChanges(B)];
    assert.equal(await redis.cli('FLUSHALL'), 'OK');
    const m2 = await publishOk(A.url, topic, 'two');
    assert.notEqual(splitId(m2.id).epoch, splitId(m1.id).epoch);
    await waitForId(sseB, m2.id, { label: 'SSE on B' });
    let changes;
    await until(async () => {
      changes = [delta(await epochChanges(A), before[0]), delta(await epochChanges(B), before[1])];
      return changes[1].observed === 1;
    }, { timeout: 5000, what: () => `B to count the epoch it followed: ${JSON.stringify(changes)}` });
    assert.deepEqual(changes[0], { lost: 1, rollback: 0, restart: 0, observed: 0 });
    assert.deepEqual(changes[1], { lost: 0, rollback: 0, restart: 0, observed: 1 });
  } finally {
    sseB.close();
  }
});

test('publish failures are counted by reason: unavailable (Redis down), timeout (Redis silent), oom', async (t) => {
  const { redis, proxy, A, B } = await setup(t, 2, { via: 'proxy' }); // A reaches Redis through the proxy
  const failures = async (node, reason) => metric(node, 'herald_cluster_publish_failures_total', `reason="${reason}"`);

  // -OOM: Redis refuses writes past maxmemory, to a topic it holds and to a new one (whose
  // publish starts with a DEL, which Redis lets through); herald answers 503, stays connected.
  await publishOk(B.url, 'fail', 'first');
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
  assertError(await publish(B.url, 'fail', 'x'), 503, 'unavailable');
  assert.equal(await failures(B, 'oom'), 1);
  assertError(await publish(B.url, 'fail-new', 'x'), 503, 'unavailable');
  assert.equal(await failures(B, 'oom'), 2);
  assert.equal(await redis.cli('EXISTS', '{herald}:m:fail-new'), 0, 'nothing written');
  await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
  await publishOk(B.url, 'fail', 'y');

  // Redis stops answering A: the publish sent is answered outcome_unknown after timeout_ms.
  proxy.pause();
  assertError(await publish(A.url, 'fail', 'z'), 503, 'outcome_unknown');
  assert.equal(await failures(A, 'timeout'), 1);
  await waitUnhealthy(A);
  // Not connected: refused at once.
  assertError(await publish(A.url, 'fail', 'w'), 503, 'unavailable');
  assert.ok(await failures(A, 'unavailable') >= 1);
  assert.equal(await failures(A, 'outcome_unknown'), 0, 'a timeout is not counted twice');
  proxy.resume();
  await waitHealthy(A);
  await publishOk(A.url, 'fail', 'v');
  assert.equal(await failures(B, 'unavailable'), 0);
});

test('catch-up: messages a node read after its connections broke are counted (also on a topic that had none before); subscribed topics are a gauge', async (t) => {
  const { proxy, A, B } = await setup(t, 2, { via: 'proxy' }); // A through the proxy
  assert.equal(await metric(A, 'herald_cluster_subscribed_topics'), 0);
  const sse1 = await subscribe(A.url, '/events?topic=c1');
  const sse2 = await subscribe(A.url, '/events?topic=c2'); // nothing published to it before the outage
  try {
    await until(async () => (await metric(A, 'herald_cluster_subscribed_topics')) === 2,
      { timeout: 5000, what: 'A to subscribe two topics' });
    const m0 = await publishOk(B.url, 'c1', 'm0');
    await waitForId(sse1, m0.id, { label: 'SSE on c1' });
    const before = await metric(A, 'herald_cluster_catchup_messages_total');

    proxy.pause({ filter: () => false, newConnections: true }); // reconnects held until resume()
    proxy.cut();
    await waitUnhealthy(A);
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await publishOk(B.url, i % 2 ? 'c2' : 'c1', `m${i + 1}`)).id);
    proxy.resume();
    await waitHealthy(A);
    const got1 = await waitForId(sse1, ids[2], { label: 'SSE on c1' });
    assert.deepEqual(got1.map((i) => i.id), [m0.id, ids[0], ids[2]], 'c1: every message once, in order');
    const got2 = await waitForId(sse2, ids[1], { label: 'SSE on c2' });
    assert.deepEqual(got2.map((i) => i.id), [ids[1]], 'c2: what was published while A was away');
    await Promise.all([sse1.expectNoMore(200), sse2.expectNoMore(0)]);
    assert.equal(await metric(A, 'herald_cluster_catchup_messages_total'), before + 3);
    assert.equal(await metric(B, 'herald_cluster_catchup_messages_total'), 0, 'B missed nothing');
    assert.equal(await metric(A, 'herald_cluster_subscribed_topics'), 2);
  } finally {
    sse1.close();
    sse2.close();
  }
});

test('an evicting maxmemory-policy is warned about at start, naming the setting; config_ok 0; evictions are reported', async (t) => {
  const { redis, A } = await setup(t, 1, { redisArgs: ['--maxmemory-policy', 'allkeys-lru'] });
  await A.waitForStderr(/warn.*cluster: Redis maxmemory-policy is allkeys-lru: .*noeviction/);
  await until(async () => (await metric(A, 'herald_cluster_redis_config_ok')) === 0,
    { timeout: 5000, what: 'config_ok 0' });
  assert.equal(await metric(A, 'herald_cluster_redis_evicted_keys'), 0);

  // Make Redis evict: a small maxmemory and a few MB of keys.
  await redis.cli('CONFIG', 'SET', 'maxmemory', '3mb');
  const fill = "for i = 1, 200 do redis.call('SET', KEYS[1] .. i, string.rep('x', 1000)) end";
  for (let k = 0; k < 40; k++) await redis.cli('EVAL', fill, '1', `filler${k}:`);
  const evicted = Number((await redis.cli('INFO', 'stats')).match(/evicted_keys:(\d+)/)[1]);
  assert.ok(evicted > 0, 'Redis evicted keys');
  // herald reads INFO at every connect (and every 30 s): make it reconnect.
  await redis.cli('CLIENT', 'KILL', 'TYPE', 'normal');
  await A.waitForStderr(/warn.*cluster: Redis evicted \d+ keys \(evicted_keys is \d+\): history and ids may be lost/);
  assert.ok(await metric(A, 'herald_cluster_redis_evicted_keys') >= evicted);
  assert.equal((A.stderr().match(/maxmemory-policy is allkeys-lru/g) ?? []).length, 1, 'the policy is warned about once');
});

test('the default maxmemory-policy (noeviction): no warning, config_ok 1', async (t) => {
  const { A } = await setup(t, 1);
  await until(async () => (await metric(A, 'herald_cluster_redis_config_ok')) === 1,
    { timeout: 5000, what: 'config_ok 1' });
  assert.doesNotMatch(A.stderr(), /maxmemory-policy/);
  assert.equal(await metric(A, 'herald_cluster_redis_evicted_keys'), 0);
});

const TRUSTING = { ...CONFIG, cluster: { ...CONFIG.cluster, trust_redis_persistence: true } };

test('trust_redis_persistence with appendfsync always: kill -9 and restart of Redis keep the epoch; live subscribers and resumes see no gap', async (t) => {
  const { redis, A, B } = await setup(t, 2, { redisArgs: ['--appendonly', 'yes', '--appendfsync', 'always'], config: TRUSTING });
  const topic = 'trusted';
  const sseB = await subscribe(B.url, `/events?topic=${topic}`);
  try {
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await publishOk(A.url, topic, `before${i}`)).id);
    await waitForId(sseB, ids[2], { label: 'SSE on B' });
    const before = [await epochChanges(A), await epochChanges(B)];

    await redis.kill('SIGKILL');
    await redis.restart();
    await Promise.all([waitHealthy(A), waitHealthy(B)]);
    for (let i = 0; i < 2; i++) ids.push((await publishOk(B.url, topic, `after${i}`)).id);
    assert.deepEqual(new Set(ids.map((id) => splitId(id).epoch)).size, 1, `one epoch across the restart: ${ids}`);
    assert.equal(splitId(ids[3]).seq, splitId(ids[2]).seq + 1n, 'the sequence goes on');

    const got = await waitForId(sseB, ids[4], { label: 'SSE on B' });
    assertSequence(got, { label: 'SSE on B', acked: ids, only: ids, topics: [topic] });
    assert.deepEqual(shapeOf(got), ['message', 'message', 'message', 'message', 'message'], JSON.stringify(got));
    const answer = await poll(A, [topic], { since: ids[0] });
    assert.equal(answer.gap, false, JSON.stringify(answer));
    assert.deepEqual(answer.messages.map((m) => m.id), ids.slice(1));
    const after = [await epochChanges(A), await epochChanges(B)];
    assert.deepEqual([delta(after[0], before[0]), delta(after[1], before[1])],
      [{ lost: 0, rollback: 0, restart: 0, observed: 0 }, { lost: 0, rollback: 0, restart: 0, observed: 0 }]);
    for (const node of [A, B]) assert.doesNotMatch(node.stderr(), /trust_redis_persistence is true, but/);
  } finally {
    sseB.close();
  }
});

test('trust_redis_persistence with a Redis that does not persist every write: a warning naming the settings', async (t) => {
  const { A } = await setup(t, 1, { redisArgs: ['--appendonly', 'yes', '--appendfsync', 'everysec'], config: TRUSTING });
  await A.waitForStderr(/cluster\.trust_redis_persistence is true, but Redis has appendonly yes and appendfsync everysec/);
  const { redis: plain, A: B } = await setup(t, 1, { config: TRUSTING });
  assert.ok(plain.port);
  await B.waitForStderr(/cluster\.trust_redis_persistence is true, but Redis has appendonly no/);
});
