// The Redis engine's read path (SPEC §5: no hole at the seam between history
// and live; failures said, never hidden): reads go to Redis in the order they
// were asked, however full the link (cluster.max_inflight_bytes: 1 holds one
// command); an entry of a topic's stream that herald did not write (an
// operator's XADD) fails that topic's reads alone, never the node, and
// stalls no other topic.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { publishOk, subscribe, request } from '../lib/harness.mjs';
import {
  startRedis, startProxy, startMonitor, startCluster, injectMessage, waitForId, messageIds, onTestEnd,
  poll,
} from '../lib/cluster.mjs';

const CONFIG = { heartbeat_s: 1, cluster: { timeout_ms: 1000 } };

async function setup(t, n, { cluster: extra = {}, proxy: withProxy = false } = {}) {
  const redis = await startRedis();
  onTestEnd(t, () => redis.stop());
  const proxy = withProxy ? await startProxy(redis.port) : undefined;
  if (proxy) onTestEnd(t, () => proxy.close());
  const config = { ...CONFIG, cluster: { ...CONFIG.cluster, ...extra } };
  const cluster = await startCluster(n, { redis: proxy ?? redis, config });
  onTestEnd(t, () => cluster.stop());
  return { redis, proxy, ...cluster };
}

test('a link that holds one command: new topics catch up (rounds of several topics wait for room), subscribers lose nothing published after they were acknowledged', async (t) => {
  const { redis, A } = await setup(t, 1, { cluster: { max_inflight_bytes: 1 } });
  await publishOk(A.url, 'warm', 'w'); // the hub exists: every id below is in its epoch
  const TOPICS = 12;
  let running = true;
  const injected = []; // {topic, id, at: when its injection started}
  const hammer = (async () => {
    for (let k = 0; running; k++) {
      const topic = `hot-${k % TOPICS}`;
      const at = Date.now();
      injected.push({ topic, id: await injectMessage(redis, topic, `m${k}`), at });
    }
  })();
  // Reads and catch-up rounds (their barriers) keep the one-command link busy.
  const pollers = Array.from({ length: 3 }, async (_, i) => {
    for (let k = 0; running; k++) await poll(A, [`busy-${i}-${k % 4}`], { since: injected.at(-1)?.id });
  });
  const subscribers = [];
  // Several subscribers of each new topic join at once: the first one's interest sends the
  // topic's position read, and the others' reads must not overtake it.
  for (let i = 0; i < TOPICS; i++) {
    subscribers.push(...await Promise.all(Array.from({ length: 3 }, async () => {
      const sse = await subscribe(A.url, `/events?topic=hot-${i}`);
      return { topic: `hot-${i}`, sse, acked: Date.now() };
    })));
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  running = false;
  await hammer;
  await Promise.all(pollers);
  // A last message of each topic, which every subscriber gets.
  for (let i = 0; i < TOPICS; i++) {
    injected.push({ topic: `hot-${i}`, id: await injectMessage(redis, `hot-${i}`, 'last'), at: Date.now() });
  }
  for (const { topic, sse, acked } of subscribers) {
    const mine = injected.filter((m) => m.topic === topic);
    const items = await waitForId(sse, mine.at(-1).id, { label: topic, timeout: 10_000 });
    const got = new Set(messageIds(items));
    const missing = mine.filter((m) => m.at > acked && !got.has(m.id)).map((m) => m.id);
    assert.deepEqual(missing, [], `${topic}: published after its subscriber was acknowledged, not delivered`);
    assert.deepEqual(items.filter((i) => i.type === 'gap'), [], `${topic}: no gap`);
    sse.close();
  }
});

test('a resume read does not overtake a new topic\'s position read that waits for room: no hole at the seam', async (t) => {
  const { redis, proxy, A } = await setup(t, 1, { cluster: { max_inflight_bytes: 1 }, proxy: true });
  const monitor = await startMonitor(redis.port);
  t.after(() => monitor.close());
  const m0 = (await publishOk(A.url, 'seam', 'm0')).id;
  const commands = (c) => !c.pubsub;
  // 1. The link's one command in flight is a topics script call (not a read), its answer held.
  proxy.pause({ filter: commands, direction: 'down' });
  const describe = request(`${A.url}/topics/elsewhere`);
  await until(() => monitor.lines.some((l) => l.includes('"elsewhere"')), 'the topics script');
  const describedAt = monitor.lines.findIndex((l) => l.includes('"elsewhere"'));
  // 2. The first subscriber of the topic: its position read finds the link full and waits.
  const first = subscribe(A.url, '/events?topic=seam');
  await until(() => monitor.lines.some((l) => /"SUBSCRIBE" "\{herald\}:c:seam"/.test(l)), 'SUBSCRIBE of seam');
  // 3. Room: the topics script is answered. 4. A client resumes from m0 right after.
  proxy.resume({ filter: commands, direction: 'down' });
  await describe; // (404: no such topic)
  proxy.pause({ filter: commands, direction: 'down' });
  const resumed = subscribe(A.url, '/events?topic=seam', { headers: { 'Last-Event-ID': m0 } });
  // Whichever read went first reached Redis; then messages come that the resume must get.
  await until(() => monitor.lines.slice(describedAt).some((l) => l.includes('"EVALSHA"')), 'a read');
  const ids = [];
  for (let i = 1; i <= 3; i++) ids.push(await injectMessage(redis, 'seam', `m${i}`));
  proxy.resume({ filter: commands, direction: 'down' });
  const sse = await resumed;
  ids.push(await injectMessage(redis, 'seam', 'm4'));
  const items = await waitForId(sse, ids.at(-1), { label: 'the resumed subscriber' });
  assert.deepEqual(messageIds(items), ids, 'everything after m0, in order, no hole');
  assert.deepEqual(items.filter((i) => i.type === 'gap'), []);
  const s1 = await first;
  await waitForId(s1, ids.at(-1), { label: 'the first subscriber' });
  sse.close();
  s1.close();
});

async function until(pred, what, timeout = 5000) {
  const end = Date.now() + timeout;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('an entry herald did not write (an operator\'s XADD) makes its topic unreadable alone: a gap up to the cut in a poll or resume, never a crash', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const g1 = await publishOk(A.url, 'good', 'g1');
  const bystander = await subscribe(B.url, '/events?topic=good');
  const m1 = await publishOk(A.url, 'bad', 'b1');
  // Fields missing: the script's answer would shift, putting the next topics' numbers where
  // an entry's strings belong.
  await redis.cli('XADD', '{herald}:s:bad', '999998-0', 'd', 'x');
  await redis.cli('XADD', '{herald}:s:bad', '999999-0', 'd', 'y');
  // From before m1: the bad topic's range up to the cut is a gap, the others are read.
  const since = encodeURIComponent(g1.id);
  for (const query of [`topic=bad&topic=good&topic=other&since=${since}`, `topic=good&topic=bad&since=${since}`]) {
    const res = await request(`${B.url}/poll?${query}&timeout=0`);
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.gaps, [{ topic: 'bad', from: g1.id, to: m1.id }], res.text);
    assert.deepEqual(res.json.messages, [], res.text);
  }
  await B.waitForStderr(/Redis refused a read: topic bad: entry 999998-0 of \{herald\}:s:bad is not one herald wrote; a read from a cursor gets a gap for it/);
  const sse = await subscribe(B.url, '/events?topic=bad', { headers: { 'Last-Event-ID': g1.id } });
  await until(() => sse.events.some((e) => e.event === 'herald-gap'), 'the gap on SSE');
  assert.deepEqual(sse.events.map((e) => [e.event, JSON.parse(e.data).to]), [['herald-gap', m1.id]]);
  assert.equal(sse.stream.ended, false);
  sse.close();
  // The node is alive, other topics are read and delivered.
  const good = await poll(B, ['good'], { since: g1.id });
  assert.deepEqual(good.messages, []);
  const g2 = await publishOk(A.url, 'good', 'g2');
  await waitForId(bystander, g2.id, { label: 'the bystander on B' });
  bystander.close();
});

test('a malformed entry in one topic\'s stream stalls no other topic on a node catching up: its catch-up is a gap', async (t) => {
  const { redis, A, B } = await setup(t, 2);
  const sseGood = await subscribe(B.url, '/events?topic=good');
  const g1 = await publishOk(A.url, 'good', 'g1');
  await waitForId(sseGood, g1.id, { label: 'good on B' });
  await publishOk(A.url, 'bad', 'b1');
  // An entry that lacks every field but one: reading it failed the whole script.
  await redis.cli('XADD', '{herald}:s:bad', '999999-0', 'd', 'x');
  // A new subscriber of the bad topic on B: B's catch-up round reads it.
  const sseBad = await subscribe(B.url, '/events?topic=bad');
  const ids = [];
  for (let i = 2; i <= 5; i++) ids.push((await publishOk(A.url, 'good', `g${i}`)).id);
  const items = await waitForId(sseGood, ids.at(-1), { label: 'good on B', timeout: 5000 });
  assert.deepEqual(messageIds(items), [g1.id, ...ids], 'the good topic delivers, in order');
  await B.waitForStderr(/entry 999999-0 of \{herald\}:s:bad is not one herald wrote; its subscribers on this node get a gap/);
  assert.equal(sseBad.stream.ended, false);
  sseGood.close();
  sseBad.close();
});

test('a new topic\'s position and catch-up reads go before clients\' reads waiting for room: live delivery is not held behind them', async (t) => {
  const { redis, proxy, A } = await setup(t, 1, { cluster: { max_inflight_bytes: 1 }, proxy: true });
  const monitor = await startMonitor(redis.port);
  t.after(() => monitor.close());
  const m0 = (await publishOk(A.url, 'warm', 'm0')).id;
  const commands = (c) => !c.pubsub;
  // The link's one command in flight, its answer held: every other read waits for room.
  proxy.pause({ filter: commands, direction: 'down' });
  const N = 200;
  const polls = [poll(A, ['q-first'], { since: m0 })];
  await until(() => monitor.lines.some((l) => l.includes('"q-first"')), 'the first poll\'s read');
  polls.push(...Array.from({ length: N }, (_, i) => poll(A, [`q-${i}`], { since: m0 })));
  // A new subscriber after them: its topic's position read waits too.
  const sse = subscribe(A.url, '/events?topic=live');
  await until(() => monitor.lines.some((l) => /"SUBSCRIBE" "\{herald\}:c:live"/.test(l)), 'SUBSCRIBE of live');
  const mark = monitor.lines.length;
  proxy.resume({ filter: commands, direction: 'down' });
  await Promise.all(polls);
  const reads = monitor.lines.slice(mark).filter((l) => l.includes('"EVALSHA"'));
  const clients = reads.filter((l) => /"q-\d+"/.test(l)).length;
  assert.ok(clients >= N * 0.9, `${clients} of the ${N} waiting polls were read after the resume`);
  const before = reads.findIndex((l) => !/"q-\d+"/.test(l));
  assert.ok(before >= 0 && before <= 1, `the position read went after ${before} of the waiting clients' reads`);
  const s = await sse;
  const live = await injectMessage(redis, 'live', 'l1');
  await waitForId(s, live, { label: 'the new subscriber' });
  s.close();
});

test('reads waiting for room leave a quarter of cluster.max_inflight_bytes to publishes: a publish is accepted while hundreds of reads wait', async (t) => {
  const { redis, proxy, A } = await setup(t, 1, { cluster: { max_inflight_bytes: 4096 }, proxy: true });
  const monitor = await startMonitor(redis.port);
  t.after(() => monitor.close());
  const m0 = (await publishOk(A.url, 'warm', 'm0')).id;
  const commands = (c) => !c.pubsub;
  proxy.pause({ filter: commands, direction: 'down' });
  const N = 200;
  const polls = Array.from({ length: N }, (_, i) => poll(A, [`q-${i}`], { since: m0 }));
  // Reads fill the link up to their share (nothing is answered); the rest wait.
  await until(() => monitor.lines.filter((l) => /"q-\d+"/.test(l)).length >= 5, 'reads in flight');
  const published = publishOk(A.url, 'news', 'p1');
  await until(() => monitor.lines.some((l) => l.includes('"news"')), 'the publish sent to Redis');
  const sent = monitor.lines.filter((l) => /"q-\d+"/.test(l)).length;
  assert.ok(sent < N / 4, `${sent} reads in flight`);
  proxy.resume({ filter: commands, direction: 'down' });
  await published;
  await Promise.all(polls);
});
