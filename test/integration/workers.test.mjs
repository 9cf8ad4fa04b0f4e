// Several workers (event loops on their own threads, sharing one listening
// socket) behind one hub: subscribers spread over the workers
// receive every message, in the same per-topic order, whichever worker the
// publisher reached. Also run against herald-tsan (ThreadSanitizer) by CTest.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, subscribe, openWS, publishOk, publishBatch, request, until, parseId,
} from '../lib/harness.mjs';

const WORKERS = 2;
const TOPICS = ['w-a', 'w-b', 'w-c'];
// Slow under ThreadSanitizer: fewer clients there, the same checks.
const SCALE = process.env.HERALD_VARIANT === '-tsan' ? 1 : 2;

let h;
before(async () => {
  h = await startHerald({ config: { workers: WORKERS } });
});
after(async () => {
  await h?.stop();
});

async function metrics() {
  const res = await request(`${h.url}/metrics`);
  assert.equal(res.status, 200);
  const values = new Map();
  for (const line of res.text.split('\n')) {
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) values.set(m[1], Number(m[2]));
  }
  return values;
}

function seqOf(id) {
  return parseId(id).seq;
}

test('subscribers spread over the workers get every message in per-topic order', async () => {
  const sse = [];
  const ws = [];
  for (let i = 0; i < 20 * SCALE; i++) {
    const topics = [TOPICS[i % 3], TOPICS[(i + 1) % 3]];
    sse.push({ topics, client: await subscribe(h.url, `/events?topic=${topics[0]}&topic=${topics[1]}&format=json`) });
    ws.push({ topics, client: await openWS(h.url, `/ws?topic=${topics[0]}`) });
    await ws.at(-1).client.ok({ op: 'subscribe', topics: [topics[1]] });
  }
  // Whichever worker is free first accepts: both workers must hold some.
  const before = await metrics();
  for (let w = 0; w < WORKERS; w++) {
    assert.ok(before.get(`herald_worker_connections{worker="${w}"}`) > 0,
      `worker ${w} holds no connection: ${JSON.stringify([...before].filter(([k]) => k.startsWith('herald_worker')))}`);
  }

  // Publishers on separate connections (so on either worker), concurrently:
  // single POSTs, batches, and WebSocket publish ops from clients of both workers.
  const published = [];
  const perPublisher = 30 * SCALE;
  const publishers = [
    (async () => {
      for (let i = 0; i < perPublisher; i++) {
        const topic = TOPICS[i % 3];
        published.push({ topic, ...(await publishOk(h.url, topic, `post ${i}`)) });
      }
    })(),
    (async () => {
      for (let i = 0; i < perPublisher; i += 5) {
        const items = [0, 1, 2, 3, 4].map((k) => ({ topic: TOPICS[(i + k) % 3], data: `batch ${i + k}` }));
        const res = await publishBatch(h.url, items);
        assert.equal(res.status, 201);
        res.json.messages.forEach((m) => published.push({ topic: m.topic, id: m.id }));
      }
    })(),
    ...[0, 1, 2].map((p) => (async () => {
      const client = ws[p * 3].client;
      for (let i = 0; i < perPublisher / 3; i++) {
        const topic = TOPICS[(i + p) % 3];
        const ack = await client.ok({ op: 'publish', topic, data: `ws ${p} ${i}` });
        published.push({ topic, id: ack.id });
      }
    })()),
  ];
  await Promise.all(publishers);

  const expected = new Map(TOPICS.map((t) => [t, published.filter((m) => m.topic === t)
    .map((m) => m.id).sort((a, b) => (seqOf(a) < seqOf(b) ? -1 : 1))]));
  const wanted = (topics) => topics.reduce((n, t) => n + expected.get(t).length, 0);

  for (const { topics, client } of sse) await client.waitEvents(wanted(topics), { timeout: 20000 });
  for (const { topics, client } of ws) await client.waitEnvelopes(wanted(topics), { timeout: 20000 });

  const check = (label, topics, envelopes) => {
    for (const topic of topics) {
      const got = envelopes.filter((e) => e.topic === topic).map((e) => e.id);
      assert.deepEqual(got, expected.get(topic), `${label}: ${topic} not complete and in order`);
    }
    assert.equal(envelopes.length, wanted(topics), `${label}: extra messages`);
  };
  sse.forEach(({ topics, client }, i) => check(`sse ${i}`, topics, client.events.map((e) => JSON.parse(e.data))));
  ws.forEach(({ topics, client }, i) => check(`ws ${i}`, topics, client.envelopes()));

  const after = await metrics();
  const deliveries = (m) => m.get('herald_deliveries_total{transport="sse"}') + m.get('herald_deliveries_total{transport="websocket"}');
  const expectedDeliveries = sse.reduce((n, s) => n + wanted(s.topics), 0) + ws.reduce((n, s) => n + wanted(s.topics), 0);
  assert.equal(deliveries(after) - deliveries(before), expectedDeliveries, 'deliveries summed over the workers');
  assert.equal(after.get('herald_messages_published_total') - before.get('herald_messages_published_total'), published.length);

  sse.forEach(({ client }) => client.close());
  ws.forEach(({ client }) => client.ws.terminate());
  await until(async () => (await metrics()).get('herald_subscriptions') === 0, { timeout: 10000, what: 'every subscription gone' });
});

test('a client resumes on whichever worker it reaches, and long-polls see publishes from any worker', async () => {
  const topic = 'w-resume';
  const first = await publishOk(h.url, topic, 'one');
  const ids = [first.id];
  for (let i = 0; i < 10; i++) ids.push((await publishOk(h.url, topic, `m${i}`)).id);
  // Several reconnects: the kernel's hash sends them to different workers.
  for (let r = 0; r < 6; r++) {
    const client = await subscribe(h.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': first.id } });
    await client.waitEvents(10, { timeout: 10000 });
    assert.deepEqual(client.events.map((e) => e.id), ids.slice(1));
    client.close();
  }
  // Waiting polls, then publishes over new connections (either worker) wake them.
  const polls = [];
  for (let i = 0; i < 6; i++) {
    polls.push(request(`${h.url}/poll?topic=${topic}&since=${ids.at(-1)}&timeout=10`, { timeout: 15000 }));
  }
  await until(async () => (await metrics()).get('herald_connections{transport="poll"}') === 6, { what: 'six waiting polls' });
  const next = await publishOk(h.url, topic, 'wake');
  for (const res of await Promise.all(polls)) {
    assert.equal(res.status, 200);
    const body = res.json;
    assert.deepEqual(body.messages.map((m) => m.id), [next.id]);
    assert.equal(body.cursor, next.id);
  }
});
