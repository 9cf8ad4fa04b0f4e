// Catching up from history in batches (src/transport/catch_up.c): a client
// owed more history than its outbound queue may hold gets it in batches,
// each loss reported once, and an unsubscribe stops the catch-up of that
// topic at once.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, publishBatch, subscribe, openWS, parseId } from '../lib/harness.mjs';

let h;
let epoch;
after(async () => { await h?.stop(); });

async function publishMany(url, topic, n, prefix) {
  const ids = [];
  for (let i = 0; i < n; i += 100) {
    const items = Array.from({ length: Math.min(100, n - i) }, (_, k) => ({ topic, data: `${prefix}${i + k}` }));
    const res = await publishBatch(url, items);
    assert.equal(res.status, 201);
    for (const m of res.json.messages) ids.push(m.id);
  }
  return ids;
}

test('SSE: a resume spanning many batches reports each loss once and delivers in order', async () => {
  h = await startHerald({ config: { limits: { max_outbound_bytes: 4096 }, history: { max_messages: 1000 } } });
  const idsB = await publishMany(h.url, 'cu-b', 300, 'b');
  const idsA = await publishMany(h.url, 'cu-a', 1500, 'a');
  epoch = parseId(idsB[0]).epoch;
  const sse = await subscribe(h.url, `/events?topic=cu-a&topic=cu-b&last_event_id=${epoch}-0`);
  try {
    await sse.waitEvents(1 + 300 + 1000, { timeout: 20_000 });
    await sse.expectNoMore(300);
    const gaps = sse.events.filter((e) => e.event === 'herald-gap').map((e) => JSON.parse(e.data));
    assert.deepEqual(gaps, [{ topic: 'cu-a', from: `${epoch}-0`, to: idsA[499] }], 'one gap, for the topic that lost messages');
    const ids = sse.events.filter((e) => e.event !== 'herald-gap').map((e) => e.id);
    assert.deepEqual(ids, [...idsB, ...idsA.slice(500)], 'every held message once, in publish order');
  } finally {
    sse.close();
  }
});

test('WebSocket: unsubscribing during a catch-up stops that topic at once', async () => {
  const hw = await startHerald({
    config: { limits: { max_outbound_bytes: 65536 }, history: { max_messages: 1000, max_bytes: 16 * 1024 * 1024 } },
  });
  const ws = await openWS(hw.url, '/ws');
  try {
    // 8 MB of history: more than the kernel's socket buffers can hide.
    const big = 'x'.repeat(8000);
    const ids = [];
    for (let i = 0; i < 1000; i += 100) {
      const res = await publishBatch(hw.url, Array.from({ length: 100 }, () => ({ topic: 'cu-big', data: big })));
      assert.equal(res.status, 201);
      ids.push(...res.json.messages.map((m) => m.id));
    }
    const since = `${parseId(ids[0]).epoch}-0`;
    await ws.ok({ op: 'subscribe', topics: ['cu-big'], since, ref: 'sub' });
    ws.ws._socket.pause();
    await ws.send({ op: 'unsubscribe', topics: ['cu-big'], ref: 'unsub' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    ws.ws._socket.resume();
    await ws.waitJson((j) => j.ref === 'unsub');
    await ws.expectNoMore(300);
    const got = ws.envelopes('cu-big').map((e) => e.id);
    assert.ok(got.length < 1000, `the catch-up stopped early (${got.length} of 1000)`);
    assert.deepEqual(got, ids.slice(0, got.length), 'what did arrive is the start of history, in order');
    await ws.assertUsable();
  } finally {
    ws.close();
    await hw.stop();
  }
});
