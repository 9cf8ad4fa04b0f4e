// High availability through Redis Sentinel (SPEC §5): herald finds the
// master by asking the sentinels, follows a failover without restarting,
// and never reuses an id across it: the promoted replica is another Redis
// process, so the nodes move to a new epoch and subscribers get a gap.
//
// Each test starts its own master, replica and three sentinels
// (startSentinels in test/lib/cluster.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, openWS, publish, publishOk, runHerald, writeConfig, assertError, until } from '../lib/harness.mjs';
import {
  startSentinels, startCluster, waitHealthy, healthz, metric, itemsOf, waitForId, splitId, assertGapsFrom,
  steadyPublisher, newestId, checkDelivery,
} from '../lib/cluster.mjs';

const TIMEOUT_MS = 1000; // cluster.timeout_ms
const FAILOVER_WITHIN_MS = 15_000; // from the kill to the first publish acknowledged by the new master
const SWITCH_WITHIN_MS = 5000; // from SENTINEL FAILOVER to both nodes up on the new master
const CONFIG = { heartbeat_s: 1 };

/** Starts the sentinel group and n nodes on it; both stopped when t ends (nodes first). */
async function setup(t, n, { waitHealthy: wait = true, cluster: extra = {} } = {}) {
  const group = await startSentinels();
  let cluster;
  t.after(async () => {
    try {
      if (cluster) await cluster.stop();
    } finally {
      await group.stop();
    }
  });
  cluster = await startCluster(n, {
    config: { ...CONFIG, cluster: group.config({ timeout_ms: TIMEOUT_MS, ...extra }) },
    waitHealthy: wait,
  });
  return { group, cluster, ...cluster };
}

test('nodes find the master through the sentinels: what one publishes the other delivers', async (t) => {
  const { group, A, B } = await setup(t, 2);
  await A.waitForStderr(new RegExp(`cluster: Redis 127\\.0\\.0\\.1:${group.master.port} is up`));
  const sse = await subscribe(B.url, '/events?topic=found');
  try {
    const { id } = await publishOk(A.url, 'found', 'via sentinel');
    await sse.waitFor((s) => s.events.length >= 1);
    assert.equal(sse.stream.events[0].id, id);
    assert.equal(sse.stream.events[0].data, 'via sentinel');
    const role = await group.master.cli('ROLE');
    assert.equal(role[0], 'master', 'herald writes to the master');
  } finally {
    sse.close();
  }
});

test('master killed under a steady publish stream from two nodes: 503 during the failover, 201 after; every surviving id once, in order, then a gap and a new epoch', async (t) => {
  const { group, A, B } = await setup(t, 2);
  const topic = 'failover';
  const views = [];
  for (const [name, node] of [['A', A], ['B', B]]) {
    views.push([`SSE on ${name}`, await subscribe(node.url, `/events?topic=${topic}`)]);
    const ws = await openWS(node.url, '/ws');
    await ws.ok({ op: 'subscribe', topics: [topic] });
    views.push([`WebSocket on ${name}`, ws]);
  }
  try {
    const pub = steadyPublisher([A, B], topic, { lanes: 2 });
    let killedAt, killedMs;
    try {
      await pub.waitAcked(40);
      killedAt = pub.acked.length;
      killedMs = Date.now();
      await group.master.kill('SIGKILL');
      await pub.waitAcked(killedAt + 40, FAILOVER_WITHIN_MS + 10_000);
    } finally {
      await pub.stop();
    }
    assert.equal(await group.masterPort(), group.replica.port, 'the sentinels promoted the replica');

    const ids = pub.acked.map((a) => a.id);
    assert.equal(new Set(ids).size, ids.length, 'no id acknowledged twice');
    const oldEpoch = splitId(ids[0]).epoch;
    const after = pub.acked.slice(killedAt);
    const firstNew = after.find((a) => splitId(a.id).epoch !== oldEpoch);
    assert.ok(firstNew, `publishes after the failover carry a new epoch: ${JSON.stringify(after.slice(0, 3))}`);
    assert.ok(firstNew.at - killedMs <= FAILOVER_WITHIN_MS,
      `a publish was acknowledged by the new master ${firstNew.at - killedMs} ms after the kill (at most ${FAILOVER_WITHIN_MS})`);
    assert.ok(pub.refused.length + pub.unknown.length > 0, 'publishes answered 503 during the failover');
    // The promoted replica is another Redis process: the epoch rotated for a restart.
    const restarts = await Promise.all([A, B].map((n) => metric(n, 'herald_cluster_epoch_changes_total', 'reason="restart"')));
    assert.ok(restarts.some((n) => n >= 1), `an epoch change for a restart is counted: ${restarts}`);
    // Once on the new master, an answer never comes from the old epoch again.
    const firstNewAt = pub.acked.indexOf(firstNew);
    const back = pub.acked.slice(firstNewAt).filter((a) => splitId(a.id).epoch === oldEpoch);
    assert.deepEqual(back, [], 'no old-epoch id after the move');

    const lastId = newestId(ids);
    for (const [label, client] of views) await waitForId(client, lastId, { timeout: 10_000, label });
    await Promise.all(views.map(([, client], i) => client.expectNoMore(i === 0 ? 300 : 0)));
    const dataOf = new Map(pub.acked.map((a) => [a.id, a.data]));
    for (const [label, client] of views) {
      const items = itemsOf(client);
      const { gaps, epochs } = checkDelivery(label, items, pub, { gapsAllowed: true });
      assert.ok(gaps.length >= 1, `${label}: the epoch change is announced with a gap`);
      assert.ok(epochs.length >= 2 && epochs[0] === oldEpoch, `${label}: delivered the old epoch, then a new one: ${epochs}`);
      const firstGap = items.findIndex((i) => i.type === 'gap');
      const before = items.slice(0, firstGap).filter((i) => i.type === 'message');
      if (before.length > 0) assertGapsFrom(items, before.at(-1).id, label);
      // No id with two different data, across every view and every answer.
      for (const m of items.filter((i) => i.type === 'message')) {
        if (!dataOf.has(m.id)) dataOf.set(m.id, m.data);
        assert.equal(m.data, dataOf.get(m.id), `${label}: ${m.id} carries one data everywhere`);
      }
    }
  } finally {
    for (const [, client] of views) client.close();
  }
});

test('manual failover (SENTINEL FAILOVER): the old master stays up and is demoted; the nodes follow +switch-master to the new one', async (t) => {
  const { group, A, B } = await setup(t, 2);
  const topic = 'switch';
  const sse = await subscribe(B.url, `/events?topic=${topic}`);
  try {
    const pub = steadyPublisher([A, B], topic, { lanes: 2 });
    try {
      await pub.waitAcked(20);
      assert.equal(await group.sentinels[0].cli('SENTINEL', 'FAILOVER', group.name), 'OK');
      // Sentinel demotes the old master (and drops its clients) only seconds after announcing the
      // switch: moving within SWITCH_WITHIN_MS shows the nodes followed the announcement.
      const up = new RegExp(`cluster: Redis 127\\.0\\.0\\.1:${group.replica.port} is up`);
      await Promise.all([A, B].map((node) => node.waitForStderr(up, SWITCH_WITHIN_MS)));
      const n = pub.acked.length;
      await pub.waitAcked(n + 20);
    } finally {
      await pub.stop();
    }
    await group.waitForMaster(group.replica.port);
    assert.equal(await group.master.cli('PING'), 'PONG', 'the old master is alive all along');
    const ids = pub.acked.map((a) => a.id);
    const epochs = [...new Set(ids.map((id) => splitId(id).epoch))];
    assert.ok(epochs.length >= 2, `the new master started a new epoch: ${epochs}`);
    await waitForId(sse, newestId(ids), { timeout: 10_000, label: 'SSE on B' });
    await sse.expectNoMore(300);
    const { gaps } = checkDelivery('SSE on B', itemsOf(sse), pub, { gapsAllowed: true });
    assert.ok(gaps.length >= 1, 'the epoch change is announced with a gap');
  } finally {
    sse.close();
  }
});

// trust_redis_persistence covers a restart of the same Redis, never a failover:
// replication is asynchronous, so a promoted replica may lack the newest writes.
test('trust_redis_persistence does not cover a failover: the new master starts a new epoch even when it lost nothing', async (t) => {
  const { group, A, B } = await setup(t, 2, { cluster: { trust_redis_persistence: true } });
  const topic = 'trusted-failover';
  const sse = await subscribe(B.url, `/events?topic=${topic}`);
  try {
    const before = [];
    for (let i = 0; i < 3; i++) before.push((await publishOk(A.url, topic, `b${i}`)).id);
    // Nothing is lost: the replica holds every write before it is promoted.
    const seq = String(splitId(before[2]).seq);
    await until(async () => (await group.replica.cli('HGET', '{herald}:hub', 's')) === seq,
      { timeout: 5000, what: 'the replica to hold every write' });
    assert.equal(await group.sentinels[0].cli('SENTINEL', 'FAILOVER', group.name), 'OK');
    const up = new RegExp(`cluster: Redis 127\\.0\\.0\\.1:${group.replica.port} is up`);
    await Promise.all([A, B].map((node) => node.waitForStderr(up, SWITCH_WITHIN_MS)));
    let after;
    await until(async () => {
      const res = await publish(B.url, topic, 'after');
      after = res.status === 201 ? res.json.id : undefined;
      return after !== undefined;
    }, { timeout: 10_000, what: 'a publish on the new master' });
    assert.notEqual(splitId(after).epoch, splitId(before[0]).epoch, 'a failover starts a new epoch, trusted or not');
    const got = await waitForId(sse, after, { label: 'SSE on B' });
    const gaps = got.filter((i) => i.type === 'gap');
    assert.equal(gaps.length, 1, `one gap announces the new epoch: ${JSON.stringify(got)}`);
    assertGapsFrom(gaps, before[2], 'SSE on B');
  } finally {
    sse.close();
  }
});

test('sentinels unreachable at start: /healthz 503 and publishes refused; healthy within seconds once they answer', async (t) => {
  const group = await startSentinels();
  let cluster;
  t.after(async () => {
    try {
      if (cluster) await cluster.stop();
    } finally {
      await group.stop();
    }
  });
  for (const s of group.sentinels) await s.kill('SIGKILL');
  cluster = await startCluster(1, {
    config: { ...CONFIG, cluster: group.config({ timeout_ms: TIMEOUT_MS }) },
    waitHealthy: false,
  });
  const { A } = cluster;
  await A.waitForStderr(/cluster: Redis \(via Sentinel\) is down: no sentinel named the master: sentinel 127\.0\.0\.1:\d+ cannot be reached/);
  const res = await healthz(A);
  assertError(res, 503, 'unavailable');
  assertError(await publish(A.url, 'early', 'x'), 503, 'unavailable');

  for (const s of group.sentinels) await s.restart();
  const ms = await waitHealthy(A, { timeout: 10_000 });
  assert.ok(ms <= 10_000);
  await publishOk(A.url, 'late', 'after the sentinels came up');
});

test('a master name the sentinels do not monitor: unhealthy, and the log says so', async (t) => {
  const group = await startSentinels();
  let cluster;
  t.after(async () => {
    try {
      if (cluster) await cluster.stop();
    } finally {
      await group.stop();
    }
  });
  cluster = await startCluster(1, {
    config: { ...CONFIG, cluster: group.config({ timeout_ms: TIMEOUT_MS, sentinel_master: 'nobody' }) },
    waitHealthy: false,
  });
  await cluster.A.waitForStderr(/no sentinel named the master: sentinel 127\.0\.0\.1:\d+ monitors no master by that name/);
  assertError(await healthz(cluster.A), 503, 'unavailable');
});

test('bad Sentinel configs stop herald with exit 2 and a message naming the key', async () => {
  const cases = [
    [{ cluster: { sentinels: ['127.0.0.1:26379'] } }, /cluster\.sentinel_master: required with cluster\.sentinels/],
    [{ cluster: { redis: 'redis://127.0.0.1:6379', sentinels: ['127.0.0.1:26379'], sentinel_master: 'm' } },
      /cluster\.redis and cluster\.sentinels: set one or the other, not both/],
    [{ cluster: { sentinel_master: 'm' } }, /cluster\.sentinel_master: only with cluster\.sentinels/],
    [{ cluster: { redis: 'redis://127.0.0.1:6379', master_password: 'pw' } }, /cluster\.master_password: only with cluster\.sentinels/],
    [{ cluster: { sentinels: ['127.0.0.1'], sentinel_master: 'm' } }, /cluster\.sentinels\[0\]: must be HOST:PORT/],
    [{ cluster: { sentinels: ['127.0.0.1:0'], sentinel_master: 'm' } }, /cluster\.sentinels\[0\]: must be HOST:PORT/],
    [{ cluster: { sentinels: '127.0.0.1:26379', sentinel_master: 'm' } }, /cluster\.sentinels: expected an array of strings/],
    [{ cluster: { sentinels: ['127.0.0.1:26379'], sentinel_master: 'my master' } }, /cluster\.sentinel_master: must be .* without spaces/],
  ];
  for (const [config, message] of cases) {
    const { file } = writeConfig(config);
    const { code, stderr } = await runHerald(['--config', file, '--listen', '127.0.0.1:0']);
    assert.equal(code, 2, `${JSON.stringify(config)}: exit 2; stderr: ${stderr}`);
    assert.match(stderr, message, JSON.stringify(config));
  }
});
