// Cursors on every transport (SPEC §2, docs/api.md "Ids and cursors"): one
// rule for what herald refuses — a malformed cursor, or one of the current
// epoch beyond the newest id, is 400 invalid_cursor (an error frame on a
// WebSocket) — for the SSE Last-Event-ID header and last_event_id/since
// parameters, /poll since, /ws?since= and the subscribe op's since; a cursor
// equal to the newest id, `earliest`, and any cursor of another epoch stay
// valid. Refusals disturb no other client. Two workers, so that an id issued
// by one worker is checked by the other.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startHerald, publishOk, request, assertError, subscribe, openSSE, openWS, wsHandshake, parseId, ID_RE,
  until,
} from '../lib/harness.mjs';

const HISTORY = 3;
let h;

before(async () => {
  h = await startHerald({ config: { workers: 2, history: { max_messages: HISTORY } } });
});
after(async () => { await h?.stop(); });

const poll = (query) => request(`${h.url}/poll?${query}`);
const enc = encodeURIComponent;

/** The hub's newest id (a plain poll without since answers it as its cursor). */
async function newestId() {
  const res = await poll('topic=cursor-probe&timeout=0');
  assert.equal(res.status, 200, res.text);
  return res.json.cursor;
}

/** A different epoch than the one of `id` (8 lowercase hex digits). */
function otherEpoch(id) {
  return ((parseInt(parseId(id).epoch, 16) ^ 0x5a5a5a5a) >>> 0).toString(16).padStart(8, '0');
}

/**
 * Every way a client hands herald a cursor over HTTP, as [label, open(cursor)]:
 * each resolves {status, text, json, headers} for a refusal, and closes
 * whatever it opened when herald accepted it.
 */
const HTTP_WAYS = [
  ['SSE Last-Event-ID', (topic, c) => sseStatus(`/events?topic=${topic}`, { 'Last-Event-ID': c })],
  ['SSE last_event_id', (topic, c) => sseStatus(`/events?topic=${topic}&last_event_id=${enc(c)}`)],
  ['SSE since', (topic, c) => sseStatus(`/events?topic=${topic}&since=${enc(c)}`)],
  ['/poll since', (topic, c) => poll(`topic=${topic}&since=${enc(c)}&timeout=0`)],
  ['/ws?since', (topic, c) => wsStatus(`/ws?topic=${topic}&since=${enc(c)}`)],
  ['/ws?since without topic', (topic, c) => wsStatus(`/ws?since=${enc(c)}`)],
  ['/ws?last_event_id', (topic, c) => wsStatus(`/ws?topic=${topic}&last_event_id=${enc(c)}`)],
];

async function sseStatus(path, headers = {}) {
  const c = await openSSE(h.url, path, { headers });
  c.close();
  return { status: c.status, text: c.body, json: c.json, headers: c.headers };
}

async function wsStatus(path) {
  const res = await wsHandshake(h.host, h.port, path);
  return { ...res, text: res.body };
}

/** A WebSocket subscribe op with since; resolves the reply (ack or error). */
async function wsSubscribe(c, topic, since, ref) {
  return c.call({ op: 'subscribe', topics: [topic], since, ref });
}

/** Bystanders on every transport, subscribed to topic before the refusals. */
async function openBystanders(topic) {
  const sse = await subscribe(h.url, `/events?topic=${topic}`);
  const ws = await openWS(h.url);
  await ws.ok({ op: 'subscribe', topics: [topic] });
  const since = await newestId();
  const waitingPoll = poll(`topic=${topic}&since=${since}&timeout=30`);
  await until(async () => (await request(`${h.url}/topics/${topic}`)).json?.subscribers === 3,
    { what: `three subscribers of ${topic}` });
  return {
    /** Publishes one message and asserts every bystander gets it. */
    async checkUndisturbed(data) {
      const m = await publishOk(h.url, topic, data);
      const [event] = await sse.waitEvents(1);
      assert.equal(event.id, m.id);
      assert.equal((await ws.waitEnvelopes(1, { topic }))[0].id, m.id);
      const answered = await waitingPoll;
      assert.equal(answered.status, 200, answered.text);
      assert.deepEqual(answered.json.messages.map((e) => e.id), [m.id]);
      assert.equal(ws.closed, null);
    },
    close() { sse.close(); ws.close(); },
  };
}

// ---------------------------------------------------------------------------

describe('a cursor herald never issued', () => {
  test('beyond the newest id → 400 invalid_cursor on every HTTP transport; bystanders undisturbed', async () => {
    const topic = 'future-http';
    const bystanders = await openBystanders(topic);
    try {
      const newest = await newestId();
      const { epoch, seq } = parseId(newest);
      const future = [`${epoch}-${seq + 1n}`, `${epoch}-${seq + 1000n}`, `${epoch}-18446744073709551615`];
      for (const [label, open] of HTTP_WAYS) {
        for (const cursor of future) {
          const res = await open(topic, cursor);
          const body = assertError(res, 400, 'invalid_cursor');
          assert.match(body.message, /beyond the newest id/, `${label} ${cursor}`);
        }
      }
      await bystanders.checkUndisturbed('after the refusals');
    } finally {
      bystanders.close();
    }
  });

  test('malformed → the same 400 invalid_cursor on every HTTP transport', async () => {
    const { epoch } = parseId(await newestId());
    const malformed = ['garbage', '12', 'Earliest', `${epoch}-`, `${epoch}-01`,
      `${epoch}-1x`, `${epoch}-18446744073709551616`, `${epoch}-1 `];
    // Uppercase hex is not an id herald issues, but an epoch of digits only (1 in 43) has none.
    if (epoch.toUpperCase() !== epoch) malformed.push(`${epoch.toUpperCase()}-1`);
    for (const [label, open] of HTTP_WAYS) {
      for (const cursor of malformed) {
        const res = await open('malformed', cursor);
        assert.equal(res.status, 400, `${label} ${JSON.stringify(cursor)}: ${res.text}`);
        assertError(res, 400, 'invalid_cursor');
      }
    }
  });

  test('WebSocket subscribe op: an error frame naming the ref; the connection and its other subscriptions keep working', async () => {
    const bystanders = await openBystanders('future-ws-bystander');
    const c = await openWS(h.url);
    try {
      await c.ok({ op: 'subscribe', topics: ['future-ws-kept'] });
      const newest = await newestId();
      const { epoch, seq } = parseId(newest);
      const refused = [`${epoch}-${seq + 1n}`, `${epoch}-18446744073709551615`, 'garbage', `${epoch}-01`];
      for (const [i, since] of refused.entries()) {
        const reply = await wsSubscribe(c, 'future-ws-new', since, i);
        assert.deepEqual(Object.keys(reply).sort(), ['error', 'message', 'ref', 'type']);
        assert.equal(reply.type, 'error');
        assert.equal(reply.error, 'invalid_cursor', JSON.stringify(reply));
        assert.equal(reply.ref, i);
      }
      for (const since of [5, null, { id: newest }]) {
        const reply = await wsSubscribe(c, 'future-ws-new', since, 'typed');
        assert.equal(reply.error, 'invalid_cursor', JSON.stringify(reply));
      }
      await c.assertUsable();
      // Nothing was subscribed by the refused ops; the earlier subscription still delivers.
      assert.equal((await publishOk(h.url, 'future-ws-new', 'x')).subscribers, 0);
      const kept = await publishOk(h.url, 'future-ws-kept', 'still here');
      assert.equal((await c.waitEnvelopes(1, { topic: 'future-ws-kept' }))[0].id, kept.id);
      await bystanders.checkUndisturbed('after the refused ops');
    } finally {
      c.close();
      bystanders.close();
    }
  });

  test('EventSource does not retry after the 400 (it fails the connection, as the SPEC wants)', async () => {
    const { EventSource } = await import('eventsource');
    const { epoch, seq } = parseId(await newestId());
    const statuses = [];
    const es = new EventSource(`${h.url}/events?topic=es-future`, {
      fetch: async (input, init) => {
        const res = await fetch(input, { ...init, headers: { ...init.headers, 'Last-Event-ID': `${epoch}-${seq + 1n}` } });
        statuses.push(res.status);
        return res;
      },
    });
    try {
      await until(() => es.readyState === EventSource.CLOSED, { what: 'the EventSource to give up' });
      assert.deepEqual(statuses, [400]);
    } finally {
      es.close();
    }
  });
});

describe('cursors that stay valid', () => {
  test('the newest id itself, on every transport: accepted, nothing owed, then live', async () => {
    const topic = 'newest';
    const m = await publishOk(h.url, topic, 'm');
    const newest = await newestId();
    assert.ok(parseId(newest).seq >= parseId(m.id).seq);

    const polled = await poll(`topic=${topic}&since=${newest}&timeout=0`);
    assert.equal(polled.status, 200, polled.text);
    assert.deepEqual(polled.json.messages, []);
    assert.equal(polled.json.cursor, newest);

    const viaHeader = await subscribe(h.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': newest } });
    const viaParam = await subscribe(h.url, `/events?topic=${topic}&last_event_id=${newest}`);
    const viaQuery = await openWS(h.url, `/ws?topic=${topic}&since=${newest}`);
    const viaOp = await openWS(h.url);
    try {
      await viaOp.ok({ op: 'subscribe', topics: [topic], since: newest });
      await until(async () => (await request(`${h.url}/topics/${topic}`)).json?.subscribers === 4, { what: 'four subscribers' });
      const live = await publishOk(h.url, topic, 'live');
      for (const sse of [viaHeader, viaParam]) assert.deepEqual((await sse.waitEvents(1)).map((e) => e.id), [live.id]);
      for (const ws of [viaQuery, viaOp]) assert.deepEqual((await ws.waitEnvelopes(1)).map((e) => e.id), [live.id]);
    } finally {
      viaHeader.close();
      viaParam.close();
      viaQuery.close();
      viaOp.close();
    }
  });

  test('an id just issued by either worker is accepted at once by either worker (no race with the sequence)', async () => {
    // Fresh connections (no keep-alive) land on either worker's listener.
    const agent = new http.Agent({ keepAlive: false });
    const get = (path) => new Promise((resolve, reject) => {
      http.get(`${h.url}${path}`, { agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode, body }));
      }).on('error', reject);
    });
    try {
      for (let i = 0; i < 40; i++) {
        const m = await publishOk(h.url, 'race', `r${i}`);
        const res = await get(`/poll?topic=race&since=${m.id}&timeout=0`);
        assert.equal(res.status, 200, `since=${m.id}: ${res.body}`);
        assert.deepEqual(JSON.parse(res.body).messages, []);
      }
      // The id a WebSocket publish acknowledges, handed straight to the other transports.
      const c = await openWS(h.url);
      try {
        for (let i = 0; i < 20; i++) {
          const ack = await c.ok({ op: 'publish', topic: 'race', data: `w${i}` });
          const res = await get(`/poll?topic=race&since=${ack.id}&timeout=0`);
          assert.equal(res.status, 200, `since=${ack.id}: ${res.body}`);
          const sub = await c.call({ op: 'subscribe', topics: ['race-ws'], since: ack.id });
          assert.equal(sub.type, 'ack', JSON.stringify(sub));
        }
      } finally {
        c.close();
      }
    } finally {
      agent.destroy();
    }
  });

  test('another epoch, whatever its seq: a gap on every transport, never a refusal', async () => {
    const topic = 'foreign';
    const ids = [];
    for (let i = 0; i < HISTORY + 2; i++) ids.push((await publishOk(h.url, topic, `f${i}`)).id);
    const held = ids.slice(2);
    const { seq } = parseId(await newestId());
    const foreign = `${otherEpoch(ids[0])}-${seq + 1000n}`;

    const polled = await poll(`topic=${topic}&since=${foreign}&timeout=0`);
    assert.equal(polled.status, 200, polled.text);
    assert.equal(polled.json.gap, true);
    assert.deepEqual(polled.json.gaps, [{ topic, from: foreign, to: ids[1] }]);
    assert.deepEqual(polled.json.messages.map((m) => m.id), held);

    const sse = await subscribe(h.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': foreign } });
    const ws = await openWS(h.url);
    try {
      const events = await sse.waitEvents(1 + HISTORY);
      assert.equal(events[0].event, 'herald-gap');
      assert.deepEqual(JSON.parse(events[0].data), { topic, from: foreign, to: ids[1] });
      assert.deepEqual(events.slice(1).map((e) => e.id), held);

      await ws.ok({ op: 'subscribe', topics: [topic], since: foreign });
      const gap = await ws.waitJson((j) => j.type === 'gap');
      assert.deepEqual(gap, { type: 'gap', topic, from: foreign, to: ids[1] });
      assert.deepEqual((await ws.waitEnvelopes(HISTORY)).map((e) => e.id), held);
    } finally {
      sse.close();
      ws.close();
    }
  });

  test('earliest: everything history holds, with no gap, on every transport', async () => {
    const topic = 'earliest';
    const ids = [];
    for (let i = 0; i < HISTORY + 2; i++) ids.push((await publishOk(h.url, topic, `e${i}`)).id);
    const held = ids.slice(2); // two were evicted: a numeric cursor before them would get a gap

    const polled = await poll(`topic=${topic}&since=earliest&timeout=0`);
    assert.equal(polled.status, 200, polled.text);
    assert.equal(polled.json.gap, false);
    assert.ok(!('gaps' in polled.json));
    assert.deepEqual(polled.json.messages.map((m) => m.id), held);
    assert.match(polled.json.cursor, ID_RE);
    const limited = await poll(`topic=${topic}&since=earliest&timeout=0&limit=1`);
    assert.deepEqual(limited.json.messages.map((m) => m.id), [held[0]]);
    assert.equal(limited.json.more, true);
    assert.equal(limited.json.cursor, held[0]);

    const viaHeader = await subscribe(h.url, `/events?topic=${topic}`, { headers: { 'Last-Event-ID': 'earliest' } });
    const viaParam = await subscribe(h.url, `/events?topic=${topic}&last_event_id=earliest`);
    const viaQuery = await openWS(h.url, `/ws?topic=${topic}&since=earliest`);
    const viaOp = await openWS(h.url);
    try {
      await viaOp.ok({ op: 'subscribe', topics: [topic], since: 'earliest' });
      for (const sse of [viaHeader, viaParam]) {
        assert.deepEqual((await sse.waitEvents(HISTORY)).map((e) => [e.event, e.id]), held.map((id) => [undefined, id]));
      }
      for (const ws of [viaQuery, viaOp]) {
        assert.deepEqual((await ws.waitEnvelopes(HISTORY)).map((e) => e.id), held);
        assert.deepEqual(ws.json.filter((j) => j.type === 'gap'), []);
      }
      await viaHeader.expectNoMore(200);
      await viaOp.expectNoMore(0);
    } finally {
      viaHeader.close();
      viaParam.close();
      viaQuery.close();
      viaOp.close();
    }
  });
});
