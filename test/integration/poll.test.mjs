// Long-polling and plain polling — GET /poll (docs/protocol.md, docs/api.md "Long-polling
// and plain polling"): immediate answers from history, waiting until a publish
// or the timeout, cursors that chain without loss or repetition (also under
// load and over one keep-alive connection), limit/more, gaps and epochs,
// several topics, errors, disconnects while waiting, pipelining, shutdown and
// CORS. Real clients: curl, fetch, node:http with a keep-alive Agent, raw
// sockets.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import {
  startHerald, publishOk, publishBatch, request, assertError, subscribe, openWS,
  RawConn, parseId, ID_RE, until, curl, sleep,
} from '../lib/harness.mjs';

const MAX_TOPICS = 4;
let h;

before(async () => {
  h = await startHerald({ config: { limits: { max_topics_per_subscription: MAX_TOPICS } } });
});
after(async () => { await h?.stop(); });

// ---------------------------------------------------------------------------
// Helpers

const seqOf = (id) => parseId(id).seq;
const bySeq = (a, b) => (seqOf(a) < seqOf(b) ? -1 : seqOf(a) > seqOf(b) ? 1 : 0);

/** Asserts the documented body shape of a 200 /poll answer; returns the body. */
function assertPollBody(body, text = JSON.stringify(body)) {
  assert.equal(typeof body, 'object', `poll body is JSON: ${text}`);
  assert.ok(Array.isArray(body.messages), `messages is an array: ${text}`);
  assert.match(body.cursor ?? '', ID_RE, `cursor is an id: ${text}`);
  assert.equal(typeof body.gap, 'boolean', `gap is a boolean: ${text}`);
  assert.equal(typeof body.more, 'boolean', `more is a boolean: ${text}`);
  if (body.gap) {
    assert.ok(Array.isArray(body.gaps) && body.gaps.length > 0, `gap:true comes with gaps: ${text}`);
    for (const g of body.gaps) {
      assert.deepEqual(Object.keys(g).sort(), ['from', 'to', 'topic'], `gap detail: ${text}`);
    }
  } else {
    assert.ok(!('gaps' in body), `no gaps without a gap: ${text}`);
  }
  for (const m of body.messages) assertEnvelope(m);
  return body;
}

/** An envelope: type, topic, id, event (only when given), data, time. */
function assertEnvelope(m) {
  const keys = Object.keys(m).sort();
  const expected = 'event' in m ? ['data', 'event', 'id', 'time', 'topic', 'type'] : ['data', 'id', 'time', 'topic', 'type'];
  assert.deepEqual(keys, expected, `envelope keys: ${JSON.stringify(m)}`);
  assert.equal(m.type, 'message');
  assert.equal(typeof m.topic, 'string');
  assert.match(m.id, ID_RE);
  assert.equal(typeof m.data, 'string');
  assert.ok(Number.isInteger(m.time), `time is integer milliseconds: ${JSON.stringify(m)}`);
  if ('event' in m) assert.equal(typeof m.event, 'string');
}

/** GET /poll with fetch; resolves {status, headers, text, json, elapsed}. */
async function poll(base, query, { headers = {}, timeout = 20_000 } = {}) {
  const t0 = performance.now();
  let res;
  try {
    res = await request(`${base}/poll?${query}`, { headers, timeout });
  } catch (err) {
    throw new Error(`GET /poll?${query}: no answer (${err.message}) after ${Math.round(performance.now() - t0)} ms`);
  }
  res.elapsed = performance.now() - t0;
  return res;
}

/** poll() that asserts 200 and the body shape; resolves the body with .elapsed and .res. */
async function pollOk(base, query, options) {
  const res = await poll(base, query, options);
  assert.equal(res.status, 200, `GET /poll?${query}: expected 200, got ${res.status} ${res.text}`);
  const body = assertPollBody(res.json, res.text);
  Object.defineProperty(body, 'elapsed', { value: res.elapsed });
  Object.defineProperty(body, 'res', { value: res });
  return body;
}

/** The newest id of the hub right now: a plain poll (timeout=0) without since. */
async function hubCursor(base, topic = 'cursor-probe') {
  const body = await pollOk(base, `topic=${topic}&timeout=0`);
  assert.deepEqual(body.messages, []);
  return body.cursor;
}

/** GET /topics/{topic}; resolves {status, json}. */
function topicInfo(base, topic) {
  return request(`${base}/topics/${topic}`);
}

/** Waits until `n` clients are subscribed to topic (only pollers use these topics). */
async function waitSubscribers(base, topic, n, { timeout = 5000 } = {}) {
  let last;
  await until(async () => {
    last = await topicInfo(base, topic);
    if (n === 0 && last.status === 404) return true;
    return last.status === 200 && last.json?.subscribers === n;
  }, { timeout, interval: 20, what: () => `${n} subscriber(s) on ${topic}; last: ${last?.status} ${last?.text}` });
  return last;
}

/** Publishes items via /publish; asserts 201; resolves the ids in request order. */
async function batchIds(base, items) {
  const res = await publishBatch(base, items);
  assert.equal(res.status, 201, `POST /publish: ${res.status} ${res.text}`);
  return res.json.messages.map((m) => m.id);
}

/** GET over node:http with the given agent; resolves {status, headers, text, json, socket}. */
function httpGet(agent, base, pathAndQuery, { timeout = 20_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(new URL(pathAndQuery, base), { agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json, socket: req.socket });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(timeout, () => req.destroy(new Error(`GET ${pathAndQuery}: no answer within ${timeout} ms`)));
  });
}

/** Splits a raw HTTP response (curl -i) into {status, headers, body}. */
function parseCurlI(out) {
  const end = out.indexOf('\r\n\r\n');
  const [statusLine, ...lines] = out.slice(0, end).split('\r\n');
  const headers = {};
  for (const l of lines) {
    const c = l.indexOf(':');
    headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body: out.slice(end + 4) };
}

/** A different epoch than the one of `id` (8 lowercase hex digits). */
function otherEpoch(id) {
  const { epoch } = parseId(id);
  return ((parseInt(epoch, 16) ^ 0x5a5a5a5a) >>> 0).toString(16).padStart(8, '0');
}

// ---------------------------------------------------------------------------

describe('immediate answers from history', () => {
  test('messages after since: at once, documented body, envelopes, headers (curl)', { timeout: 30_000 }, async () => {
    const m0 = await publishOk(h.url, 'imm', 'before');
    const before = Date.now();
    const m1 = await publishOk(h.url, 'imm', 'first', { event: 'created' });
    const m2 = await publishOk(h.url, 'imm', 'second 😀 "q" \\ \n');
    const afterPub = Date.now();

    const t0 = performance.now();
    const r = await curl(['-i', `${h.url}/poll?topic=imm&since=${m0.id}&timeout=30`]);
    const elapsed = performance.now() - t0;
    assert.equal(r.code, 0, r.stderr);
    assert.ok(elapsed < 2000, `answered at once, took ${elapsed} ms`);
    const res = parseCurlI(r.stdout);
    assert.equal(res.status, 200, r.stdout);
    assert.match(res.headers['content-type'] ?? '', /^application\/json/);
    assert.match(res.headers['cache-control'] ?? '', /no-cache/);
    const body = assertPollBody(JSON.parse(res.body), res.body);
    assert.deepEqual(Object.keys(body).sort(), ['cursor', 'gap', 'messages', 'more']);
    assert.equal(body.gap, false);
    assert.equal(body.more, false);
    assert.equal(body.cursor, m2.id, 'cursor: the newest id of the hub');
    assert.equal(body.messages.length, 2, res.body);
    const [e1, e2] = body.messages;
    assert.deepEqual({ ...e1, time: 0 }, { type: 'message', topic: 'imm', id: m1.id, event: 'created', data: 'first', time: 0 });
    assert.deepEqual({ ...e2, time: 0 }, { type: 'message', topic: 'imm', id: m2.id, data: 'second 😀 "q" \\ \n', time: 0 });
    assert.ok(!('event' in e2), 'event is omitted when the publisher gave none');
    for (const e of [e1, e2]) {
      assert.ok(e.time >= before - 1000 && e.time <= afterPub + 1000, `time ${e.time} is the publish time (${before}..${afterPub})`);
    }
    assert.ok(e1.time <= e2.time);

    // The same with fetch; and since = the newest id, timeout=0: nothing.
    const again = await pollOk(h.url, `topic=imm&since=${m0.id}`);
    assert.deepEqual(again.messages.map((m) => m.id), [m1.id, m2.id]);
    assert.match(again.res.headers.get('content-type') ?? '', /^application\/json/);
    assert.match(again.res.headers.get('cache-control') ?? '', /no-cache/);
    const none = await pollOk(h.url, `topic=imm&since=${body.cursor}&timeout=0`);
    assert.deepEqual(none.messages, []);
    assert.equal(none.cursor, m2.id);
  });

  test('envelopes are byte-identical to the WebSocket ones', { timeout: 30_000 }, async () => {
    const ws = await openWS(h.url, '/ws?topic=bytes');
    try {
      const since = await hubCursor(h.url);
      await publishOk(h.url, 'bytes', 'plain');
      await publishOk(h.url, 'bytes', 'ünïcödé 日本 😀 "quoted" \\ </script>\t\r\n', { event: 'ev.x:1' });
      await publishOk(h.url, 'bytes', '');
      await ws.waitEnvelopes(3);
      const res = await poll(h.url, `topic=bytes&since=${since}`);
      assert.equal(res.status, 200, res.text);
      const texts = ws.messages.filter((m) => m.json?.type === 'message').map((m) => m.text);
      assert.equal(texts.length, 3);
      for (const t of texts) assert.ok(res.text.includes(t), `poll body ${res.text} should contain the WebSocket envelope ${t}`);
      assert.ok(res.text.includes(`"messages":[${texts.join(',')}]`), `the envelopes, in order: ${res.text}`);
    } finally {
      ws.close();
    }
  });
});

describe('waiting', () => {
  test('a poll with nothing newer waits; a publish wakes it well under a second', { timeout: 30_000 }, async () => {
    const m0 = await publishOk(h.url, 'wait', 'old');
    const pending = pollOk(h.url, `topic=wait&since=${m0.id}&timeout=30`);
    await waitSubscribers(h.url, 'wait', 1);
    const t0 = performance.now();
    const m1 = await publishOk(h.url, 'wait', 'wake up', { event: 'ding' });
    const body = await pending;
    const took = performance.now() - t0;
    assert.ok(took < 1000, `answered ${took} ms after the publish`);
    assert.equal(m1.subscribers, 1, 'the waiting poll counted as a subscriber');
    assert.deepEqual(body.messages.map((m) => [m.id, m.event, m.data]), [[m1.id, 'ding', 'wake up']]);
    assert.equal(body.cursor, m1.id);
    assert.equal(body.gap, false);
    assert.equal(body.more, false);
    await waitSubscribers(h.url, 'wait', 0);
  });

  test('several messages published in one /publish batch arrive in one answer', { timeout: 30_000 }, async () => {
    const since = await hubCursor(h.url);
    const pending = pollOk(h.url, `topic=wb&since=${since}&timeout=30`);
    await waitSubscribers(h.url, 'wb', 1);
    const ids = await batchIds(h.url, [
      { topic: 'wb', data: 'b1' },
      { topic: 'wb-other', data: 'o1' },
      { topic: 'wb', data: 'b2', event: 'e2' },
      { topic: 'wb', data: 'b3' },
      { topic: 'wb-other', data: 'o2' },
    ]);
    const body = await pending;
    assert.deepEqual(body.messages.map((m) => [m.id, m.data]), [[ids[0], 'b1'], [ids[2], 'b2'], [ids[3], 'b3']]);
    assert.equal(body.messages[1].event, 'e2');
    assert.equal(body.more, false);
    assert.ok(seqOf(body.cursor) >= seqOf(ids[3]) && seqOf(body.cursor) <= seqOf(ids[4]),
      `cursor ${body.cursor} between the last message of the topic (${ids[3]}) and the newest of the hub (${ids[4]})`);
    const next = await pollOk(h.url, `topic=wb&since=${body.cursor}&timeout=0`);
    assert.deepEqual(next.messages, [], 'nothing repeated after the cursor');
  });

  test('a publish to another topic does not answer the poll', { timeout: 30_000 }, async () => {
    const since = await hubCursor(h.url);
    let done = false;
    const pending = pollOk(h.url, `topic=wo-mine&since=${since}&timeout=30`).finally(() => { done = true; });
    await waitSubscribers(h.url, 'wo-mine', 1);
    await publishOk(h.url, 'wo-theirs', 'not for you');
    await sleep(300); // proving a negative
    assert.equal(done, false, 'the poll still waits');
    const mine = await publishOk(h.url, 'wo-mine', 'for you');
    const body = await pending;
    assert.deepEqual(body.messages.map((m) => m.id), [mine.id]);
  });
});

describe('timeout', () => {
  test('timeout=1 with nothing published: 200, messages [] after about 1 s, a cursor', { timeout: 30_000 }, async () => {
    const c = await hubCursor(h.url);
    for (const q of ['topic=to-1&timeout=1', `topic=to-1&timeout=1&since=${c}`]) {
      const body = await pollOk(h.url, q);
      assert.ok(body.elapsed >= 900 && body.elapsed < 3000, `${q}: answered after ${body.elapsed} ms`);
      assert.deepEqual(body.messages, []);
      assert.equal(body.gap, false);
      assert.equal(body.more, false);
      assert.equal(body.cursor, c, 'the newest id of the hub');
    }
    await waitSubscribers(h.url, 'to-1', 0);
  });

  test('timeout=0 answers at once, even with nothing', { timeout: 30_000 }, async () => {
    const c = await hubCursor(h.url);
    for (const q of ['topic=to-0&timeout=0', `topic=to-0&timeout=0&since=${c}`, 'topic=to-0&topic=to-0b&timeout=0']) {
      const body = await pollOk(h.url, q);
      assert.ok(body.elapsed < 1000, `${q}: answered after ${body.elapsed} ms`);
      assert.deepEqual(body.messages, []);
      assert.equal(body.cursor, c);
    }
  });

  test('a timeout above limits.poll_timeout_max_s is clamped, not refused (also the default 30)', { timeout: 30_000 }, async () => {
    const hc = await startHerald({ config: { limits: { poll_timeout_max_s: 1 } } });
    try {
      for (const q of ['topic=clamp&timeout=100', 'topic=clamp&timeout=3600', 'topic=clamp']) {
        const body = await pollOk(hc.url, q);
        assert.ok(body.elapsed >= 900 && body.elapsed < 3000, `${q}: answered after ${body.elapsed} ms`);
        assert.deepEqual(body.messages, []);
      }
    } finally {
      await hc.stop();
    }
  });
});

describe('without since', () => {
  test('only messages published after the request arrived', { timeout: 30_000 }, async () => {
    const m1 = await publishOk(h.url, 'ns', 'published before');
    const plain = await pollOk(h.url, 'topic=ns&timeout=0');
    assert.deepEqual(plain.messages, [], 'history is not read without since');
    assert.equal(plain.cursor, m1.id);

    const pending = pollOk(h.url, 'topic=ns&timeout=30');
    await waitSubscribers(h.url, 'ns', 1);
    const m2 = await publishOk(h.url, 'ns', 'published after');
    const body = await pending;
    assert.deepEqual(body.messages.map((m) => [m.id, m.data]), [[m2.id, 'published after']]);
    assert.equal(body.cursor, m2.id);

    // The cursor of the plain poll chains too: exactly m2.
    const chained = await pollOk(h.url, `topic=ns&since=${plain.cursor}&timeout=0`);
    assert.deepEqual(chained.messages.map((m) => m.id), [m2.id]);
  });
});

describe('limit and more', () => {
  test('limit=2 over 5 messages: pages of 2, 2, 1; more and cursor as documented', { timeout: 30_000 }, async () => {
    const c0 = await hubCursor(h.url);
    const ids = [];
    for (let i = 1; i <= 5; i++) ids.push((await publishOk(h.url, 'lim', `l${i}`)).id);

    const p1 = await pollOk(h.url, `topic=lim&since=${c0}&limit=2&timeout=0`);
    assert.deepEqual(p1.messages.map((m) => m.id), ids.slice(0, 2));
    assert.equal(p1.more, true);
    assert.equal(p1.cursor, ids[1], 'with more, the cursor is the id of the last message in the answer');

    const p2 = await pollOk(h.url, `topic=lim&since=${p1.cursor}&limit=2&timeout=0`);
    assert.deepEqual(p2.messages.map((m) => m.id), ids.slice(2, 4));
    assert.equal(p2.more, true);
    assert.equal(p2.cursor, ids[3]);

    const p3 = await pollOk(h.url, `topic=lim&since=${p2.cursor}&limit=2&timeout=0`);
    assert.deepEqual(p3.messages.map((m) => m.id), ids.slice(4));
    assert.equal(p3.more, false);
    assert.equal(p3.cursor, ids[4]);
    assert.deepEqual([...p1.messages, ...p2.messages, ...p3.messages].map((m) => m.data), ['l1', 'l2', 'l3', 'l4', 'l5']);

    const p4 = await pollOk(h.url, `topic=lim&since=${p3.cursor}&limit=2&timeout=0`);
    assert.deepEqual(p4.messages, []);
    assert.equal(p4.more, false);

    // limit=1 and limit=1000 are valid; limit is honoured with a waiting poll too.
    const one = await pollOk(h.url, `topic=lim&since=${c0}&limit=1&timeout=30`);
    assert.deepEqual(one.messages.map((m) => m.id), [ids[0]]);
    assert.equal(one.more, true);
    const all = await pollOk(h.url, `topic=lim&since=${c0}&limit=1000&timeout=0`);
    assert.deepEqual(all.messages.map((m) => m.id), ids);
    assert.equal(all.more, false);
  });

  test('the default limit is 100', { timeout: 30_000 }, async () => {
    const c0 = await hubCursor(h.url);
    const ids = await batchIds(h.url, Array.from({ length: 150 }, (_, i) => ({ topic: 'lim-def', data: `d${i}` })));
    const p1 = await pollOk(h.url, `topic=lim-def&since=${c0}&timeout=0`);
    assert.equal(p1.messages.length, 100);
    assert.equal(p1.more, true);
    assert.equal(p1.cursor, ids[99]);
    const p2 = await pollOk(h.url, `topic=lim-def&since=${p1.cursor}&timeout=0`);
    assert.deepEqual([...p1.messages, ...p2.messages].map((m) => m.id), ids);
    assert.equal(p2.more, false);
  });

  test('answer size is capped at max_outbound_bytes of envelopes, but at least one message', { timeout: 30_000 }, async () => {
    const hs = await startHerald({ config: { limits: { max_outbound_bytes: 1024 } } });
    try {
      const c0 = await hubCursor(hs.url);
      const small = 'a'.repeat(300);
      const ids = await batchIds(hs.url, Array.from({ length: 6 }, () => ({ topic: 'cap', data: small })));
      const got = [];
      let cursor = c0;
      for (let i = 0; i < 10 && got.length < 6; i++) {
        const body = await pollOk(hs.url, `topic=cap&since=${cursor}&timeout=0`);
        assert.ok(body.messages.length >= 1, 'at least one message');
        const bytes = body.messages.reduce((n, m) => n + Buffer.byteLength(JSON.stringify(m)), 0);
        if (body.messages.length > 1) assert.ok(bytes <= 1024, `${body.messages.length} envelopes of ${bytes} bytes > 1024`);
        got.push(...body.messages.map((m) => m.id));
        if (got.length < 6) {
          assert.equal(body.more, true, 'more while the size cut the answer short');
          assert.equal(body.cursor, body.messages.at(-1).id);
        } else {
          assert.equal(body.more, false);
        }
        cursor = body.cursor;
      }
      assert.deepEqual(got, ids, 'every message once, in order');
      assert.ok(got.length === 6);

      // One message larger than the cap comes alone.
      const c1 = cursor;
      const [bigId, smallId] = await batchIds(hs.url, [{ topic: 'cap', data: 'b'.repeat(3000) }, { topic: 'cap', data: 'after' }]);
      const b1 = await pollOk(hs.url, `topic=cap&since=${c1}&timeout=0`);
      assert.deepEqual(b1.messages.map((m) => m.id), [bigId]);
      assert.equal(b1.messages[0].data.length, 3000);
      assert.equal(b1.more, true);
      assert.equal(b1.cursor, bigId);
      const b2 = await pollOk(hs.url, `topic=cap&since=${b1.cursor}&timeout=0`);
      assert.deepEqual(b2.messages.map((m) => [m.id, m.data]), [[smallId, 'after']]);
      assert.equal(b2.more, false);
    } finally {
      await hs.stop();
    }
  });
});

describe('cursor chaining under load', () => {
  /**
   * Publishes 500 messages to topic (45 batches of 10 mixed with noise on
   * another topic, and 50 single POSTs), in bursts with small random sleeps,
   * while `pollOnce(since)` chains cursors. Asserts every message exactly once
   * in publish order.
   */
  async function chainUnderLoad(topic, pollOnce) {
    const c0 = await hubCursor(h.url);
    const published = new Map(); // id -> data
    const publisher = (async () => {
      let n = 0;
      for (let burst = 0; burst < 50; burst++) {
        if (burst % 10 === 9) {
          // Ten single POSTs, five at a time.
          for (let k = 0; k < 10; k += 5) {
            const rs = await Promise.all(Array.from({ length: 5 }, (_, j) => {
              const data = `s${n + k + j}`;
              return publishOk(h.url, topic, data).then((r) => [r.id, data]);
            }));
            for (const [id, data] of rs) published.set(id, data);
          }
        } else {
          const items = [];
          for (let k = 0; k < 10; k++) {
            items.push({ topic, data: `b${n + k}` });
            if (k % 4 === 0) items.push({ topic: `${topic}-noise`, data: 'noise' });
          }
          const ids = await batchIds(h.url, items);
          items.forEach((it, i) => { if (it.topic === topic) published.set(ids[i], it.data); });
        }
        n += 10;
        await sleep(Math.floor(Math.random() * 15));
      }
      assert.equal(published.size, 500);
    })();

    let publisherFailed = false;
    publisher.catch(() => { publisherFailed = true; });
    const got = [];
    let cursor = c0;
    let polls = 0;
    const deadline = Date.now() + 90_000;
    const poller = (async () => {
      while (got.length < 500 && !publisherFailed) {
        assert.ok(Date.now() < deadline, `poller got only ${got.length} of 500 in time`);
        const res = await pollOnce(cursor);
        assert.equal(res.status, 200, res.text);
        const body = assertPollBody(res.json, res.text);
        assert.equal(body.gap, false, res.text);
        for (const m of body.messages) assert.equal(m.topic, topic);
        got.push(...body.messages);
        if (body.more) assert.equal(body.cursor, body.messages.at(-1)?.id);
        cursor = body.cursor;
        polls += 1;
      }
    })();
    await Promise.all([publisher, poller]);

    const expected = [...published.keys()].sort(bySeq);
    const ids = got.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length, 'no duplicates');
    assert.deepEqual(ids, expected, 'exactly all 500, in publish order');
    assert.deepEqual(got.map((m) => m.data), expected.map((id) => published.get(id)));
    // Nothing after the last cursor.
    const tail = await pollOk(h.url, `topic=${topic}&since=${cursor}&timeout=0`);
    assert.deepEqual(tail.messages, []);
    return { polls };
  }

  test('fetch: a poller chaining since=cursor gets all 500, in order, once', { timeout: 120_000 }, async () => {
    const { polls } = await chainUnderLoad('load-f', (since) => poll(h.url, `topic=load-f&since=${since}&timeout=5`));
    assert.ok(polls >= 2);
  });

  test('node:http keep-alive Agent: the same, all on one reused connection', { timeout: 120_000 }, async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const socks = new Set();
    try {
      const { polls } = await chainUnderLoad('load-ka', async (since) => {
        const res = await httpGet(agent, h.url, `/poll?topic=load-ka&since=${since}&timeout=5`);
        socks.add(res.socket);
        assert.doesNotMatch(res.headers.connection ?? '', /close/i, 'keep-alive is kept after a poll answer');
        return res;
      });
      assert.ok(polls >= 2);
      assert.equal(socks.size, 1, `${polls} polls over ${socks.size} connections`);
    } finally {
      agent.destroy();
    }
  });
});

describe('gaps and epochs', () => {
  test('a cursor older than history: gap true, gaps [{topic, from, to}], the held messages', { timeout: 30_000 }, async () => {
    const hg = await startHerald({ config: { history: { max_messages: 3 } } });
    try {
      const ids = [];
      for (let i = 1; i <= 10; i++) ids.push((await publishOk(hg.url, 'gap-t', `g${i}`)).id);
      const epoch = parseId(ids[0]).epoch;

      const body = await pollOk(hg.url, `topic=gap-t&since=${ids[0]}&timeout=30`);
      assert.ok(body.elapsed < 2000, `answered at once, took ${body.elapsed} ms`);
      assert.equal(body.gap, true);
      assert.deepEqual(body.gaps, [{ topic: 'gap-t', from: ids[0], to: ids[6] }]);
      assert.deepEqual(body.messages.map((m) => [m.id, m.data]), [[ids[7], 'g8'], [ids[8], 'g9'], [ids[9], 'g10']]);
      assert.equal(body.more, false);
      assert.equal(body.cursor, ids[9]);

      // A cursor history still covers: no gap; the next cursor: nothing, no gap.
      const ok = await pollOk(hg.url, `topic=gap-t&since=${ids[6]}&timeout=0`);
      assert.equal(ok.gap, false);
      assert.deepEqual(ok.messages.map((m) => m.id), ids.slice(7));
      const next = await pollOk(hg.url, `topic=gap-t&since=${body.cursor}&timeout=0`);
      assert.equal(next.gap, false);
      assert.deepEqual(next.messages, []);

      // A cursor of another epoch: everything held, a gap for each topic, at once.
      const foreign = `${otherEpoch(ids[0])}-5`;
      assert.notEqual(parseId(foreign).epoch, epoch);
      const fe = await pollOk(hg.url, `topic=gap-t&topic=gap-empty&since=${foreign}&timeout=30`);
      assert.ok(fe.elapsed < 2000, `answered at once, took ${fe.elapsed} ms`);
      assert.equal(fe.gap, true);
      assert.deepEqual([...fe.gaps].sort((a, b) => a.topic.localeCompare(b.topic)), [
        { topic: 'gap-empty', from: foreign, to: `${epoch}-0` },
        { topic: 'gap-t', from: foreign, to: ids[6] },
      ]);
      assert.deepEqual(fe.messages.map((m) => m.id), ids.slice(7));
      assert.equal(fe.cursor, ids[9]);

      // Only a topic with nothing held: still answered at once with the gap.
      const feEmpty = await pollOk(hg.url, `topic=gap-none&since=${foreign}&timeout=30`);
      assert.ok(feEmpty.elapsed < 2000, `answered at once, took ${feEmpty.elapsed} ms`);
      assert.equal(feEmpty.gap, true);
      assert.deepEqual(feEmpty.gaps, [{ topic: 'gap-none', from: foreign, to: `${epoch}-0` }]);
      assert.deepEqual(feEmpty.messages, []);
    } finally {
      await hg.stop();
    }
  });
});

describe('several topics', () => {
  test('topic=A&topic=B: messages of both in publish order, nothing else', { timeout: 30_000 }, async () => {
    const c0 = await hubCursor(h.url);
    const ids = [];
    ids.push((await publishOk(h.url, 'mt-a', 'a1')).id);
    ids.push((await publishOk(h.url, 'mt-b', 'b1')).id);
    await publishOk(h.url, 'mt-c', 'c1');
    ids.push((await publishOk(h.url, 'mt-a', 'a2')).id);
    ids.push((await publishOk(h.url, 'mt-b', 'b2', { event: 'x' })).id);
    const body = await pollOk(h.url, `topic=mt-a&topic=mt-b&since=${c0}&timeout=0`);
    assert.deepEqual(body.messages.map((m) => [m.topic, m.data]), [['mt-a', 'a1'], ['mt-b', 'b1'], ['mt-a', 'a2'], ['mt-b', 'b2']]);
    assert.deepEqual(body.messages.map((m) => m.id), ids);

    // Waiting on both: a batch over both topics arrives in one answer, in order.
    const pending = pollOk(h.url, `topic=mt-a&topic=mt-b&since=${body.cursor}&timeout=30`);
    await waitSubscribers(h.url, 'mt-b', 1);
    const bids = await batchIds(h.url, [
      { topic: 'mt-b', data: 'b3' }, { topic: 'mt-c', data: 'c2' }, { topic: 'mt-a', data: 'a3' }, { topic: 'mt-b', data: 'b4' },
    ]);
    const waited = await pending;
    assert.deepEqual(waited.messages.map((m) => [m.id, m.data]), [[bids[0], 'b3'], [bids[2], 'a3'], [bids[3], 'b4']]);
  });
});

describe('bad input', () => {
  test('each bad request gets its status and error code; a bystander is unharmed', { timeout: 60_000 }, async () => {
    const bystander = await subscribe(h.url, '/events?topic=bystander');
    const since = await hubCursor(h.url);
    const waiting = pollOk(h.url, `topic=bystander-poll&since=${since}&timeout=30`);
    try {
      await waitSubscribers(h.url, 'bystander-poll', 1);
      const cases = [
        ['', 400, 'missing_topic'],
        ['timeout=0', 400, 'missing_topic'],
        [`since=${since}`, 400, 'missing_topic'],
        ['topic=bad%20topic', 400, 'invalid_topic'],
        ['topic=ok&topic=bad%20topic', 400, 'invalid_topic'],
        ['topic=', 400, 'invalid_topic'],
        ['topic=a%22b', 400, 'invalid_topic'],
        [`topic=${'t'.repeat(201)}`, 400, 'invalid_topic'],
        ['topic=x&since=garbage', 400, 'invalid_cursor'],
        ['topic=x&since=12', 400, 'invalid_cursor'],
        ['topic=x&since=0000000g-1', 400, 'invalid_cursor'],
        ['topic=x&since=ABCDEF01-1', 400, 'invalid_cursor'],
        ['topic=x&since=00000000-', 400, 'invalid_cursor'],
        ['topic=x&since=0123abcd-1x', 400, 'invalid_cursor'],
        ['topic=x&timeout=-1', 400, 'invalid_parameter'],
        ['topic=x&timeout=abc', 400, 'invalid_parameter'],
        ['topic=x&timeout=1.5', 400, 'invalid_parameter'],
        ['topic=x&timeout=1e2', 400, 'invalid_parameter'],
        ['topic=x&timeout=0x10', 400, 'invalid_parameter'],
        ['topic=x&limit=0', 400, 'invalid_parameter'],
        ['topic=x&limit=1001', 400, 'invalid_parameter'],
        ['topic=x&limit=x', 400, 'invalid_parameter'],
        ['topic=x&limit=-1', 400, 'invalid_parameter'],
        ['topic=x&limit=2.5', 400, 'invalid_parameter'],
        [Array.from({ length: MAX_TOPICS + 1 }, (_, i) => `topic=tm${i}`).join('&'), 400, 'too_many_topics'],
      ];
      for (const [q, status, code] of cases) {
        const res = await poll(h.url, q, { timeout: 5000 });
        try {
          assertError(res, status, code);
        } catch (err) {
          err.message = `GET /poll?${q}: ${err.message}`;
          throw err;
        }
        assert.ok(res.elapsed < 2000, `GET /poll?${q}: refused at once, took ${res.elapsed} ms`);
      }
      // Exactly max_topics_per_subscription is fine.
      await pollOk(h.url, `${Array.from({ length: MAX_TOPICS }, (_, i) => `topic=tm${i}`).join('&')}&timeout=0`);

      for (const method of ['POST', 'PUT', 'DELETE']) {
        const res = await request(`${h.url}/poll?topic=x`, { method, body: 'x', headers: { 'Content-Type': 'text/plain' } });
        assertError(res, 405, 'method_not_allowed');
        const allow = res.headers.get('allow') ?? '';
        assert.ok(allow.split(/,\s*/).includes('GET'), `${method} /poll: Allow "${allow}" should include GET`);
        assert.ok(!allow.split(/,\s*/).includes(method), `${method} /poll: Allow "${allow}" should not include ${method}`);
      }

      // The bystanders: the SSE stream and the waiting poll both get the next message.
      const m = await publishOk(h.url, 'bystander', 'still here');
      const [ev] = await bystander.waitEvents(1);
      assert.equal(ev.id, m.id);
      const p = await publishOk(h.url, 'bystander-poll', 'still waiting');
      const body = await waiting;
      assert.deepEqual(body.messages.map((x) => x.id), [p.id]);
    } finally {
      bystander.close();
    }
  });
});

describe('disconnects', () => {
  test('a raw-socket client that disconnects while waiting is unsubscribed at once', { timeout: 30_000 }, async () => {
    await publishOk(h.url, 'dc-raw', 'history keeps the topic alive');
    const conn = await RawConn.connect(h.host, h.port);
    await conn.write('GET /poll?topic=dc-raw&timeout=60 HTTP/1.1\r\nHost: t\r\n\r\n');
    const info = await waitSubscribers(h.url, 'dc-raw', 1);
    assert.equal(info.json.subscribers_by_transport?.poll, 1, `subscribers_by_transport.poll: ${info.text}`);
    assert.equal(conn.buf.length, 0, 'still waiting');
    conn.destroy();
    const gone = await waitSubscribers(h.url, 'dc-raw', 0, { timeout: 3000 });
    assert.equal(gone.status, 200, gone.text);
    assert.equal(gone.json.subscribers_by_transport?.poll, 0, gone.text);
    const res = await publishOk(h.url, 'dc-raw', 'nobody listens');
    assert.equal(res.subscribers, 0);
    assert.equal((await request(`${h.url}/healthz`)).status, 200);
  });

  test('a fetch aborted while waiting is unsubscribed at once', { timeout: 30_000 }, async () => {
    await publishOk(h.url, 'dc-abort', 'history keeps the topic alive');
    const ac = new AbortController();
    const pending = fetch(`${h.url}/poll?topic=dc-abort&topic=dc-abort2&timeout=60`, { signal: ac.signal });
    pending.catch(() => {});
    await waitSubscribers(h.url, 'dc-abort', 1);
    ac.abort();
    await assert.rejects(pending);
    await waitSubscribers(h.url, 'dc-abort', 0, { timeout: 3000 });
    await waitSubscribers(h.url, 'dc-abort2', 0, { timeout: 3000 });
    const res = await publishOk(h.url, 'dc-abort', 'nobody listens');
    assert.equal(res.subscribers, 0);
    // And polling still works.
    const pend2 = pollOk(h.url, 'topic=dc-abort&timeout=30');
    await waitSubscribers(h.url, 'dc-abort', 1);
    const m = await publishOk(h.url, 'dc-abort', 'someone listens');
    assert.equal(m.subscribers, 1);
    assert.deepEqual((await pend2).messages.map((x) => x.id), [m.id]);
  });
});

describe('disconnect races', () => {
  // A client that goes away in the same loop turn as its poll times out (or
  // as a publish wakes it) must be ended once: herald keeps serving, and
  // h.stop() checks it exits 0 with no sanitizer report.
  test('pollers that reset just as their timeout fires or a publish wakes them', { timeout: 60_000 }, async () => {
    const topic = 'race-dc';
    await publishOk(h.url, topic, 'history keeps the topic alive');
    for (let round = 0; round < 3; round++) {
      const conns = await Promise.all(Array.from({ length: 60 }, () => RawConn.connect(h.host, h.port)));
      await Promise.all(conns.map((c) => c.write(`GET /poll?topic=${topic}&timeout=1 HTTP/1.1\r\nHost: t\r\n\r\n`)));
      await waitSubscribers(h.url, topic, 60);
      const started = performance.now();
      conns.forEach((c, i) => setTimeout(() => c.destroy(), 900 + (i % 20) * 10));
      if (round === 1) setTimeout(() => publishOk(h.url, topic, 'wake').catch(() => {}), 980);
      await sleep(Math.max(0, 1300 - (performance.now() - started)));
      await waitSubscribers(h.url, topic, 0, { timeout: 5000 });
      assert.equal((await request(`${h.url}/healthz`)).status, 200);
    }
  });
});

describe('keep-alive and pipelining', () => {
  test('two pipelined polls, the first waiting (timeout=1): both answered, in order; the connection stays', { timeout: 30_000 }, async () => {
    const m = await publishOk(h.url, 'pl-b', 'held');
    const c0 = `${parseId(m.id).epoch}-${seqOf(m.id) - 1n}`;
    const conn = await RawConn.connect(h.host, h.port);
    try {
      const t0 = performance.now();
      await conn.write('GET /poll?topic=pl-a&timeout=1 HTTP/1.1\r\nHost: t\r\n\r\n'
        + `GET /poll?topic=pl-b&since=${c0}&timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n`);
      const [r1, r2] = await conn.waitResponses(2, { timeout: 5000 });
      const took = performance.now() - t0;
      assert.ok(took >= 900, `the second answer came after the first (waited 1 s), took ${took} ms`);
      for (const r of [r1, r2]) {
        assert.equal(r.status, 200, r.text);
        assertPollBody(r.json, r.text);
        assert.doesNotMatch(r.headers.connection ?? '', /close/i);
      }
      assert.deepEqual(r1.json.messages, [], 'the first is the waiting poll');
      assert.deepEqual(r2.json.messages.map((x) => x.id), [m.id], 'the second is the plain poll');
      // The same connection serves a third request.
      await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      const all = await conn.waitResponses(3);
      assert.equal(all[2].status, 200);
      assert.match(all[2].text, /^ok\n?$/);
      assert.equal(conn.closed, false);
    } finally {
      conn.destroy();
    }
  });

  test('a request pipelined behind a waiting poll is answered after it, when a publish wakes it', { timeout: 30_000 }, async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write('GET /poll?topic=pl-w&timeout=30 HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      await waitSubscribers(h.url, 'pl-w', 1);
      assert.equal(conn.buf.length, 0, `nothing answered before the poll: ${conn.text}`);
      const m = await publishOk(h.url, 'pl-w', 'wake');
      const [r1, r2] = await conn.waitResponses(2);
      assert.equal(r1.status, 200, r1.text);
      assert.deepEqual(r1.json.messages.map((x) => x.id), [m.id]);
      assert.equal(r2.status, 200);
      assert.match(r2.text, /^ok\n?$/);
      // And then another poll on the same connection.
      await conn.write(`GET /poll?topic=pl-w&since=${r1.json.cursor}&timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n`);
      const all = await conn.waitResponses(3);
      assert.equal(all[2].status, 200);
      assert.deepEqual(all[2].json.messages, []);
    } finally {
      conn.destroy();
    }
  });
});

describe('shutdown', () => {
  test('a waiting poll is answered at once on SIGTERM with Connection: close; herald exits 0', { timeout: 30_000 }, async () => {
    const hs = await startHerald({ config: { shutdown_grace_s: 10 } });
    let conn;
    try {
      const m0 = await publishOk(hs.url, 'sd', 'before');
      conn = await RawConn.connect(hs.host, hs.port);
      await conn.write(`GET /poll?topic=sd&since=${m0.id}&timeout=60 HTTP/1.1\r\nHost: t\r\n\r\n`);
      const fetched = pollOk(hs.url, 'topic=sd&timeout=60');
      await waitSubscribers(hs.url, 'sd', 2);
      const t0 = performance.now();
      hs.child.kill('SIGTERM');
      const [res] = await conn.waitResponses(1, { timeout: 4000 });
      const took = performance.now() - t0;
      assert.ok(took < 4000, `answered at once, not after the 10 s grace, took ${took} ms`);
      assert.equal(res.status, 200, res.text);
      assert.match(res.headers.connection ?? '', /close/i);
      assert.match(res.headers['content-type'] ?? '', /^application\/json/);
      const body = assertPollBody(res.json, res.text);
      assert.deepEqual(body.messages, []);
      assert.equal(body.cursor, m0.id);
      await conn.waitClose({ timeout: 4000 });
      const fb = await fetched;
      assert.deepEqual(fb.messages, []);
      assert.match(fb.res.headers.get('connection') ?? '', /close/i);
      await hs.stop();
      assert.ok(performance.now() - t0 < 8000, 'herald did not wait for the 10 s grace period');
    } finally {
      conn?.destroy();
      await hs.stop();
    }
  });
});

describe('CORS', () => {
  test('Origin → Access-Control-Allow-Origin (["*"] by default; a listed origin is echoed with Vary)', { timeout: 30_000 }, async () => {
    const any = await poll(h.url, 'topic=cors&timeout=0', { headers: { Origin: 'https://a.example' } });
    assert.equal(any.status, 200, any.text);
    assert.equal(any.headers.get('access-control-allow-origin'), '*');

    const hc = await startHerald({ config: { cors: { allow_origins: ['https://a.example'] } } });
    try {
      const listed = await poll(hc.url, 'topic=cors&timeout=0', { headers: { Origin: 'https://a.example' } });
      assert.equal(listed.status, 200, listed.text);
      assert.equal(listed.headers.get('access-control-allow-origin'), 'https://a.example');
      assert.match(listed.headers.get('vary') ?? '', /\bOrigin\b/i);
      const other = await poll(hc.url, 'topic=cors&timeout=0', { headers: { Origin: 'https://b.example' } });
      assert.equal(other.status, 200, other.text);
      assert.equal(other.headers.get('access-control-allow-origin'), null);
      // A waiting poll woken by a publish carries it too.
      const pending = poll(hc.url, 'topic=cors-w&timeout=30', { headers: { Origin: 'https://a.example' } });
      await waitSubscribers(hc.url, 'cors-w', 1);
      await publishOk(hc.url, 'cors-w', 'x');
      const woken = await pending;
      assert.equal(woken.status, 200, woken.text);
      assert.equal(woken.headers.get('access-control-allow-origin'), 'https://a.example');
    } finally {
      await hc.stop();
    }
  });
});
