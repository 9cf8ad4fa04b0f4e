// Cross-transport consistency (docs/protocol.md, docs/api.md): every transport is fed
// from one topic registry, so one publish reaches a Server-Sent Events client
// (text and format=json), a WebSocket client (query and subscribe op) and a
// long-poll client with the same id and exactly the same data; the WebSocket
// frame and the poll envelope are the same bytes. Under concurrent publishers
// every transport sees every message once, all in the same order.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, publishOk, publishBatch, subscribe, openEventSource, openWS, parseId, until, ID_RE,
} from '../lib/harness.mjs';

let h;

before(async () => {
  h = await startHerald({ config: { limits: { max_message_bytes: 65536 } } });
});
after(async () => { await h?.stop(); });

// ---------------------------------------------------------------------------
// Helpers

/** GET /poll?query; asserts a 200 JSON answer; resolves {text, json, rawMessages}. */
async function poll(query, { timeout = 30_000 } = {}) {
  const res = await fetch(`${h.url}/poll?${query}`, { signal: AbortSignal.timeout(timeout) });
  const buf = Buffer.from(await res.arrayBuffer());
  const text = buf.toString('utf8');
  assert.equal(res.status, 200, `GET /poll?${query}: expected 200, got ${res.status} ${text.slice(0, 500)}`);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/, 'poll content-type');
  const json = JSON.parse(text);
  assert.ok(Array.isArray(json.messages), `poll answer without messages: ${text.slice(0, 500)}`);
  assert.match(json.cursor ?? '', ID_RE, `poll cursor in ${text.slice(0, 500)}`);
  return { buf, text, json, rawMessages: rawArrayElements(text, 'messages') };
}

/** The value of herald_connections{transport="poll"} (waiting polls). */
async function waitingPolls() {
  const res = await fetch(`${h.url}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  const m = /^herald_connections\{transport="poll"\} (\S+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

/** Resolves once n polls are waiting in herald (so the next publish wakes a waiting poll). */
function pollsWaiting(n = 1) {
  return until(async () => (await waitingPolls()) >= n, { timeout: 10_000, interval: 20, what: `${n} waiting poll(s)` });
}

// A minimal JSON scanner that returns the raw text of the elements of a
// top-level array, so the poll envelopes can be compared byte for byte with
// the WebSocket frames.
function skipWs(s, i) {
  while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === '\n' || s[i] === '\r')) i++;
  return i;
}
function skipString(s, i) {
  assert.equal(s[i], '"', `string expected at ${i}`);
  for (i++; i < s.length; i++) {
    if (s[i] === '\\') i++;
    else if (s[i] === '"') return i + 1;
  }
  throw new Error('unterminated JSON string');
}
function skipValue(s, i) {
  i = skipWs(s, i);
  if (s[i] === '"') return skipString(s, i);
  if (s[i] === '{' || s[i] === '[') {
    let depth = 0;
    while (i < s.length) {
      const c = s[i];
      if (c === '"') { i = skipString(s, i); continue; }
      if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') { depth--; if (depth === 0) return i + 1; }
      i++;
    }
    throw new Error('unterminated JSON container');
  }
  const m = /^(?:true|false|null|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/.exec(s.slice(i, i + 64));
  if (!m) throw new Error(`bad JSON value at ${i}: ${s.slice(i, i + 20)}`);
  return i + m[0].length;
}
function rawArrayElements(s, key) {
  let i = skipWs(s, 0);
  assert.equal(s[i], '{', 'a JSON object');
  i++;
  for (;;) {
    i = skipWs(s, i);
    if (s[i] === '}') break;
    const keyEnd = skipString(s, i);
    const k = JSON.parse(s.slice(i, keyEnd));
    i = skipWs(s, keyEnd);
    assert.equal(s[i], ':');
    i = skipWs(s, i + 1);
    const valueEnd = skipValue(s, i);
    if (k === key) {
      assert.equal(s[i], '[', `${key} is an array`);
      const out = [];
      let j = i + 1;
      for (;;) {
        j = skipWs(s, j);
        if (s[j] === ']') return out;
        const e = skipValue(s, j);
        out.push(s.slice(j, e));
        j = skipWs(s, e);
        if (s[j] === ',') j++;
      }
    }
    i = skipWs(s, valueEnd);
    if (s[i] === ',') i++;
  }
  throw new Error(`no "${key}" in ${s.slice(0, 200)}`);
}

/** A string of exactly `bytes` UTF-8 bytes mixing ASCII, 2-, 3- and 4-byte characters and newlines. */
function makeBig(bytes) {
  const unit = 'The quick brown fox — «ünïcödé» ☃ 🎉 \\ "quoted" {"json":[1]}\n';
  const unitBytes = Buffer.byteLength(unit);
  const parts = [];
  let size = 0;
  while (size + unitBytes <= bytes) { parts.push(unit); size += unitBytes; }
  parts.push('x'.repeat(bytes - size));
  const s = parts.join('');
  assert.equal(Buffer.byteLength(s), bytes);
  return s;
}

const topicOf = (name) => `consistency/${name}`;

// ---------------------------------------------------------------------------

describe('one publish, every transport: same id, same data, same bytes', () => {
  const T = topicOf('payloads');
  let es;       // npm eventsource, default text format
  let sseJson;  // raw SSE reader, format=json
  let wsQuery;  // /ws?topic=T
  let wsOp;     // /ws + subscribe op

  before(async () => {
    es = await openEventSource(`${h.url}/events?topic=${T}`);
    sseJson = await subscribe(h.url, `/events?topic=${T}&format=json`);
    wsQuery = await openWS(h.url, `/ws?topic=${T}`);
    wsOp = await openWS(h.url, '/ws');
    await wsOp.ok({ op: 'subscribe', topics: [T] });
  });
  after(() => {
    es?.close();
    sseJson?.close();
    wsQuery?.close();
    wsOp?.close();
  });

  const SAMPLES = [
    { name: 'plain ASCII', data: 'hello world 123' },
    { name: 'unicode', data: 'héllo wörld ☃ 日本語 e\u0301' },
    { name: 'emoji (4-byte UTF-8)', data: '🎉🚀 and a family 👩‍👩‍👧 🇯🇵' },
    { name: 'newlines in the middle, at the start and at the end', data: '\nline 1\nline 2\n\nline 4\n' },
    // SSE text splits on \r too (docs/api.md): the EventSource sees \n there.
    { name: 'CR and CRLF (exact over JSON transports)', data: 'a\rb\r\nc\r\n', sseText: 'a\nb\nc\n' },
    { name: 'quotes and backslashes', data: String.raw`"\\ \" ' \n \u0041 \\"` },
    { name: 'JSON-looking data', data: '{"type":"message","topic":"x","id":"00000000-1","data":[1,2,{"a":null}],"ok":true}' },
    { name: 'control characters and separators', data: 'tab\tx \u0001 \u001f \u007f \u2028 \u2029 \u0085 end' },
    { name: 'U+0000 (raw-body publishing carries it)', data: 'nul\u0000inside' },
    { name: 'empty string', data: '' },
    { name: '60 KiB payload', data: makeBig(60 * 1024) },
  ];

  for (const sample of SAMPLES) {
    test(sample.name, async () => {
      const fresh = await poll(`topic=${T}&timeout=0`);
      assert.deepEqual(fresh.json.messages, [], 'a poll without since reads nothing older');
      const waiting = poll(`topic=${T}&since=${fresh.json.cursor}&timeout=30`);
      waiting.catch(() => {}); // awaited below
      await pollsWaiting(1);

      const t0 = Date.now();
      const pub = await publishOk(h.url, T, sample.data);
      const t1 = Date.now();
      assert.equal(pub.topic, T);
      assert.equal(pub.subscribers, 5, 'SSE text, SSE json, 2 WebSockets and the waiting poll');

      // Long-poll
      const answer = await waiting;
      assert.equal(answer.json.messages.length, 1, answer.text.slice(0, 500));
      assert.equal(answer.json.gap, false);
      assert.equal(answer.json.more, false);
      assert.equal(answer.json.cursor, pub.id, 'cursor is the newest id');
      const pollEnv = answer.json.messages[0];
      const pollRaw = answer.rawMessages[0];

      // WebSocket, both subscriptions
      const wsFrames = [];
      for (const c of [wsQuery, wsOp]) {
        const m = await c.waitFor(() => c.messages.find((x) => x.json?.type === 'message' && x.json.id === pub.id),
          { timeout: 10_000, what: `the envelope ${pub.id}` });
        wsFrames.push(m);
      }
      // SSE text (EventSource)
      const esMsg = await until(() => es.got.message.find((m) => m.lastEventId === pub.id),
        { timeout: 10_000, what: () => `EventSource message ${pub.id}; got ${JSON.stringify(es.got.all.slice(-3)).slice(0, 500)}` });
      // SSE json
      await sseJson.waitFor((s) => s.events.some((e) => e.id === pub.id), { timeout: 10_000, what: `SSE json event ${pub.id}` });
      const jsonEvent = sseJson.events.find((e) => e.id === pub.id);

      // Same id everywhere
      assert.match(pub.id, ID_RE);
      assert.equal(esMsg.lastEventId, pub.id, 'SSE id');
      assert.equal(jsonEvent.id, pub.id, 'SSE json id line');
      for (const f of wsFrames) assert.equal(f.json.id, pub.id, 'WebSocket envelope id');
      assert.equal(pollEnv.id, pub.id, 'poll envelope id');

      // Same data everywhere (SSE text: \r becomes \n, as documented)
      assert.equal(esMsg.data, sample.sseText ?? sample.data, 'SSE text data');
      const sseEnv = JSON.parse(jsonEvent.data);
      for (const env of [sseEnv, pollEnv, ...wsFrames.map((f) => f.json)]) {
        assert.equal(env.type, 'message');
        assert.equal(env.topic, T);
        assert.equal(env.data, sample.data, 'envelope data');
        assert.ok(!('event' in env), 'no event when the publisher gave none');
        assert.ok(Number.isInteger(env.time) && env.time >= t0 - 1000 && env.time <= t1 + 1000, `time ${env.time}`);
      }
      assert.deepEqual(sseEnv, pollEnv, 'SSE format=json envelope equals the poll envelope');
      assert.deepEqual(wsFrames[0].json, pollEnv, 'WebSocket envelope equals the poll envelope');

      // Byte-identical envelopes: poll body element == WebSocket frame == other WebSocket frame
      assert.ok(!wsFrames[0].binary && !wsFrames[1].binary, 'envelopes are text frames');
      assert.ok(wsFrames[0].data.equals(wsFrames[1].data), 'both WebSocket subscribers get the same bytes');
      assert.ok(Buffer.from(pollRaw, 'utf8').equals(wsFrames[0].data),
        `poll envelope and WebSocket frame differ:\n poll: ${pollRaw.slice(0, 300)}\n ws:   ${wsFrames[0].text.slice(0, 300)}`);
    });
  }
});

// ---------------------------------------------------------------------------

describe('concurrent publishers', () => {
  test('4 publishers × 100 (POST, /publish batches, WebSocket ops): SSE, WebSocket and long-poll see all 400 once, in one order', async () => {
    const T = topicOf('concurrent');
    const N = 100;
    const TOTAL = 4 * N;
    const deadline = Date.now() + 120_000;

    const es = await openEventSource(`${h.url}/events?topic=${T}`);
    const ws = await openWS(h.url, `/ws?topic=${T}`);
    const wsPub3 = await openWS(h.url, '/ws');
    const wsPub4 = await openWS(h.url, '/ws');
    try {
      const start = await poll(`topic=${T}&timeout=0`);
      const polled = [];
      const pollerErrors = [];
      const poller = (async () => {
        let cursor = start.json.cursor;
        while (polled.length < TOTAL) {
          assert.ok(Date.now() < deadline, `long-poll got only ${polled.length} of ${TOTAL}`);
          const a = await poll(`topic=${T}&since=${cursor}&timeout=10&limit=37`);
          assert.equal(a.json.gap, false, `no gap expected: ${a.text.slice(0, 300)}`);
          assert.ok(a.json.messages.length <= 37, 'limit');
          polled.push(...a.json.messages);
          cursor = a.json.cursor;
        }
        // Nothing repeated, nothing more: the cursor of the last answer reads nothing.
        const rest = await poll(`topic=${T}&since=${cursor}&timeout=0`);
        assert.deepEqual(rest.json.messages, [], 'nothing after the last cursor');
      })().catch((err) => { pollerErrors.push(err); });
      await pollsWaiting(1);

      const data = (p, i) => `p${p}:${i}:é☃🎉`;
      // Publisher 1: POST /topics/T, one at a time.
      const p1 = async () => {
        const ids = [];
        for (let i = 0; i < N; i++) ids.push((await publishOk(h.url, T, data(1, i))).id);
        return ids;
      };
      // Publisher 2: POST /publish, batches of 10.
      const p2 = async () => {
        const ids = [];
        for (let i = 0; i < N; i += 10) {
          const items = Array.from({ length: 10 }, (_, k) => ({ topic: T, data: data(2, i + k) }));
          const res = await publishBatch(h.url, items);
          assert.equal(res.status, 201, res.text);
          assert.equal(res.json.messages.length, 10);
          ids.push(...res.json.messages.map((m) => m.id));
        }
        return ids;
      };
      // Publisher 3: WebSocket publish ops, all sent at once (pipelined), then the acks.
      const p3 = async () => {
        const sent = [];
        for (let i = 0; i < N; i++) sent.push(wsPub3.send({ op: 'publish', topic: T, data: data(3, i), ref: `p3-${i}` }));
        await Promise.all(sent);
        await wsPub3.waitFor(() => wsPub3.json.filter((j) => j.type === 'ack' || j.type === 'error').length >= N,
          { timeout: 60_000, what: `${N} publish acks` });
        const replies = wsPub3.json.filter((j) => j.type === 'ack' || j.type === 'error');
        assert.deepEqual(replies.filter((r) => r.type !== 'ack'), [], 'every publish op is acknowledged');
        assert.deepEqual(replies.map((r) => r.ref), Array.from({ length: N }, (_, i) => `p3-${i}`), 'acks in op order');
        return replies.map((r) => r.id);
      };
      // Publisher 4: alternates POST /topics/T and a WebSocket publish op, one at a time.
      const p4 = async () => {
        const ids = [];
        for (let i = 0; i < N; i++) {
          if (i % 2 === 0) ids.push((await publishOk(h.url, T, data(4, i))).id);
          else ids.push((await wsPub4.ok({ op: 'publish', topic: T, data: data(4, i) }, { timeout: 30_000 })).id);
        }
        return ids;
      };
      const perPublisher = await Promise.all([p1(), p2(), p3(), p4()]);

      // What was published
      const dataById = new Map();
      perPublisher.forEach((ids, p) => ids.forEach((id, i) => {
        assert.match(id ?? '', ID_RE, `publisher ${p + 1} message ${i} id`);
        assert.ok(!dataById.has(id), `id ${id} assigned twice`);
        dataById.set(id, data(p + 1, i));
      }));
      assert.equal(dataById.size, TOTAL);
      perPublisher.forEach((ids, p) => {
        for (let i = 1; i < ids.length; i++) {
          assert.ok(parseId(ids[i]).seq > parseId(ids[i - 1]).seq, `publisher ${p + 1}: ids increase in its publish order (${ids[i - 1]}, ${ids[i]})`);
        }
      });

      // What each transport received
      await until(() => es.got.message.length >= TOTAL, { timeout: 60_000, what: () => `${TOTAL} SSE messages (have ${es.got.message.length})` });
      await ws.waitEnvelopes(TOTAL, { timeout: 60_000 });
      await Promise.race([poller, until(() => pollerErrors.length > 0 || polled.length >= TOTAL, { timeout: 60_000, what: 'the long-poll loop' })]);
      await poller;
      if (pollerErrors.length) throw pollerErrors[0];

      const views = {
        sse: es.got.message.map((m) => ({ id: m.lastEventId, data: m.data })),
        websocket: ws.envelopes(T).map((e) => ({ id: e.id, data: e.data })),
        poll: polled.map((e) => ({ id: e.id, data: e.data })),
      };
      for (const [name, got] of Object.entries(views)) {
        assert.equal(got.length, TOTAL, `${name}: ${got.length} messages, expected ${TOTAL}`);
        assert.equal(new Set(got.map((m) => m.id)).size, TOTAL, `${name}: no duplicates`);
        for (const m of got) {
          assert.ok(dataById.has(m.id), `${name}: unknown id ${m.id}`);
          assert.equal(m.data, dataById.get(m.id), `${name}: data of ${m.id}`);
        }
        for (let i = 1; i < got.length; i++) {
          const a = parseId(got[i - 1].id);
          const b = parseId(got[i].id);
          assert.equal(a.epoch, b.epoch);
          assert.ok(b.seq > a.seq, `${name}: ids increase in delivery order (${got[i - 1].id} then ${got[i].id})`);
        }
        for (let p = 1; p <= 4; p++) {
          const mine = got.filter((m) => m.data.startsWith(`p${p}:`)).map((m) => m.data);
          assert.deepEqual(mine, Array.from({ length: N }, (_, i) => data(p, i)), `${name}: publisher ${p}'s messages in its publish order`);
        }
      }
      // The publishers really ran concurrently: their messages interleave.
      const owners = views.sse.map((m) => m.data.slice(0, 2));
      const switches = owners.filter((o, i) => i > 0 && o !== owners[i - 1]).length;
      assert.ok(switches > 3, `publishers interleave (${switches} switches between publishers)`);

      const order = views.sse.map((m) => m.id);
      assert.deepEqual(views.websocket.map((m) => m.id), order, 'WebSocket order == SSE order');
      assert.deepEqual(views.poll.map((m) => m.id), order, 'long-poll order == SSE order');
    } finally {
      es.close();
      ws.close();
      wsPub3.close();
      wsPub4.close();
    }
  });
});
