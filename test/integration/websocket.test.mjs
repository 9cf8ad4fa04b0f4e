// WebSocket — GET /ws, through the npm `ws` client (with and without
// permessage-deflate) and, where a test needs to see frames, a raw client:
// handshake, the control protocol (subscribe, unsubscribe, publish, ping),
// delivery across transports, resume and gaps, errors that keep the
// connection, size limits, deflate, heartbeats, shutdown, origins and slow
// consumers.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, publishOk, publishBatch, subscribe, openEventSource, assertError, parseId, ID_RE, sleep,
  openWS, RawWS, wsHandshake, wsDeflate, wsFrame, parseWsFrames,
} from '../lib/harness.mjs';
import zlib from 'node:zlib';

const MAX_TOPICS = 8;
let h;

before(async () => {
  h = await startHerald({ config: { limits: { max_topics_per_subscription: MAX_TOPICS } } });
});
after(async () => { await h?.stop(); });

const MODES = [
  { name: 'plain', perMessageDeflate: false },
  // threshold 0: the client compresses every message, however small.
  { name: 'deflate', perMessageDeflate: { threshold: 0 } },
];

/**
 * Publishes many items through POST /publish, 50 per request (a large batch's
 * answer could exceed a small limits.max_outbound_bytes). Resolves the answers.
 */
async function publishMany(url, items) {
  const out = [];
  for (let i = 0; i < items.length; i += 50) {
    const res = await publishBatch(url, items.slice(i, i + 50));
    assert.equal(res.status, 201, res.text);
    out.push(...res.json.messages);
  }
  return out;
}

/** Asserts a well-formed envelope; `time` must lie within [t0 - 1 s, t1 + 1 s]. */
function assertEnvelope(env, expected, [t0, t1] = [0, Number.MAX_SAFE_INTEGER]) {
  assert.ok(Number.isInteger(env.time) && env.time >= t0 - 1000 && env.time <= t1 + 1000,
    `envelope time ${env.time} not within [${t0}, ${t1}]`);
  const want = { type: 'message', ...expected };
  if (want.event === undefined) delete want.event;
  assert.deepEqual({ ...env, time: 0 }, { ...want, time: 0 });
}

/** Asserts an error reply with the given code (and ref when given), and a human message. */
function assertWsError(reply, code, ref) {
  assert.equal(reply.type, 'error', `expected an error ${code}, got ${JSON.stringify(reply)}`);
  assert.equal(reply.error, code, `error code in ${JSON.stringify(reply)}`);
  assert.equal(typeof reply.message, 'string', `error message in ${JSON.stringify(reply)}`);
  assert.ok(reply.message.length > 0, `empty error message in ${JSON.stringify(reply)}`);
  if (ref === undefined) assert.ok(!('ref' in reply), `no ref expected in ${JSON.stringify(reply)}`);
  else assert.deepEqual(reply.ref, ref);
  assert.deepEqual(Object.keys(reply).sort(), (ref === undefined ? ['error', 'message', 'type'] : ['error', 'message', 'ref', 'type']));
}

// ---------------------------------------------------------------------------

describe('handshake', () => {
  test('101 with Upgrade, Connection and a valid Sec-WebSocket-Accept; no extension unless offered', async () => {
    const c = await openWS(h.url, '/ws');
    try {
      assert.match(c.upgradeHeaders.upgrade, /^websocket$/i);
      assert.match(c.upgradeHeaders.connection, /\bupgrade\b/i);
      assert.ok(c.upgradeHeaders['sec-websocket-accept'], 'Sec-WebSocket-Accept');
      assert.equal(c.upgradeHeaders['sec-websocket-extensions'], undefined);
      assert.equal(c.extensions, '');
      await c.assertUsable();
    } finally {
      c.close();
    }
    // And the accept value itself, checked by hand (RawWS asserts it).
    const raw = await RawWS.connect(h.host, h.port);
    try {
      await raw.assertUsable();
    } finally {
      raw.destroy();
    }
  });

  test('?topic=A&topic=B subscribes at once; only later messages arrive', async () => {
    await publishOk(h.url, 'hs-a', 'before');
    const c = await openWS(h.url, '/ws?topic=hs-a&topic=hs-b');
    try {
      const a = await publishOk(h.url, 'hs-a', 'a after');
      const b = await publishOk(h.url, 'hs-b', 'b after');
      await publishOk(h.url, 'hs-c', 'not subscribed');
      const envs = await c.waitEnvelopes(2);
      assert.deepEqual(envs.map((e) => [e.topic, e.id, e.data]), [['hs-a', a.id, 'a after'], ['hs-b', b.id, 'b after']]);
      assert.equal(a.subscribers, 1);
      await c.expectNoMore(300);
    } finally {
      c.close();
    }
  });

  test('?topic=&since= resumes at once: what was missed, then live, nothing twice', async () => {
    for (const param of ['since', 'last_event_id']) {
      const topic = `hs-${param}`;
      const ids = [];
      for (const d of ['m1', 'm2', 'm3']) ids.push((await publishOk(h.url, topic, d)).id);
      const c = await openWS(h.url, `/ws?topic=${topic}&${param}=${ids[0]}`);
      try {
        const held = await c.waitEnvelopes(2);
        assert.deepEqual(held.map((e) => [e.id, e.data]), [[ids[1], 'm2'], [ids[2], 'm3']]);
        assert.deepEqual(c.json.filter((j) => j.type !== 'message'), [], 'no gap, no ack for a query subscription');
        const live = await publishOk(h.url, topic, 'live');
        const envs = await c.waitEnvelopes(3);
        assert.equal(envs[2].id, live.id);
        await c.expectNoMore(300);
      } finally {
        c.close();
      }
    }
  });

  test('a bad subscription in the query is answered before the upgrade (400)', async () => {
    const cases = [
      ['/ws?topic=bad%20topic', 'invalid_topic'],
      [`/ws?topic=${'t'.repeat(201)}`, 'invalid_topic'],
      ['/ws?topic=ok&since=garbage', 'invalid_cursor'],
      [`/ws?${Array.from({ length: MAX_TOPICS + 1 }, (_, i) => `topic=q${i}`).join('&')}`, 'too_many_topics'],
    ];
    for (const [path, code] of cases) {
      const res = await wsHandshake(h.host, h.port, path);
      assertError(res, 400, code);
      await assert.rejects(openWS(h.url, path), (err) => err.status === 400 && err.json?.error === code);
    }
  });
});

// ---------------------------------------------------------------------------

for (const mode of MODES) {
  describe(`control operations (${mode.name})`, () => {
    const open = (path = '/ws') => openWS(h.url, path, { perMessageDeflate: mode.perMessageDeflate });

    test('ping: the ack echoes ref exactly as sent, and has no ref when none was given', async () => {
      const c = await open();
      try {
        if (mode.perMessageDeflate) assert.match(c.extensions, /permessage-deflate/);
        const safe = Number.MAX_SAFE_INTEGER;
        for (const ref of [1, 0, -7, 123456789, safe, -safe, 'abc', '', 'ünïcødé 😀 "quoted" \\ \n', 'é'.repeat(64)]) {
          assert.deepEqual(await c.call({ op: 'ping', ref }), { type: 'ack', ref });
        }
        assert.deepEqual(await c.call({ op: 'ping', ref: undefined }), { type: 'ack' });
        // The raw text of the ack keeps a number a number and a string a string.
        const from = c.messages.length;
        await c.send('{"op":"ping","ref":17}');
        await c.send('{"op":"ping","ref":"17"}');
        await c.waitFor(() => c.messages.length >= from + 2, { what: 'two acks' });
        assert.deepEqual(c.messages.slice(from).map((m) => m.text), ['{"type":"ack","ref":17}', '{"type":"ack","ref":"17"}']);
        // An integral number however spelled comes back in plain decimal, still a number.
        const spelled = c.messages.length;
        await c.send('{"op":"ping","ref":1e3}');
        await c.send('{"op":"ping","ref":-9007199254740991}');
        await c.waitFor(() => c.messages.length >= spelled + 2, { what: 'two acks' });
        assert.deepEqual(c.messages.slice(spelled).map((m) => m.text),
          ['{"type":"ack","ref":1000}', '{"type":"ack","ref":-9007199254740991}']);
      } finally {
        c.close();
      }
    });

    test('subscribe and unsubscribe: acks, and messages only while subscribed', async () => {
      const topic = `ops-sub-${mode.name}`;
      const c = await open();
      try {
        assert.deepEqual(await c.call({ op: 'subscribe', topics: [topic, `${topic}-2`], ref: 1 }), { type: 'ack', ref: 1 });
        const m1 = await publishOk(h.url, topic, 'one');
        const m2 = await publishOk(h.url, `${topic}-2`, 'two');
        assert.equal(m1.subscribers, 1);
        const envs = await c.waitEnvelopes(2);
        assert.deepEqual(envs.map((e) => [e.topic, e.id, e.data]), [[topic, m1.id, 'one'], [`${topic}-2`, m2.id, 'two']]);

        assert.deepEqual(await c.call({ op: 'unsubscribe', topics: [topic], ref: 'u' }), { type: 'ack', ref: 'u' });
        const gone = await publishOk(h.url, topic, 'after unsubscribe');
        assert.equal(gone.subscribers, 0);
        const m3 = await publishOk(h.url, `${topic}-2`, 'still subscribed');
        await c.waitFor(() => c.envelopes().some((e) => e.id === m3.id), { what: 'the message of the topic still subscribed' });
        await c.expectNoMore(200);
        assert.ok(!c.envelopes().some((e) => e.id === gone.id), 'nothing after unsubscribe');

        // Unsubscribing from a topic the connection does not hold is harmless.
        assert.deepEqual(await c.call({ op: 'unsubscribe', topics: ['never-subscribed'], ref: 2 }), { type: 'ack', ref: 2 });
        // Subscribing twice to the same topic delivers once.
        await c.ok({ op: 'subscribe', topics: [`${topic}-2`] });
        const once = await publishOk(h.url, `${topic}-2`, 'once');
        assert.equal(once.subscribers, 1);
        await c.waitFor(() => c.envelopes().some((e) => e.id === once.id), { what: 'the message' });
        await c.expectNoMore(200);
        assert.equal(c.envelopes().filter((e) => e.id === once.id).length, 1);
      } finally {
        c.close();
      }
    });

    test('publish: the ack carries id, topic and subscribers; subscribers get the envelope', async () => {
      const topic = `ops-pub-${mode.name}`;
      const s1 = await open(`/ws?topic=${topic}`);
      const s2 = await open();
      const p = await open();
      try {
        await s2.ok({ op: 'subscribe', topics: [topic] });
        const t0 = Date.now();
        const ack = await p.call({ op: 'publish', topic, data: 'hello\nworld', event: 'greeting', ref: 3 });
        const t1 = Date.now();
        assert.deepEqual(Object.keys(ack).sort(), ['id', 'ref', 'subscribers', 'topic', 'type']);
        assert.equal(ack.type, 'ack');
        assert.equal(ack.ref, 3);
        assert.match(ack.id, ID_RE);
        assert.equal(ack.topic, topic);
        assert.equal(ack.subscribers, 2);
        for (const s of [s1, s2]) {
          const [env] = await s.waitEnvelopes(1);
          assertEnvelope(env, { topic, id: ack.id, event: 'greeting', data: 'hello\nworld' }, [t0, t1]);
        }

        // Without an event the envelope has none; empty data is allowed; a ref
        // is optional on publish too; the publisher, once subscribed, gets its own message.
        await p.ok({ op: 'subscribe', topics: [topic] });
        const ack2 = await p.call({ op: 'publish', topic, data: '', ref: 'empty' });
        assert.equal(ack2.subscribers, 3);
        const ack3 = await p.call({ op: 'publish', topic, data: 'no ref', ref: undefined });
        assert.deepEqual(Object.keys(ack3).sort(), ['id', 'subscribers', 'topic', 'type']);
        assert.ok(parseId(ack3.id).seq > parseId(ack2.id).seq);
        for (const s of [s1, s2, p]) {
          const envs = await s.waitEnvelopes(s === p ? 2 : 3);
          const tail = envs.slice(-2);
          assertEnvelope(tail[0], { topic, id: ack2.id, data: '' });
          assertEnvelope(tail[1], { topic, id: ack3.id, data: 'no ref' });
          assert.ok(!('event' in tail[0]));
        }
        // A publish over HTTP after it: ids keep increasing across transports.
        const http = await publishOk(h.url, topic, 'over http');
        assert.ok(parseId(http.id).seq > parseId(ack3.id).seq);
        assert.equal(http.subscribers, 3);
      } finally {
        s1.close();
        s2.close();
        p.close();
      }
    });

    test('bad control messages get an error frame and the connection stays usable', async () => {
      const c = await open();
      try {
        const cases = [
          ['not json', 'invalid_json'],
          ['{"op":"ping"', 'invalid_json'],
          ['', 'invalid_json'],
          ['[1,2]', 'invalid_json'],
          ['"ping"', 'invalid_json'],
          ['42', 'invalid_json'],
          ['null', 'invalid_json'],
          ['{"op":"publish","topic":"t","data":"\\udc00","ref":1}', 'invalid_json'],
          ['{"op":"publish","topic":"t","data":"\\ud800x","ref":1}', 'invalid_json'],
          [{ op: 'dance', ref: 5 }, 'invalid_op', 5],
          [{ ref: 'no-op' }, 'invalid_op', 'no-op'],
          [{ op: 7, ref: 6 }, 'invalid_op', 6],
          [{ op: 'PING', ref: 6 }, 'invalid_op', 6],
          [{ op: 'subscribe', topics: ['bad topic'], ref: 7 }, 'invalid_topic', 7],
          [{ op: 'subscribe', topics: ['ok-topic', 't'.repeat(201)], ref: 8 }, 'invalid_topic', 8],
          [{ op: 'subscribe', topics: [''], ref: 9 }, 'invalid_topic', 9],
          [{ op: 'subscribe', topics: [42], ref: 9 }, 'invalid_topic', 9],
          [{ op: 'unsubscribe', topics: ['bad/topic?'], ref: 10 }, 'invalid_topic', 10],
          [{ op: 'publish', topic: 'bad topic', data: 'x', ref: 11 }, 'invalid_topic', 11],
          [{ op: 'publish', topic: '', data: 'x', ref: 12 }, 'invalid_topic', 12],
          [{ op: 'publish', topic: 'ok', data: 'x', event: 'bad event', ref: 13 }, 'invalid_event', 13],
          [{ op: 'publish', topic: 'ok', data: 'x', event: 'e'.repeat(65), ref: 14 }, 'invalid_event', 14],
          [{ op: 'publish', topic: 'ok', data: 'x', event: '', ref: 15 }, 'invalid_event', 15],
          [{ op: 'subscribe', topics: Array.from({ length: MAX_TOPICS + 1 }, (_, i) => `many-${i}`), ref: 16 }, 'too_many_topics', 16],
          [{ op: 'subscribe', topics: ['cursor-topic'], since: 'garbage', ref: 17 }, 'invalid_cursor', 17],
          [{ op: 'subscribe', topics: ['cursor-topic'], since: '0123abcd-', ref: 18 }, 'invalid_cursor', 18],
          [{ op: 'ping', ref: 'x'.repeat(129) }, 'invalid_ref'],
          [{ op: 'ping', ref: 'é'.repeat(65) }, 'invalid_ref'],
          [{ op: 'ping', ref: { a: 1 } }, 'invalid_ref'],
          [{ op: 'ping', ref: [1] }, 'invalid_ref'],
          [{ op: 'ping', ref: true }, 'invalid_ref'],
          [{ op: 'ping', ref: null }, 'invalid_ref'],
          // Numbers a client could not read back exactly (a fraction, past 2^53 - 1, past a double).
          [{ op: 'ping', ref: 3.25 }, 'invalid_ref'],
          [{ op: 'ping', ref: 2 ** 53 }, 'invalid_ref'],
          [{ op: 'ping', ref: -(2 ** 53) }, 'invalid_ref'],
          ['{"op":"ping","ref":9007199254740993}', 'invalid_ref'],
          ['{"op":"ping","ref":1e400}', 'invalid_ref'],
          ['{"op":"ping","ref":-1e400}', 'invalid_ref'],
          [{ op: 'subscribe', topics: ['cursor-topic'], since: 'x', ref: 0.5 }, 'invalid_ref'],
        ];
        for (const [msg, code, ref] of cases) {
          const from = c.messages.length;
          await c.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
          const reply = await c.waitFor(() => c.messages[from]?.json, { what: `the error for ${JSON.stringify(msg).slice(0, 80)}` });
          assertWsError(reply, code, ref);
          await c.assertUsable();
        }
        // Nothing of the refused subscriptions was kept.
        for (const topic of ['ok-topic', 'many-0', 'cursor-topic']) {
          assert.equal((await publishOk(h.url, topic, 'x')).subscribers, 0, `${topic} must not be subscribed`);
        }
        // A binary message: unsupported_data, no ref, connection stays.
        const from = c.messages.length;
        await c.send(Buffer.from('{"op":"ping","ref":1}'), { binary: true });
        assertWsError(await c.waitFor(() => c.messages[from]?.json, { what: 'the unsupported_data error' }), 'unsupported_data');
        await c.assertUsable();
        assert.equal(c.closed, null);
      } finally {
        c.close();
      }
    });

    test('too_many_topics counts what the connection holds; subscribe is all or nothing', async () => {
      const c = await open();
      const t = (i) => `cap-${mode.name}-${i}`;
      try {
        await c.ok({ op: 'subscribe', topics: [t(0), t(1), t(2), t(3), t(4)] });
        const over = await c.call({ op: 'subscribe', topics: [t(5), t(6), t(7), t(8)], ref: 'over' });
        assertWsError(over, 'too_many_topics', 'over');
        assert.equal((await publishOk(h.url, t(5), 'x')).subscribers, 0, 'nothing of a refused subscribe is kept');
        assert.equal((await publishOk(h.url, t(0), 'x')).subscribers, 1, 'earlier subscriptions are kept');
        await c.ok({ op: 'unsubscribe', topics: [t(0), t(1)] });
        await c.ok({ op: 'subscribe', topics: [t(5), t(6), t(7), t(8), t(9)] });
        assert.equal((await publishOk(h.url, t(9), 'x')).subscribers, 1);
      } finally {
        c.close();
      }
    });
  });
}

// ---------------------------------------------------------------------------

describe('across transports', () => {
  test('an HTTP publish reaches plain and deflate WebSocket subscribers as the same envelope', async () => {
    const plain = await openWS(h.url, '/ws?topic=x-http');
    const deflated = await openWS(h.url, '/ws?topic=x-http', { perMessageDeflate: true });
    try {
      assert.match(deflated.extensions, /permessage-deflate/);
      const t0 = Date.now();
      const a = await publishOk(h.url, 'x-http', 'with event', { event: 'created' });
      const b = await publishOk(h.url, 'x-http', 'no event');
      const t1 = Date.now();
      assert.equal(a.subscribers, 2);
      for (const c of [plain, deflated]) {
        const envs = await c.waitEnvelopes(2);
        assertEnvelope(envs[0], { topic: 'x-http', id: a.id, event: 'created', data: 'with event' }, [t0, t1]);
        assertEnvelope(envs[1], { topic: 'x-http', id: b.id, data: 'no event' }, [t0, t1]);
      }
      assert.deepEqual(plain.envelopes(), deflated.envelopes());
    } finally {
      plain.close();
      deflated.close();
    }
  });

  test('a WebSocket publish reaches SSE (raw and EventSource) with the same id and data', async () => {
    const raw = await subscribe(h.url, '/events?topic=x-ws');
    const json = await subscribe(h.url, '/events?topic=x-ws&format=json');
    const es = await openEventSource(`${h.url}/events?topic=x-ws`, { events: ['note'] });
    const p = await openWS(h.url, '/ws', { perMessageDeflate: { threshold: 0 } });
    try {
      const a = await p.call({ op: 'publish', topic: 'x-ws', data: 'line 1\nline 2 😀', ref: 1 });
      const b = await p.call({ op: 'publish', topic: 'x-ws', data: 'named', event: 'note', ref: 2 });
      assert.equal(a.subscribers, 3);
      const evs = await raw.waitEvents(2);
      assert.equal(evs[0].raw, `id: ${a.id}\ndata: line 1\ndata: line 2 😀\n\n`);
      assert.equal(evs[1].raw, `id: ${b.id}\nevent: note\ndata: named\n\n`);
      const jevs = await json.waitEvents(2);
      assertEnvelope(JSON.parse(jevs[0].data), { topic: 'x-ws', id: a.id, data: 'line 1\nline 2 😀' });
      assertEnvelope(JSON.parse(jevs[1].data), { topic: 'x-ws', id: b.id, event: 'note', data: 'named' });
      await es.wait(1);
      await es.wait(1, { type: 'note' });
      assert.deepEqual(es.got.message.map((m) => [m.lastEventId, m.data]), [[a.id, 'line 1\nline 2 😀']]);
      assert.deepEqual(es.got.note.map((m) => [m.lastEventId, m.data]), [[b.id, 'named']]);
    } finally {
      raw.close();
      json.close();
      es.close();
      p.close();
    }
  });

  test('unicode, multi-line and control-character data arrive exactly, whichever way they were published', async () => {
    const samples = [
      'plain ascii',
      'emoji 😀🎉👍🏽 flags 🇯🇵 zwj 👩‍👩‍👧',
      'CJK 日本語 中文 한국어',
      'combining e\u0301 a\u0308 and precomposed \u00e9',
      'multi\nline\n\nwith empty line',
      'cr\rand crlf\r\nkept',
      '\u2028 line separator \u2029 paragraph separator \u0085 NEL',
      'tabs\tand "quotes" <b>&amp;</b> \\ backslash / slash',
      'control \u0001\u001f\u007f bytes',
      '{"looks":"like json"}',
      '',
      'é'.repeat(20000),
    ];
    const subs = [
      await openWS(h.url, '/ws?topic=x-uni'),
      await openWS(h.url, '/ws?topic=x-uni', { perMessageDeflate: true }),
    ];
    const sse = await subscribe(h.url, '/events?topic=x-uni&format=json');
    const pub = await openWS(h.url, '/ws', { perMessageDeflate: { threshold: 0 } });
    try {
      const ids = [];
      for (const s of samples) {
        ids.push((await publishOk(h.url, 'x-uni', s)).id);
        ids.push((await pub.ok({ op: 'publish', topic: 'x-uni', data: s })).id);
      }
      const expected = samples.flatMap((s) => [s, s]);
      for (const c of subs) {
        const envs = await c.waitEnvelopes(expected.length);
        assert.deepEqual(envs.map((e) => e.id), ids);
        envs.forEach((e, i) => assert.equal(e.data, expected[i], `sample ${i >> 1} (${i % 2 ? 'ws' : 'http'} publish)`));
      }
      const evs = await sse.waitEvents(expected.length);
      evs.forEach((e, i) => assert.equal(JSON.parse(e.data).data, expected[i], `SSE sample ${i >> 1}`));
    } finally {
      for (const c of subs) c.close();
      sse.close();
      pub.close();
    }
  });

  test('a NUL character: kept by raw HTTP publish, refused (never cut short) in JSON', async () => {
    // docs/api.md: JSON with \u0000 is refused with invalid_json on /ws and
    // POST /publish; raw-body publishing carries any UTF-8.
    const sub = await openWS(h.url, '/ws?topic=x-nul');
    const pub = await openWS(h.url, '/ws');
    try {
      const viaHttp = await publishOk(h.url, 'x-nul', 'c\u0000d');
      const [env] = await sub.waitEnvelopes(1);
      assert.equal(env.id, viaHttp.id);
      assert.equal(env.data, 'c\u0000d', 'HTTP publish keeps the NUL');
      assertWsError(await pub.call({ op: 'publish', topic: 'x-nul', data: 'a\u0000b', ref: 1 }), 'invalid_json', 1);
      // A name containing NUL must not become its prefix.
      assertWsError(await pub.call({ op: 'publish', topic: 'x-nul\u0000 junk', data: 'x', ref: 2 }), 'invalid_json', 2);
      assertWsError(await pub.call({ op: 'publish', topic: 'x-nul', data: 'x', event: 'ev\u0000 bad', ref: 3 }), 'invalid_json', 3);
      assertWsError(await pub.call({ op: 'subscribe', topics: ['x-nul\u0000 junk'], ref: 4 }), 'invalid_json', 4);
      const batch = await publishBatch(h.url, [{ topic: 'x-nul', data: 'e\u0000f' }]);
      await assertError(batch, 400, 'invalid_json');
      await sub.expectNoMore(200, { from: 1 });
    } finally {
      sub.close();
      pub.close();
    }
  });
});

// ---------------------------------------------------------------------------

describe('resume and gaps', () => {
  test('subscribe with since: ack first, then what was missed, then live; nothing twice', async () => {
    for (const mode of MODES) {
      const topic = `rs-op-${mode.name}`;
      const ids = [];
      for (const d of ['r1', 'r2', 'r3', 'r4']) ids.push((await publishOk(h.url, topic, d)).id);
      await publishOk(h.url, 'rs-other', 'other topic');
      const c = await openWS(h.url, '/ws', { perMessageDeflate: mode.perMessageDeflate });
      try {
        await c.send({ op: 'subscribe', topics: [topic], since: ids[1], ref: 'resume' });
        await c.waitEnvelopes(2);
        assert.deepEqual(c.json.slice(0, 3).map((j) => [j.type, j.ref ?? j.id]), [['ack', 'resume'], ['message', ids[2]], ['message', ids[3]]]);
        assert.deepEqual(c.envelopes().map((e) => e.data), ['r3', 'r4']);
        const live = await publishOk(h.url, topic, 'live');
        await c.waitEnvelopes(3);
        assert.equal(c.envelopes()[2].id, live.id);
        await c.expectNoMore(300);
        // Resuming from the newest id replays nothing.
        const c2 = await openWS(h.url, '/ws', { perMessageDeflate: mode.perMessageDeflate });
        try {
          await c2.ok({ op: 'subscribe', topics: [topic, 'rs-other'], since: live.id });
          await c2.expectNoMore(300, { from: 0, pred: (j) => j.type !== 'ack' });
        } finally {
          c2.close();
        }
      } finally {
        c.close();
      }
    }
  });

  test('a long resume racing live publishes loses nothing and repeats nothing', async () => {
    const hr = await startHerald({
      config: { limits: { max_outbound_bytes: 16384 }, history: { max_messages: 10000, max_bytes: 64 * 1024 * 1024 } },
    });
    const c = await openWS(hr.url, '/ws', { perMessageDeflate: true });
    try {
      const body = 'x'.repeat(1000);
      const held = await publishMany(hr.url, Array.from({ length: 600 }, (_, i) => ({ topic: i % 3 ? 'race-a' : 'race-b', data: `${i}:${body}` })));
      const cursor = held[0].id;
      const topicOf = (i) => (i % 3 ? 'race-a' : 'race-b');
      const expected = held.slice(1).map((m, i) => ({ id: m.id, topic: topicOf(i + 1), data: `${i + 1}:${body}` }));
      await c.send({ op: 'subscribe', topics: ['race-a', 'race-b'], since: cursor, ref: 'race' });
      for (let i = 600; i < 700; i++) {
        const r = await publishOk(hr.url, topicOf(i), `${i}:${body}`);
        expected.push({ id: r.id, topic: topicOf(i), data: `${i}:${body}` });
      }
      await c.waitEnvelopes(expected.length, { timeout: 30_000 });
      await c.expectNoMore(300);
      const got = c.envelopes().map((e) => ({ id: e.id, topic: e.topic, data: e.data }));
      // Per topic in publish order; across topics each message exactly once.
      for (const topic of ['race-a', 'race-b']) {
        assert.deepEqual(got.filter((m) => m.topic === topic).map((m) => m.id),
          expected.filter((m) => m.topic === topic).map((m) => m.id), `order of ${topic}`);
      }
      assert.deepEqual([...got].sort((x, y) => Number(parseId(x.id).seq - parseId(y.id).seq)), expected);
      assert.ok(!c.json.some((j) => j.type === 'gap'), 'no gap while history holds everything');
    } finally {
      c.close();
      await hr.stop();
    }
  });

  test('a cursor older than history: ack, a gap frame, then what is held (op and query)', async () => {
    const hg = await startHerald({ config: { history: { max_messages: 3 } } });
    try {
      const ids = [];
      for (let i = 1; i <= 10; i++) ids.push((await publishOk(hg.url, 'gap-t', `g${i}`)).id);
      const opClient = await openWS(hg.url, '/ws', { perMessageDeflate: true });
      const queryClient = await openWS(hg.url, `/ws?topic=gap-t&since=${ids[0]}`);
      try {
        await opClient.send({ op: 'subscribe', topics: ['gap-t'], since: ids[0], ref: 'g' });
        for (const c of [opClient, queryClient]) {
          await c.waitEnvelopes(3);
          const frames = c.json.filter((j) => j.type !== 'ack');
          assert.deepEqual(frames[0], { type: 'gap', topic: 'gap-t', from: ids[0], to: ids[6] });
          assert.deepEqual(frames.slice(1).map((e) => [e.id, e.data]), [[ids[7], 'g8'], [ids[8], 'g9'], [ids[9], 'g10']]);
        }
        assert.deepEqual(opClient.json[0], { type: 'ack', ref: 'g' }, 'the ack comes first');
        await opClient.expectNoMore(300);
      } finally {
        opClient.close();
        queryClient.close();
      }
      // A cursor that history still covers: no gap.
      const ok = await openWS(hg.url, '/ws');
      try {
        await ok.ok({ op: 'subscribe', topics: ['gap-t'], since: ids[6] });
        await ok.waitEnvelopes(3);
        await ok.expectNoMore(300);
        assert.ok(!ok.json.some((j) => j.type === 'gap'));
      } finally {
        ok.close();
      }
    } finally {
      await hg.stop();
    }
  });

  test('a foreign-epoch cursor: a gap for each topic, then everything held', async () => {
    const b1 = await publishOk(h.url, 'fe-t', 'new 1');
    const b2 = await publishOk(h.url, 'fe-t', 'new 2');
    const { epoch } = parseId(b1.id);
    const foreign = `${epoch === '00000000' ? '00000001' : '00000000'}-${parseId(b2.id).seq + 5n}`;
    const c = await openWS(h.url, '/ws');
    try {
      await c.ok({ op: 'subscribe', topics: ['fe-t', 'fe-empty'], since: foreign });
      await c.waitEnvelopes(2);
      await c.expectNoMore(300);
      const frames = c.json.slice(1);
      const gaps = frames.filter((j) => j.type === 'gap').sort((x, y) => x.topic.localeCompare(y.topic));
      assert.deepEqual(gaps, [
        { type: 'gap', topic: 'fe-empty', from: foreign, to: `${epoch}-0` },
        { type: 'gap', topic: 'fe-t', from: foreign, to: `${epoch}-0` },
      ]);
      const gapIndex = frames.findIndex((j) => j.type === 'gap' && j.topic === 'fe-t');
      const firstMsg = frames.findIndex((j) => j.type === 'message');
      assert.ok(gapIndex < firstMsg, 'the gap comes before the messages of its topic');
      assert.deepEqual(c.envelopes().map((e) => [e.id, e.data]), [[b1.id, 'new 1'], [b2.id, 'new 2']]);
    } finally {
      c.close();
    }
  });

  test('a second resume while one is being sent → resume_in_progress; a later one works', async () => {
    const hr = await startHerald({
      config: { limits: { max_outbound_bytes: 65536 }, history: { max_messages: 10000, max_bytes: 64 * 1024 * 1024 } },
    });
    const raw = await RawWS.connect(hr.host, hr.port);
    try {
      const ids = (await publishMany(hr.url, Array.from({ length: 100 }, (_, i) => ({ topic: 'rip', data: `${i}:${'r'.repeat(4000)}` })))).map((m) => m.id);
      const other = await publishOk(hr.url, 'rip-other', 'other');
      // Both in one write: the second arrives while the first resume is still queued.
      await raw.write(Buffer.concat([
        wsFrameText({ op: 'subscribe', topics: ['rip'], since: ids[0], ref: 1 }),
        wsFrameText({ op: 'subscribe', topics: ['rip-other'], since: ids[0], ref: 2 }),
      ]));
      const second = await raw.waitJson((j) => j.ref === 2);
      assertWsError(second, 'resume_in_progress', 2);
      await raw.waitFrame(() => raw.json.filter((j) => j.type === 'message').length >= 99, { timeout: 20_000, what: '99 held messages' });
      assert.deepEqual(raw.json.filter((j) => j.type === 'message').map((j) => j.id), ids.slice(1));
      assert.deepEqual(raw.json.find((j) => j.ref === 1), { type: 'ack', ref: 1 });
      // Once it has finished, another resume is accepted.
      await raw.sendJson({ op: 'subscribe', topics: ['rip-other'], since: ids[0], ref: 3 });
      await raw.waitJson((j) => j.type === 'message' && j.id === other.id);
      assert.deepEqual(raw.json.find((j) => j.ref === 3), { type: 'ack', ref: 3 });
    } finally {
      raw.destroy();
      await hr.stop();
    }
  });
});

function wsFrameText(obj) {
  return wsFrame({ opcode: 1, payload: JSON.stringify(obj) });
}

test('limits.max_topics: subscribe and publish of a new topic beyond it → topic_limit, all or nothing', async () => {
  const ht = await startHerald({ config: { limits: { max_topics: 3 } } });
  const c = await openWS(ht.url, '/ws');
  try {
    await c.ok({ op: 'subscribe', topics: ['tl-a', 'tl-b'] });
    assertWsError(await c.call({ op: 'subscribe', topics: ['tl-c', 'tl-d'], ref: 1 }), 'topic_limit', 1);
    // tl-c was rolled back, so there is room for one more topic.
    assert.equal((await publishOk(ht.url, 'tl-c', 'x')).subscribers, 0);
    assertWsError(await c.call({ op: 'publish', topic: 'tl-e', data: 'x', ref: 2 }), 'topic_limit', 2);
    assert.equal((await c.ok({ op: 'publish', topic: 'tl-a', data: 'x' })).subscribers, 1);
    assertError(await wsHandshake(ht.host, ht.port, '/ws?topic=tl-z'), 503, 'topic_limit');
    await c.assertUsable();
  } finally {
    c.close();
    await ht.stop();
  }
});

// ---------------------------------------------------------------------------

describe('message size', () => {
  const MAX = 1024;
  let hl;
  before(async () => { hl = await startHerald({ config: { limits: { max_message_bytes: MAX } } }); });
  after(async () => { await hl?.stop(); });

  for (const mode of MODES) {
    test(`a message of exactly limits.max_message_bytes is accepted (${mode.name})`, async () => {
      const c = await openWS(hl.url, '/ws', { perMessageDeflate: mode.perMessageDeflate });
      try {
        const base = JSON.stringify({ op: 'ping', ref: 'exact' });
        const text = `${base.slice(0, -1)}${' '.repeat(MAX - base.length)}}`;
        assert.equal(Buffer.byteLength(text), MAX);
        const from = c.messages.length;
        await c.send(text);
        assert.deepEqual(await c.waitFor(() => c.messages[from]?.json, { what: 'the ack' }), { type: 'ack', ref: 'exact' });
      } finally {
        c.close();
      }
    });

    test(`a message far over limits.max_message_bytes closes with 1009 (${mode.name}; measured after inflation)`, async () => {
      const c = await openWS(hl.url, '/ws', { perMessageDeflate: mode.perMessageDeflate });
      try {
        // Highly compressible: a few hundred bytes on the wire when deflated.
        const text = JSON.stringify({ op: 'ping', ref: 'a'.repeat(64 * MAX) });
        await c.send(text);
        const closed = await c.waitClose();
        assert.equal(closed.code, 1009, JSON.stringify(closed));
      } finally {
        c.close();
      }
    });

    test(`publish data over limits.max_message_bytes → payload_too_large, the connection stays (${mode.name})`, async () => {
      const sub = await openWS(hl.url, '/ws?topic=big');
      const c = await openWS(hl.url, '/ws', { perMessageDeflate: mode.perMessageDeflate });
      try {
        // Data of exactly the limit is valid (as over HTTP), one byte more is not.
        const ack = await c.call({ op: 'publish', topic: 'big', data: 'd'.repeat(MAX), ref: 'at-limit' });
        assert.equal(ack.type, 'ack', `data of max_message_bytes must be accepted: ${JSON.stringify(ack)}; closed ${JSON.stringify(c.closed)}`);
        const [env] = await sub.waitEnvelopes(1);
        assert.equal(env.data.length, MAX);
        const reply = await c.call({ op: 'publish', topic: 'big', data: 'd'.repeat(MAX + 1), ref: 'over' });
        assertWsError(reply, 'payload_too_large', 'over');
        await c.assertUsable();
        await sub.expectNoMore(200, { from: 1 });
      } finally {
        sub.close();
        c.close();
      }
    });
  }
});

// ---------------------------------------------------------------------------

describe('permessage-deflate', () => {
  test('negotiated with the ws client: server_no_context_takeover in the answer', async () => {
    const c = await openWS(h.url, '/ws', { perMessageDeflate: true });
    try {
      assert.equal(c.extensions, 'permessage-deflate');
      const ext = c.upgradeHeaders['sec-websocket-extensions'];
      assert.match(ext, /^permessage-deflate(\s*;|$)/);
      assert.match(ext, /;\s*server_no_context_takeover\b/);
      await c.assertUsable();
    } finally {
      c.close();
    }
  });

  test('large compressible and incompressible data arrive intact both ways', async () => {
    const sub = await openWS(h.url, '/ws?topic=dfl-big', { perMessageDeflate: true });
    const plain = await openWS(h.url, '/ws?topic=dfl-big');
    const pub = await openWS(h.url, '/ws', { perMessageDeflate: { threshold: 0 } });
    try {
      let seed = 12345;
      const noise = Array.from({ length: 30000 }, () => {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        return String.fromCharCode(0x21 + (seed % 94));
      }).join('');
      const datas = [
        'abc'.repeat(20000),
        noise,
        `${'😀'.repeat(5000)}${'\n'.repeat(1000)}`,
      ];
      const ids = [];
      for (const d of datas) ids.push((await pub.ok({ op: 'publish', topic: 'dfl-big', data: d })).id);
      // And the largest data HTTP takes (64 KiB), highly compressible.
      const big = 'z'.repeat(65536);
      ids.push((await publishOk(h.url, 'dfl-big', big)).id);
      datas.push(big);
      for (const c of [sub, plain]) {
        const envs = await c.waitEnvelopes(datas.length, { timeout: 10_000 });
        assert.deepEqual(envs.map((e) => e.id), ids);
        envs.forEach((e, i) => assert.ok(e.data === datas[i], `message ${i} differs (length ${e.data.length} vs ${datas[i].length})`));
      }
      await pub.assertUsable();
    } finally {
      sub.close();
      plain.close();
      pub.close();
    }
  });

  test('raw: envelopes are compressed (RSV1), once for every subscriber; replies are not', async () => {
    const offer = { 'Sec-WebSocket-Extensions': 'permessage-deflate; client_max_window_bits' };
    const r1 = await RawWS.connect(h.host, h.port, { path: '/ws?topic=dfl-raw', headers: offer });
    const r2 = await RawWS.connect(h.host, h.port, { path: '/ws?topic=dfl-raw', headers: offer });
    try {
      for (const r of [r1, r2]) assert.match(r.headers['sec-websocket-extensions'] ?? '', /^permessage-deflate\b.*server_no_context_takeover/);
      const m = await publishOk(h.url, 'dfl-raw', 'compressed ✓ '.repeat(50), { event: 'zip' });
      const frames = [];
      for (const r of [r1, r2]) {
        const f = await r.waitFrame((fr) => fr.opcode === 1);
        assert.ok(f.rsv1, 'the envelope frame is compressed');
        assert.ok(f.fin);
        assertEnvelope(f.json, { topic: 'dfl-raw', id: m.id, event: 'zip', data: 'compressed ✓ '.repeat(50) });
        frames.push(f.payload);
      }
      assert.ok(frames[0].equals(frames[1]), 'the same compressed bytes go to every subscriber');
      // A compressed control message from the client; the ack comes uncompressed.
      await r1.write(wsFrame({ opcode: 1, rsv1: true, payload: wsDeflate(JSON.stringify({ op: 'ping', ref: 'z' })) }));
      const ack = await r1.waitFrame((fr) => fr.json?.ref === 'z');
      assert.equal(ack.rsv1, false, 'replies are sent uncompressed');
      assert.deepEqual(ack.json, { type: 'ack', ref: 'z' });
      // An error too.
      await r1.write(wsFrame({ opcode: 1, rsv1: true, payload: wsDeflate('{"op":"nope","ref":"e"}') }));
      const err = await r1.waitFrame((fr) => fr.json?.ref === 'e');
      assert.equal(err.rsv1, false);
      assert.equal(err.json.error, 'invalid_op');
    } finally {
      r1.destroy();
      r2.destroy();
    }
  });

  test('raw: herald asks for no context takeover both ways, and each message inflates alone', async () => {
    // docs/api.md: herald always answers with server_no_context_takeover and
    // client_no_context_takeover, so it can free the inflater between messages.
    const r = await RawWS.connect(h.host, h.port, { headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate' } });
    try {
      const answer = r.headers['sec-websocket-extensions'] ?? '';
      assert.match(answer, /^permessage-deflate\b/);
      assert.match(answer, /server_no_context_takeover/);
      assert.match(answer, /client_no_context_takeover/);
      const text = JSON.stringify({ op: 'ping', ref: 'no context takeover: every message stands alone' });
      for (let i = 0; i < 3; i++) await r.write(wsFrame({ opcode: 1, rsv1: true, payload: wsDeflate(text) }));
      await r.waitFrame(() => r.json.filter((j) => j.type === 'ack').length >= 3, { what: 'three acks' });
      assert.equal(r.json.length, 3, JSON.stringify(r.json));
    } finally {
      r.destroy();
    }
    // With client_no_context_takeover offered, the answer carries it.
    const r2 = await RawWS.connect(h.host, h.port, { headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate; client_no_context_takeover' } });
    try {
      assert.match(r2.headers['sec-websocket-extensions'] ?? '', /client_no_context_takeover/);
      for (let i = 0; i < 2; i++) await r2.write(wsFrame({ opcode: 1, rsv1: true, payload: wsDeflate(`{"op":"ping","ref":${i}}`) }));
      await r2.waitFrame(() => r2.json.length >= 2);
      assert.deepEqual(r2.json, [{ type: 'ack', ref: 0 }, { type: 'ack', ref: 1 }]);
    } finally {
      r2.destroy();
    }
  });

  test('raw: a client limiting server_max_window_bits below 15 receives uncompressed messages', async () => {
    const r = await RawWS.connect(h.host, h.port, {
      path: '/ws?topic=dfl-bits',
      headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate; server_max_window_bits=10' },
    });
    try {
      assert.match(r.headers['sec-websocket-extensions'] ?? '', /^permessage-deflate\b.*server_max_window_bits=10/);
      const m = await publishOk(h.url, 'dfl-bits', 'a'.repeat(2000));
      const f = await r.waitFrame((fr) => fr.opcode === 1);
      assert.equal(f.rsv1, false);
      assert.equal(f.json.id, m.id);
      assert.equal(f.json.data, 'a'.repeat(2000));
      // It may still send compressed messages itself.
      await r.write(wsFrame({ opcode: 1, rsv1: true, payload: wsDeflate('{"op":"ping","ref":"b"}') }));
      await r.waitJson((j) => j.ref === 'b');
    } finally {
      r.destroy();
    }
  });

  test('websocket.compression: false → not negotiated, messages still flow', async () => {
    const hc = await startHerald({ config: { websocket: { compression: false } } });
    try {
      const c = await openWS(hc.url, '/ws?topic=nc', { perMessageDeflate: true });
      try {
        assert.equal(c.extensions, '');
        assert.equal(c.upgradeHeaders['sec-websocket-extensions'], undefined);
        const m = await publishOk(hc.url, 'nc', 'n'.repeat(5000));
        const [env] = await c.waitEnvelopes(1);
        assert.equal(env.id, m.id);
        await c.assertUsable();
      } finally {
        c.close();
      }
      const res = await wsHandshake(hc.host, hc.port, '/ws', { headers: { 'Sec-WebSocket-Extensions': 'permessage-deflate' } });
      assert.equal(res.status, 101);
      assert.equal(res.headers['sec-websocket-extensions'], undefined);
    } finally {
      await hc.stop();
    }
  });
});

// ---------------------------------------------------------------------------

describe('heartbeat (heartbeat_s: 1)', () => {
  let hb;
  before(async () => { hb = await startHerald({ config: { heartbeat_s: 1 } }); });
  after(async () => { await hb?.stop(); });

  test('the server pings; a client that answers with pongs stays connected', async () => {
    const c = await openWS(hb.url, '/ws?topic=hb');
    try {
      await c.waitFor(() => c.pings.length >= 2, { timeout: 4000, what: 'two pings' });
      const first = c.pings[0].at;
      // Proving a negative: well past 2 × heartbeat_s, still open.
      await sleep(Math.max(0, 3000 - (Date.now() - first)));
      assert.equal(c.closed, null, `closed: ${JSON.stringify(c.closed)}`);
      assert.ok(c.pings.length >= 3, `pings: ${c.pings.length}`);
      await c.assertUsable();
      const m = await publishOk(hb.url, 'hb', 'still here');
      await c.waitJson((j) => j.id === m.id);
    } finally {
      c.close();
    }
  });

  test('a peer silent after the handshake is closed with 1008 after about 2 × heartbeat_s', async () => {
    const raw = await RawWS.connect(hb.host, hb.port);
    const t0 = Date.now();
    try {
      const frame = await raw.expectClose(1008, { timeout: 6000 });
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 1800 && elapsed <= 4500, `closed after ${elapsed} ms`);
      assert.ok(raw.frames.some((f) => f.opcode === 9), 'it was pinged first');
      assert.ok(frame.reason.length > 0);
    } finally {
      raw.destroy();
    }
  });

  test('pings keep coming while the connection is busy with messages', async () => {
    const c = await openWS(hb.url, '/ws?topic=hb-busy');
    try {
      const started = Date.now();
      while (Date.now() - started < 2600) {
        await publishOk(hb.url, 'hb-busy', 'traffic');
        await sleep(50);
      }
      assert.ok(c.pings.length >= 2, `only ${c.pings.length} pings in 2.6 s of traffic`);
      assert.equal(c.closed, null);
    } finally {
      c.close();
    }
  });

  test('a peer that only receives (never answers pings) is closed with 1008, however busy its stream', async () => {
    const c = await openWS(hb.url, '/ws?topic=hb-deaf', { autoPong: false });
    try {
      const started = Date.now();
      while (!c.closed && Date.now() - started < 6000) {
        await publishOk(hb.url, 'hb-deaf', 'traffic');
        await sleep(50);
      }
      const closed = await c.waitClose({ timeout: 1000 });
      const elapsed = Date.now() - started;
      assert.equal(closed.code, 1008, JSON.stringify(closed));
      assert.ok(elapsed >= 1800 && elapsed <= 4500, `closed after ${elapsed} ms`);
    } finally {
      c.close();
    }
  });

  test('a raw peer that answers every ping with a pong stays connected', async () => {
    const raw = await RawWS.connect(hb.host, hb.port);
    let answered = 0;
    const timer = setInterval(() => {
      const pings = raw.frames.filter((f) => f.opcode === 9);
      while (answered < pings.length) {
        raw.write(wsFrame({ opcode: 10, payload: pings[answered].payload }));
        answered += 1;
      }
    }, 50);
    try {
      await raw.waitFrame(() => raw.frames.filter((f) => f.opcode === 9).length >= 3, { timeout: 5000, what: 'three pings' });
      assert.ok(!raw.frames.some((f) => f.opcode === 8), 'not closed');
      await raw.assertUsable();
    } finally {
      clearInterval(timer);
      raw.destroy();
    }
  });
});

// ---------------------------------------------------------------------------

test('SIGTERM closes WebSocket clients with 1001 and herald exits 0', async () => {
  const hs = await startHerald();
  const plain = await openWS(hs.url, '/ws?topic=bye');
  const deflated = await openWS(hs.url, '/ws?topic=bye', { perMessageDeflate: true });
  const raw = await RawWS.connect(hs.host, hs.port, { path: '/ws?topic=bye' });
  await plain.assertUsable();
  await deflated.assertUsable();
  await raw.assertUsable();
  const stopping = hs.stop();
  try {
    assert.equal((await plain.waitClose()).code, 1001);
    assert.equal((await deflated.waitClose()).code, 1001);
    await raw.expectClose(1001);
  } finally {
    raw.destroy();
    await stopping;
  }
});

// ---------------------------------------------------------------------------

describe('origin allow-list', () => {
  test('websocket.allow_origins: a listed Origin → 101, another → 403 origin_not_allowed, none → 101', async () => {
    const ho = await startHerald({ config: { websocket: { allow_origins: ['http://good.example'] } } });
    try {
      const good = await openWS(ho.url, '/ws', { origin: 'http://good.example' });
      await good.assertUsable();
      good.close();
      await assert.rejects(openWS(ho.url, '/ws', { origin: 'http://evil.example' }),
        (err) => err.status === 403 && err.json?.error === 'origin_not_allowed');
      assertError(await wsHandshake(ho.host, ho.port, '/ws', { headers: { Origin: 'http://evil.example' } }), 403, 'origin_not_allowed');
      assertError(await wsHandshake(ho.host, ho.port, '/ws', { headers: { Origin: 'http://good.example.evil' } }), 403, 'origin_not_allowed');
      const none = await openWS(ho.url, '/ws');
      await none.assertUsable();
      none.close();
    } finally {
      await ho.stop();
    }
  });

  test('websocket.allow_origins: [] refuses every Origin, still allows requests without one', async () => {
    const ho = await startHerald({ config: { websocket: { allow_origins: [] } } });
    try {
      assertError(await wsHandshake(ho.host, ho.port, '/ws', { headers: { Origin: 'http://good.example' } }), 403, 'origin_not_allowed');
      const none = await openWS(ho.url, '/ws');
      await none.assertUsable();
      none.close();
    } finally {
      await ho.stop();
    }
  });
});

// ---------------------------------------------------------------------------

describe('slow consumers', () => {
  test('a subscriber that stops reading is dropped; a reading one gets everything; it can resume', async () => {
    const MSG = 8000;
    const hs = await startHerald({
      config: { limits: { max_outbound_bytes: 16384 }, history: { max_messages: 100000, max_bytes: 64 * 1024 * 1024 } },
    });
    let slow;
    let fast;
    try {
      slow = await RawWS.connect(hs.host, hs.port, { path: '/ws?topic=slow' });
      await slow.assertUsable();
      slow.socket.pause(); // never read again (until the end)
      fast = await openWS(hs.url, '/ws?topic=slow', { perMessageDeflate: true });

      // When herald decides the client is too slow, it logs it; from then on
      // the client must not count (nor be kept) as a subscriber for long.
      let slowAt;
      let slowAtCount;
      const ids = [];
      hs.waitForStderr(/slow consumer/, 60_000).then(() => { slowAt = Date.now(); slowAtCount = ids.length; }, () => {});
      const started = Date.now();
      let subscribers = 2;
      while (subscribers === 2) {
        assert.ok(Date.now() - started < 60_000,
          `the non-reading subscriber was not dropped after ${ids.length} messages of ${MSG} bytes`);
        if (slowAt !== undefined) {
          assert.ok(Date.now() - slowAt < 3000, `herald logged the slow consumer ${Date.now() - slowAt} ms ago `
            + `(after message ${slowAtCount}), yet ${ids.length - slowAtCount} publishes later it still counts as a subscriber`);
        }
        const r = await publishOk(hs.url, 'slow', `${ids.length}:${'s'.repeat(MSG)}`);
        ids.push(r.id);
        subscribers = r.subscribers;
      }
      assert.equal(subscribers, 1, 'the reading subscriber stays subscribed');
      for (let i = 0; i < 5; i++) ids.push((await publishOk(hs.url, 'slow', `${ids.length}:tail`)).id);

      const envs = await fast.waitEnvelopes(ids.length, { timeout: 30_000 });
      assert.deepEqual(envs.map((e) => e.id), ids);
      assert.equal(fast.closed, null);

      // The slow client: what it got is a prefix, in order; then the connection ended.
      slow.socket.resume();
      await slow.conn.waitClose({ timeout: 15_000 });
      const frames = slow.frames;
      const seen = frames.filter((f) => f.json?.type === 'message').map((f) => f.json.id);
      assert.ok(seen.length > 0, 'the slow client received something before it stopped reading');
      assert.ok(seen.length < ids.length, `the slow client must not have received everything (${seen.length})`);
      assert.deepEqual(seen, ids.slice(0, seen.length), 'what it did receive is a prefix, in order');
      // It ended whole: the frame in progress, then close 1013, nothing cut.
      const close = frames.at(-1);
      assert.equal(close.opcode, 8, 'the last frame is a close frame');
      assert.equal(close.code, 1013, `close frame ${JSON.stringify(close.reason)}`);
      assert.equal(parseWsFrames(slow.conn.buf.subarray(slow.bodyStart)).rest.length, 0, 'no partial frame');

      // It resumes from its last id and gets exactly the rest.
      const resumed = await openWS(hs.url, `/ws?topic=slow&since=${seen.at(-1)}`);
      try {
        const rest = ids.slice(seen.length);
        const got = await resumed.waitEnvelopes(rest.length, { timeout: 30_000 });
        assert.deepEqual(got.map((e) => e.id), rest);
      } finally {
        resumed.close();
      }
    } finally {
      slow?.destroy();
      fast?.close();
      await hs.stop();
    }
  });
});
