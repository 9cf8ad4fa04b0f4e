// Server-Sent Events: wire format (exact bytes), a real EventSource client
// (npm `eventsource`), resume with Last-Event-ID / last_event_id / since,
// gaps, epochs, errors, CORS and slow consumers.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, publishOk, request, assertError, subscribe, openSSE, openEventSource,
  RawConn, SSEStream, startProxy, parseId, ID_RE, sleep,
} from '../lib/harness.mjs';

const RETRY_MS = 1500;
let h;

before(async () => {
  h = await startHerald({ config: { heartbeat_s: 1, sse: { retry_ms: RETRY_MS } } });
});
after(async () => { await h?.stop(); });

const ev = (topic) => `${h.url}/events?topic=${encodeURIComponent(topic)}`;

describe('wire format', () => {
  test('headers, then retry and a comment first', async () => {
    const sse = await subscribe(h.url, '/events?topic=wf-head');
    try {
      assert.match(sse.headers['content-type'], /^text\/event-stream/);
      assert.match(sse.headers['cache-control'] ?? '', /no-cache/);
      assert.equal(sse.headers['x-accel-buffering'], 'no');
      await sse.waitFor((s) => s.lines.length >= 2, { what: 'two preamble lines' });
      assert.ok(sse.stream.raw.startsWith(`retry: ${RETRY_MS}\n`), JSON.stringify(sse.stream.raw.slice(0, 80)));
      assert.equal(sse.stream.lines[1], ': herald');
      assert.equal(sse.stream.retry, RETRY_MS);
      assert.equal(sse.events.length, 0);
    } finally {
      sse.close();
    }
  });

  test('heartbeat ": hb" when idle (heartbeat_s: 1)', async () => {
    const sse = await subscribe(h.url, '/events?topic=wf-hb');
    try {
      await sse.waitFor((s) => s.comments.includes('hb'), { timeout: 3500, what: 'a heartbeat' });
      assert.match(sse.stream.raw, /(^|\n): hb\n/);
      await sse.waitFor((s) => s.comments.filter((c) => c === 'hb').length >= 2, { timeout: 3500, what: 'a second heartbeat' });
    } finally {
      sse.close();
    }
  });

  test('message framing: id, event, one data line per line, blank line', async () => {
    const sse = await subscribe(h.url, '/events?topic=wf-frame');
    try {
      const a = await publishOk(h.url, 'wf-frame', 'single');
      const b = await publishOk(h.url, 'wf-frame', 'l1\nl2\n\nl4', { event: 'multi' });
      const c = await publishOk(h.url, 'wf-frame', 'ends with newline\n');
      const evs = await sse.waitEvents(3);
      assert.equal(evs[0].raw, `id: ${a.id}\ndata: single\n\n`);
      assert.equal(evs[1].raw, `id: ${b.id}\nevent: multi\ndata: l1\ndata: l2\ndata: \ndata: l4\n\n`);
      assert.equal(evs[2].raw, `id: ${c.id}\ndata: ends with newline\ndata: \n\n`);
    } finally {
      sse.close();
    }
  });

  test('requests pipelined behind an SSE request are never answered', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write('GET /events?topic=wf-pipe HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      await conn.waitFor((c) => c.text.includes('\r\n\r\nretry:'), { what: 'the SSE preamble' });
      const r = await publishOk(h.url, 'wf-pipe', 'through');
      await conn.waitFor((c) => c.text.includes(`id: ${r.id}\n`), { what: 'the event' });
      await sleep(300);
      assert.equal((conn.text.match(/HTTP\/1\.1 /g) ?? []).length, 1, conn.text);
    } finally {
      conn.destroy();
    }
  });
});

describe('through the npm eventsource client', () => {
  test('unicode and multi-line data round-trip exactly', async () => {
    const samples = [
      'plain ascii',
      'emoji 😀🎉👍🏽 flags 🇯🇵 zwj 👩‍👩‍👧',
      'CJK 日本語 中文 한국어',
      'combining e\u0301 a\u0308 Z\u0351\u0352\u0353 and precomposed \u00e9',
      'multi\nline\n\nwith empty line',
      '\nleading newline',
      'trailing newline\n',
      ' leading space and trailing space ',
      ':colon first',
      'data: looks like a field\nid: 999\nevent: nope',
      'tabs\tand "quotes" <b>&amp;</b> \\ backslash',
      '\u2028 line separator \u2029 paragraph separator \u0085 NEL',
      'é'.repeat(30000),
      '',
    ];
    const c = await openEventSource(ev('es-unicode'));
    try {
      const ids = [];
      for (const s of samples) ids.push((await publishOk(h.url, 'es-unicode', s)).id);
      const got = await c.wait(samples.length);
      assert.deepEqual(got.map((m) => m.data), samples);
      assert.deepEqual(got.map((m) => m.lastEventId), ids);
    } finally {
      c.close();
    }
  });

  test('\\r in data arrives as \\n over plain SSE (docs/api.md), exact with format=json', async () => {
    const c = await openEventSource(ev('es-cr'));
    const raw = await subscribe(h.url, '/events?topic=es-cr&format=json');
    try {
      await publishOk(h.url, 'es-cr', 'a\rb');
      await publishOk(h.url, 'es-cr', 'c\r\nd');
      const got = await c.wait(2);
      assert.deepEqual(got.map((m) => m.data), ['a\nb', 'c\nd']);
      const evs = await raw.waitEvents(2);
      assert.deepEqual(evs.map((e) => JSON.parse(e.data).data), ['a\rb', 'c\r\nd']);
    } finally {
      c.close();
      raw.close();
    }
  });

  test('event names reach addEventListener, unnamed ones onmessage', async () => {
    const c = await openEventSource(ev('es-names'), { events: ['created', 'updated'] });
    try {
      await publishOk(h.url, 'es-names', 'c1', { event: 'created' });
      await publishOk(h.url, 'es-names', 'm1');
      await publishOk(h.url, 'es-names', 'u1', { headers: { 'X-Event': 'updated' } });
      await publishOk(h.url, 'es-names', 'c2', { event: 'created' });
      await c.wait(2, { type: 'created' });
      await c.wait(1, { type: 'updated' });
      await c.wait(1);
      assert.deepEqual(c.got.created.map((m) => m.data), ['c1', 'c2']);
      assert.deepEqual(c.got.updated.map((m) => m.data), ['u1']);
      assert.deepEqual(c.got.message.map((m) => m.data), ['m1']);
      assert.deepEqual(c.got.all.map((m) => m.data), ['c1', 'm1', 'u1', 'c2']);
    } finally {
      c.close();
    }
  });

  test('several topics on one stream, in publish order, nothing from others', async () => {
    const c = await openEventSource(`${h.url}/events?topic=mt-a&topic=mt-b`);
    try {
      const ids = [];
      ids.push((await publishOk(h.url, 'mt-a', 'a1')).id);
      ids.push((await publishOk(h.url, 'mt-b', 'b1')).id);
      await publishOk(h.url, 'mt-c', 'c1');
      ids.push((await publishOk(h.url, 'mt-a', 'a2')).id);
      const got = await c.wait(3);
      assert.deepEqual(got.map((m) => m.data), ['a1', 'b1', 'a2']);
      assert.deepEqual(got.map((m) => m.lastEventId), ids);
      await sleep(300);
      assert.equal(c.got.message.length, 3);
    } finally {
      c.close();
    }
  });
});

describe('format=json', () => {
  test('data is the envelope; the id line is still sent', async () => {
    const sse = await subscribe(h.url, '/events?topic=fj-a&topic=fj-b&format=json');
    try {
      const t0 = Date.now();
      const a = await publishOk(h.url, 'fj-a', 'with event\nand lines', { event: 'created' });
      const b = await publishOk(h.url, 'fj-b', 'no event 😀');
      const t1 = Date.now();
      const evs = await sse.waitEvents(2);
      const ea = JSON.parse(evs[0].data);
      const eb = JSON.parse(evs[1].data);
      assert.equal(evs[0].id, a.id);
      assert.equal(evs[1].id, b.id);
      assert.equal(evs[0].dataLines.length, 1, 'the envelope is one data line');
      assert.deepEqual(Object.keys(ea).sort(), ['data', 'event', 'id', 'time', 'topic', 'type']);
      assert.deepEqual(Object.keys(eb).sort(), ['data', 'id', 'time', 'topic', 'type']);
      assert.deepEqual({ ...ea, time: 0 }, { type: 'message', topic: 'fj-a', id: a.id, event: 'created', data: 'with event\nand lines', time: 0 });
      assert.deepEqual({ ...eb, time: 0 }, { type: 'message', topic: 'fj-b', id: b.id, data: 'no event 😀', time: 0 });
      for (const e of [ea, eb]) {
        assert.ok(Number.isInteger(e.time) && e.time >= t0 - 1000 && e.time <= t1 + 1000, `time ${e.time} not within [${t0}, ${t1}]`);
      }
      assert.ok(ea.time <= eb.time);
    } finally {
      sse.close();
    }
  });

  test('format=xml → 400 invalid_parameter', async () => {
    const r = await openSSE(h.url, '/events?topic=fj-a&format=xml');
    assertError(r, 400, 'invalid_parameter');
  });
});

describe('resume', () => {
  async function firstThree(topic) {
    const c = await openEventSource(ev(topic));
    const ids = [];
    for (const d of ['m1', 'm2', 'm3']) ids.push((await publishOk(h.url, topic, d)).id);
    await c.wait(3);
    c.close();
    for (const d of ['m4', 'm5', 'm6']) ids.push((await publishOk(h.url, topic, d)).id);
    return ids;
  }

  test('Last-Event-ID header: everything missed, once, then live', async () => {
    const ids = await firstThree('rs-header');
    const c = await openEventSource(ev('rs-header'), { headers: { 'Last-Event-ID': ids[2] } });
    try {
      const got = await c.wait(3);
      assert.deepEqual(got.map((m) => m.data), ['m4', 'm5', 'm6']);
      assert.deepEqual(got.map((m) => m.lastEventId), ids.slice(3));
      await sleep(300);
      assert.equal(c.got.message.length, 3, JSON.stringify(c.got.all));
      const live = await publishOk(h.url, 'rs-header', 'm7');
      await c.wait(4);
      assert.equal(c.got.message[3].lastEventId, live.id);
      assert.equal(c.got.message[3].data, 'm7');
    } finally {
      c.close();
    }
  });

  test('?last_event_id= and ?since= do the same', async () => {
    for (const param of ['last_event_id', 'since']) {
      const topic = `rs-${param}`;
      const ids = await firstThree(topic);
      const sse = await subscribe(h.url, `/events?topic=${topic}&${param}=${ids[2]}`);
      try {
        const evs = await sse.waitEvents(3);
        assert.deepEqual(evs.map((e) => e.data), ['m4', 'm5', 'm6']);
        assert.deepEqual(evs.map((e) => e.id), ids.slice(3));
        assert.ok(evs.every((e) => e.event === undefined), 'no gap for a cursor history still holds');
        await sse.expectNoMore(300);
      } finally {
        sse.close();
      }
    }
  });

  test('the Last-Event-ID header wins over last_event_id', async () => {
    const ids = await firstThree('rs-wins');
    const sse = await subscribe(h.url, `/events?topic=rs-wins&last_event_id=${ids[1]}`, { headers: { 'Last-Event-ID': ids[4] } });
    try {
      const [e] = await sse.waitEvents(1);
      assert.equal(e.id, ids[5]);
      await sse.expectNoMore(300);
    } finally {
      sse.close();
    }
  });

  test('a cursor from one topic works for a set of topics', async () => {
    const cur = await publishOk(h.url, 'rs-x', 'x-before');
    await publishOk(h.url, 'rs-y', 'y-after-1');
    await publishOk(h.url, 'rs-x', 'x-after');
    await publishOk(h.url, 'rs-y', 'y-after-2');
    const sse = await subscribe(h.url, `/events?topic=rs-x&topic=rs-y&last_event_id=${cur.id}`);
    try {
      const evs = await sse.waitEvents(3);
      const byTopic = (prefix) => evs.filter((e) => e.data.startsWith(prefix)).map((e) => e.data);
      assert.deepEqual(byTopic('x'), ['x-after']);
      assert.deepEqual(byTopic('y'), ['y-after-1', 'y-after-2']);
      await sse.expectNoMore(300);
    } finally {
      sse.close();
    }
  });

  test('resuming from the newest id replays nothing', async () => {
    const last = await publishOk(h.url, 'rs-newest', 'only');
    const sse = await subscribe(h.url, `/events?topic=rs-newest&last_event_id=${last.id}`);
    try {
      await sse.expectNoMore(300, { from: 0 });
    } finally {
      sse.close();
    }
  });

  test('without a cursor only later messages arrive', async () => {
    await publishOk(h.url, 'rs-none', 'before');
    const sse = await subscribe(h.url, '/events?topic=rs-none');
    try {
      await publishOk(h.url, 'rs-none', 'after');
      const [e] = await sse.waitEvents(1);
      assert.equal(e.data, 'after');
      await sse.expectNoMore(300, { from: 1 });
    } finally {
      sse.close();
    }
  });

  test("the client's own reconnect after the stream is cut sends Last-Event-ID and loses nothing", async () => {
    const proxy = await startProxy(h.host, h.port);
    let c;
    try {
      c = await openEventSource(`${proxy.url}/events?topic=rs-auto`);
      const first = await publishOk(h.url, 'rs-auto', 'before cut');
      await c.wait(1);
      proxy.hold();
      proxy.sever();
      const missed = await publishOk(h.url, 'rs-auto', 'while away');
      await proxy.waitAccepted(2, { timeout: RETRY_MS * 4 });
      proxy.release();
      const got = await c.wait(2, { timeout: 5000 });
      assert.deepEqual(got.map((m) => m.data), ['before cut', 'while away']);
      assert.equal(got[1].lastEventId, missed.id);
      const reconnect = proxy.requests.filter((r) => r.startsWith('GET /events'))[1];
      assert.match(reconnect, new RegExp(`\\r\\nlast-event-id: ${first.id}\\r\\n`, 'i'));
      await sleep(300);
      assert.equal(c.got.message.length, 2, JSON.stringify(c.got.all));
    } finally {
      c?.close();
      await proxy.close();
    }
  });
});

describe('gaps and epochs', () => {
  test('a cursor older than history: herald-gap {topic, from, to}, then what is held', async () => {
    const hg = await startHerald({ config: { history: { max_messages: 3 } } });
    try {
      const ids = [];
      for (let i = 1; i <= 10; i++) ids.push((await publishOk(hg.url, 'gap-t', `g${i}`)).id);
      for (const how of ['query', 'header']) {
        const sse = how === 'query'
          ? await subscribe(hg.url, `/events?topic=gap-t&last_event_id=${ids[0]}`)
          : await subscribe(hg.url, '/events?topic=gap-t', { headers: { 'Last-Event-ID': ids[0] } });
        try {
          const evs = await sse.waitEvents(4);
          const gap = evs[0];
          assert.equal(gap.event, 'herald-gap', gap.raw);
          assert.equal(gap.id, undefined, `the gap must carry no id line: ${JSON.stringify(gap.raw)}`);
          assert.deepEqual(JSON.parse(gap.data), { topic: 'gap-t', from: ids[0], to: ids[6] });
          assert.equal(gap.raw, `event: herald-gap\ndata: ${JSON.stringify({ topic: 'gap-t', from: ids[0], to: ids[6] })}\n\n`);
          assert.deepEqual(evs.slice(1).map((e) => e.data), ['g8', 'g9', 'g10']);
          assert.deepEqual(evs.slice(1).map((e) => e.id), ids.slice(7));
          await sse.expectNoMore(300);
        } finally {
          sse.close();
        }
      }
      // A cursor history still covers: no gap.
      const ok = await subscribe(hg.url, `/events?topic=gap-t&last_event_id=${ids[6]}`);
      try {
        const evs = await ok.waitEvents(3);
        assert.deepEqual(evs.map((e) => e.data), ['g8', 'g9', 'g10']);
        await ok.expectNoMore(300);
      } finally {
        ok.close();
      }
    } finally {
      await hg.stop();
    }
  });

  test('the gap reaches an EventSource as a herald-gap event without moving lastEventId', async () => {
    const hg = await startHerald({ config: { history: { max_messages: 2 } } });
    try {
      const ids = [];
      for (let i = 1; i <= 5; i++) ids.push((await publishOk(hg.url, 'gap-es', `e${i}`)).id);
      const c = await openEventSource(`${hg.url}/events?topic=gap-es`, { headers: { 'Last-Event-ID': ids[0] }, events: ['herald-gap'] });
      try {
        await c.wait(2);
        const gaps = await c.wait(1, { type: 'herald-gap' });
        assert.deepEqual(JSON.parse(gaps[0].data), { topic: 'gap-es', from: ids[0], to: ids[2] });
        assert.deepEqual(c.got.all.map((m) => m.type), ['herald-gap', 'message', 'message']);
        assert.deepEqual(c.got.message.map((m) => m.data), ['e4', 'e5']);
      } finally {
        c.close();
      }
    } finally {
      await hg.stop();
    }
  });

  test('a cursor from an earlier epoch (restart): gap per topic, then everything held', async () => {
    const h1 = await startHerald();
    const old = await publishOk(h1.url, 'fe-t', 'lost with the restart');
    await h1.stop();
    const h2 = await startHerald();
    try {
      const b1 = await publishOk(h2.url, 'fe-t', 'new 1');
      const b2 = await publishOk(h2.url, 'fe-t', 'new 2');
      const epoch = parseId(b1.id).epoch;
      assert.notEqual(epoch, parseId(old.id).epoch, 'a restart must change the epoch');
      const sse = await subscribe(h2.url, `/events?topic=fe-t&topic=fe-empty&last_event_id=${old.id}`);
      try {
        const evs = await sse.waitEvents(4);
        const gaps = evs.filter((e) => e.event === 'herald-gap');
        const msgs = evs.filter((e) => e.event !== 'herald-gap');
        assert.equal(gaps.length, 2, JSON.stringify(evs.map((e) => e.raw)));
        for (const g of gaps) assert.equal(g.id, undefined);
        assert.deepEqual(gaps.map((g) => JSON.parse(g.data)).sort((x, y) => x.topic.localeCompare(y.topic)), [
          { topic: 'fe-empty', from: old.id, to: `${epoch}-0` },
          { topic: 'fe-t', from: old.id, to: `${epoch}-0` },
        ]);
        const feGap = evs.findIndex((e) => e.event === 'herald-gap' && JSON.parse(e.data).topic === 'fe-t');
        const firstMsg = evs.findIndex((e) => e.event !== 'herald-gap');
        assert.ok(feGap < firstMsg, 'the gap comes before the messages of its topic');
        assert.deepEqual(msgs.map((e) => [e.id, e.data]), [[b1.id, 'new 1'], [b2.id, 'new 2']]);
        await sse.expectNoMore(300);
      } finally {
        sse.close();
      }
    } finally {
      await h2.stop();
    }
  });
});

describe('subscription errors', () => {
  test('a cursor that is not an id → 400 invalid_cursor', async () => {
    for (const bad of ['garbage', '12', '0000000g-1', 'ABCDEF01-1', '00000000-', '-5', '0123abcd-1x', '0123abcd-1-2']) {
      assertError(await openSSE(h.url, `/events?topic=ce&last_event_id=${encodeURIComponent(bad)}`), 400, 'invalid_cursor');
    }
    assertError(await openSSE(h.url, '/events?topic=ce&since=nope'), 400, 'invalid_cursor');
    assertError(await openSSE(h.url, '/events?topic=ce', { headers: { 'Last-Event-ID': 'nope' } }), 400, 'invalid_cursor');
  });

  test('no topic → 400 missing_topic', async () => {
    assertError(await openSSE(h.url, '/events'), 400, 'missing_topic');
    assertError(await openSSE(h.url, '/events?format=json'), 400, 'missing_topic');
  });

  test('an invalid topic → 400 invalid_topic', async () => {
    assertError(await openSSE(h.url, '/events?topic=ok&topic=bad%20topic'), 400, 'invalid_topic');
    assertError(await openSSE(h.url, '/events?topic='), 400, 'invalid_topic');
    assertError(await openSSE(h.url, `/events?topic=${'t'.repeat(201)}`), 400, 'invalid_topic');
  });

  test('more than max_topics_per_subscription → 400 too_many_topics', async () => {
    const hm = await startHerald({ config: { limits: { max_topics_per_subscription: 2 } } });
    try {
      assertError(await openSSE(hm.url, '/events?topic=a&topic=b&topic=c'), 400, 'too_many_topics');
      const sse = await subscribe(hm.url, '/events?topic=a&topic=b');
      sse.close();
    } finally {
      await hm.stop();
    }
  });
});

describe('CORS', () => {
  test('allow_origins ["*"] (default) → Access-Control-Allow-Origin: *', async () => {
    const sse = await subscribe(h.url, '/events?topic=cors-any', { headers: { Origin: 'http://anything.example' } });
    sse.close();
    assert.equal(sse.headers['access-control-allow-origin'], '*');
    const res = await request(`${h.url}/topics/cors-any`, {
      method: 'POST', headers: { Origin: 'http://anything.example', 'Content-Type': 'text/plain' }, body: 'x',
    });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
  });

  test('OPTIONS preflight → 204 with methods, headers, max-age', async () => {
    for (const p of ['/events?topic=x', '/topics/x', '/publish']) {
      const res = await request(`${h.url}${p}`, {
        method: 'OPTIONS',
        headers: {
          Origin: 'http://anything.example',
          'Access-Control-Request-Method': p === '/events?topic=x' ? 'GET' : 'POST',
          'Access-Control-Request-Headers': 'last-event-id, x-event, content-type',
        },
      });
      assert.equal(res.status, 204, `${p}: ${res.status} ${res.text}`);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.ok(res.headers.get('access-control-allow-methods'), 'Access-Control-Allow-Methods');
      const allowHeaders = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
      for (const hd of ['content-type', 'last-event-id', 'x-event', 'authorization']) {
        assert.ok(allowHeaders.includes(hd), `Access-Control-Allow-Headers lacks ${hd}: ${allowHeaders}`);
      }
      assert.match(res.headers.get('access-control-max-age') ?? '', /^\d+$/);
    }
  });

  test('an allow-list echoes a listed Origin (Vary: Origin) and omits others', async () => {
    const hc = await startHerald({ config: { cors: { allow_origins: ['http://allowed.example', 'http://127.0.0.1:3000'] } } });
    try {
      for (const origin of ['http://allowed.example', 'http://127.0.0.1:3000']) {
        const sse = await subscribe(hc.url, '/events?topic=cors-list', { headers: { Origin: origin } });
        sse.close();
        assert.equal(sse.headers['access-control-allow-origin'], origin);
        assert.match(sse.headers.vary ?? '', /\bOrigin\b/i);
      }
      const other = await subscribe(hc.url, '/events?topic=cors-list', { headers: { Origin: 'http://evil.example' } });
      other.close();
      assert.equal(other.headers['access-control-allow-origin'], undefined);
      const pre = await request(`${hc.url}/topics/x`, {
        method: 'OPTIONS',
        headers: { Origin: 'http://allowed.example', 'Access-Control-Request-Method': 'POST' },
      });
      assert.equal(pre.status, 204);
      assert.equal(pre.headers.get('access-control-allow-origin'), 'http://allowed.example');
      const preOther = await request(`${hc.url}/topics/x`, {
        method: 'OPTIONS',
        headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' },
      });
      assert.equal(preOther.headers.get('access-control-allow-origin'), null);
      const pub = await request(`${hc.url}/topics/x`, {
        method: 'POST', headers: { Origin: 'http://evil.example', 'Content-Type': 'text/plain' }, body: 'x',
      });
      assert.equal(pub.headers.get('access-control-allow-origin'), null);
    } finally {
      await hc.stop();
    }
  });
});

describe('slow consumers', () => {
  test('a subscriber that stops reading is disconnected; others keep receiving; it can resume', async () => {
    const MSG = 8000;
    const hs = await startHerald({
      config: {
        limits: { max_outbound_bytes: 16384 },
        history: { max_messages: 100000, max_bytes: 64 * 1024 * 1024 },
      },
    });
    let slow;
    let fast;
    try {
      slow = await RawConn.connect(hs.host, hs.port);
      await slow.write('GET /events?topic=slow HTTP/1.1\r\nHost: t\r\n\r\n');
      await slow.waitFor((c) => /\r\n\r\nretry: \d+\n/.test(c.text), { what: 'the SSE preamble' });
      slow.socket.pause(); // never read again (until the end)
      fast = await subscribe(hs.url, '/events?topic=slow');

      const ids = [];
      const started = Date.now();
      let subscribers = 2;
      while (subscribers === 2) {
        assert.ok(ids.length < 5000 && Date.now() - started < 90_000,
          `the non-reading subscriber was not disconnected after ${ids.length} messages of ${MSG} bytes`);
        const r = await publishOk(hs.url, 'slow', `${ids.length}:${'s'.repeat(MSG)}`);
        ids.push(r.id);
        subscribers = r.subscribers;
      }
      assert.equal(subscribers, 1, 'the reading subscriber stays subscribed');
      for (let i = 0; i < 5; i++) ids.push((await publishOk(hs.url, 'slow', `${ids.length}:tail`)).id);

      // The reading client got every message, in order, without a gap.
      await fast.waitEvents(ids.length, { timeout: 30_000 });
      assert.deepEqual(fast.events.map((e) => e.id), ids);
      assert.equal(fast.stream.ended, false);

      // The slow client's stream was ended: draining its socket reaches EOF.
      slow.socket.resume();
      await slow.waitClose({ timeout: 10_000 });
      const buf = slow.buf;
      const parsed = new SSEStream();
      parsed.feed(buf.subarray(buf.indexOf('\r\n\r\n') + 4).toString('utf8'));
      assert.ok(parsed.raw.endsWith('\n\n'), `the stream ended at an event boundary: ${JSON.stringify(parsed.raw.slice(-40))}`);
      const seen = parsed.events.map((e) => e.id); // complete events only
      assert.ok(seen.length > 0, 'the slow client received something before it stopped reading');
      assert.ok(seen.length < ids.length, `the slow client must not have received everything (${seen.length})`);
      assert.deepEqual(seen, ids.slice(0, seen.length), 'what it did receive is a prefix, in order');

      // It resumes from its last id and gets exactly the rest.
      const cursor = seen.at(-1);
      const resumed = await subscribe(hs.url, `/events?topic=slow&last_event_id=${cursor}`);
      try {
        const rest = ids.slice(seen.length);
        await resumed.waitEvents(rest.length, { timeout: 30_000 });
        assert.deepEqual(resumed.events.map((e) => e.id), rest);
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

describe('sanity', () => {
  test('ids in SSE match the shape of docs/api.md', async () => {
    const sse = await subscribe(h.url, '/events?topic=shape');
    try {
      await publishOk(h.url, 'shape', 'x');
      const [e] = await sse.waitEvents(1);
      assert.match(e.id, ID_RE);
    } finally {
      sse.close();
    }
  });
});
