// Reads from Redis that cannot be answered (SPEC §5: a failure of Redis is
// said, never hidden; nothing unbounded): a read Redis refuses is a 503 or
// the end of the stream, never an empty answer whose cursor skips what lay
// in between; one topic whose key an operator gave another type stalls no
// other topic; reads waiting for Redis are bounded and dropped when their
// client went away; reads that found the link full go once it drains.
//
// Faults are injected with real Redis commands (SET over a herald key,
// CONFIG SET maxmemory, SCRIPT FLUSH), a stopped Redis, and a tiny bound on
// the bytes in flight (cluster.max_inflight_bytes).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { publishOk, subscribe, openSSE, openWS, request, assertError } from '../lib/harness.mjs';
import {
  startRedis, startCluster, waitHealthy, waitUnhealthy, poll, sseItems, waitForId, messageIds,
  onTestEnd,
} from '../lib/cluster.mjs';

const MARGIN_MS = 1500; // scheduling slack on a loaded 2-core machine / ASan
const CONFIG = { heartbeat_s: 1, cluster: { timeout_ms: 1000 } };

async function setup(t, n, { cluster: extra = {} } = {}) {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const config = { ...CONFIG, cluster: { ...CONFIG.cluster, ...extra } };
  const cluster = await startCluster(n, { redis, config });
  onTestEnd(t, () => cluster.stop());
  return { redis, ...cluster };
}

/** GET /poll that must be refused: 503 unavailable with Retry-After. */
async function assertPollUnavailable(node, query, label) {
  const res = await request(`${node.url}/poll?${query}`);
  const json = assertError(res, 503, 'unavailable');
  assert.match(res.headers.get('retry-after') ?? '', /^\d+$/, `${label}: Retry-After`);
  return json;
}

test('a read Redis refuses (a topic key of another type, -OOM) is 503 on /poll and ends SSE and WebSocket resumes; never an empty answer', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const m1 = await publishOk(A.url, 'bad', 'b1');
  const g1 = await publishOk(A.url, 'good', 'g1');
  // Another node's client, not disturbed by any of this.
  const bystander = await subscribe(B.url, '/events?topic=good');
  await redis.cli('SET', '{herald}:s:bad', 'an operator wrote here');
  const since = encodeURIComponent(m1.id);

  // Polls: the bad topic alone or with a good one is refused, never answered empty with a cut.
  await assertPollUnavailable(B, `topic=bad&since=${since}&timeout=0`, 'bad topic');
  await assertPollUnavailable(B, `topic=good&topic=bad&since=${since}&timeout=0`, 'bad and good topics');
  const good = await poll(B, ['good'], { since: m1.id });
  assert.deepEqual(messageIds(good.messages), [g1.id], 'a poll of the good topic is answered');
  await B.waitForStderr(/Redis refused a read: topic bad: WRONGTYPE \{herald\}:s:bad is a string, not a stream/);

  // SSE resume: the head, then an event that says so, then the end (EventSource reconnects).
  const sse = await subscribe(B.url, '/events?topic=bad', { headers: { 'Last-Event-ID': m1.id } });
  await sse.waitEnd({ timeout: 5000 });
  assert.deepEqual(sse.events.map((e) => [e.event, JSON.parse(e.data).error]), [['herald-unavailable', 'unavailable']]);

  // WebSocket: a subscribe op with since gets an error frame and is undone; the connection stays.
  const ws = await openWS(B.url, '/ws');
  const refused = await ws.call({ op: 'subscribe', topics: ['bad'], since: m1.id, ref: 'r1' });
  assert.equal(refused.type, 'error', JSON.stringify(refused));
  assert.equal(refused.error, 'unavailable', JSON.stringify(refused));
  await ws.assertUsable();
  await ws.ok({ op: 'subscribe', topics: ['good'], since: m1.id });
  await ws.waitEnvelopes(1, { topic: 'good' });
  // The upgrade request's subscription has no op to answer: the connection closes with 1013.
  const wsUpgrade = await openWS(B.url, `/ws?topic=bad&since=${since}`);
  const closed = await wsUpgrade.waitClose();
  assert.equal(closed.code, 1013, JSON.stringify(closed));

  // -OOM: the read script has to create a lost hub, which Redis refuses past maxmemory.
  await redis.cli('DEL', '{herald}:s:bad');
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1');
  await redis.cli('DEL', '{herald}:hub');
  try {
    await assertPollUnavailable(B, `topic=good&since=${encodeURIComponent(g1.id)}&timeout=0`, '-OOM');
    await B.waitForStderr(/Redis refused a read: .*OOM/);
  } finally {
    await redis.cli('CONFIG', 'SET', 'maxmemory', '0');
  }

  assert.equal(bystander.stream.ended, false, 'the bystander stream stays');
  const g2 = await publishOk(A.url, 'good', 'g2');
  await waitForId(bystander, g2.id, { label: 'the bystander on B' });
  bystander.close();
  ws.close();
});

test('a topic whose stream key has another type stalls no other topic: its catch-up is a gap, the others deliver in order', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const sseGood = await subscribe(B.url, '/events?topic=good');
  const g1 = await publishOk(A.url, 'good', 'g1');
  await waitForId(sseGood, g1.id, { label: 'good on B' });
  await publishOk(A.url, 'bad', 'b1');
  await redis.cli('SET', '{herald}:s:bad', 'an operator wrote here');
  // A new subscriber of the bad topic on B: B's catch-up round reads it (from where it started).
  const sseBad = await subscribe(B.url, '/events?topic=bad');
  await B.waitForStderr(/WRONGTYPE \{herald\}:s:bad is a string, not a stream; its subscribers on this node get a gap/);
  const ids = [];
  for (let i = 2; i <= 5; i++) ids.push((await publishOk(A.url, 'good', `g${i}`)).id);
  const items = await waitForId(sseGood, ids.at(-1), { label: 'good on B', timeout: 5000 });
  assert.deepEqual(messageIds(items), [g1.id, ...ids], 'the good topic delivers, in order');
  assert.equal(sseBad.stream.ended, false);
  sseGood.close();
  sseBad.close();
});

test('reads waiting for Redis: those whose client left are not sent when it is back; a poll without a cursor is not held past its timeout', async (t) => {
  const { redis, A } = await setup(t, 1);
  const m1 = await publishOk(A.url, 'wait', 'm1');
  await redis.kill('SIGTERM');
  await waitUnhealthy(A);
  // Each is answered at its timeout with its cursor; its read is cancelled.
  const N = 60;
  const answers = await Promise.all(Array.from({ length: N }, () => poll(A, ['wait'], { since: m1.id, timeout: 1 })));
  for (const a of answers) assert.equal(a.cursor, m1.id);
  // Without a cursor there is nothing to answer with: 503, at its timeout, not held until Redis is back.
  const t0 = Date.now();
  const res = await request(`${A.url}/poll?topic=wait&timeout=1`);
  assertError(res, 503, 'unavailable');
  assert.match(res.headers.get('retry-after') ?? '', /^\d+$/);
  assert.ok(Date.now() - t0 <= 1000 + MARGIN_MS, `answered after ${Date.now() - t0} ms`);

  await redis.restart();
  await waitHealthy(A);
  // A read sent after whatever waited: once answered, Redis ran everything before it.
  await poll(A, ['wait'], { since: m1.id });
  const stats = await redis.cli('INFO', 'commandstats');
  const calls = Number(/cmdstat_evalsha:calls=(\d+)/.exec(stats)?.[1] ?? 0);
  assert.ok(calls < N / 2, `${calls} script calls after Redis came back: the ${N} cancelled reads were sent`);
});

test('reads that found the link full go once answers drain, not at the next reconnect', async (t) => {
  const { A } = await setup(t, 1, { cluster: { max_inflight_bytes: 1 } });
  // One command in flight fills the link: every other read waits for room.
  const first = await poll(A, ['full']);
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    poll(A, [`full-${i}`], { since: first.cursor })));
  for (const a of answers) assert.deepEqual(a.messages, []);
});
