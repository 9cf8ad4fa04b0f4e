// Publishing over HTTP and the HTTP layer itself: status codes and error
// bodies of docs/api.md, limits, malformed input, keep-alive, pipelining,
// slow-loris. After every bad input a bystander SSE client, connected the
// whole time, must still receive what is published afterwards.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, publish, publishOk, publishBatch, request, assertError, subscribe,
  RawConn, rawRequest, curl, parseId, ID_RE,
} from '../lib/harness.mjs';

const MAX_MESSAGE = 4096;

let h;
let bystander;
let bystanderCount = 0;

/** Publishes to the bystander's topic and waits for it: nobody else was disturbed. */
async function bystanderAlive(herald = h, client = bystander) {
  const n = client.events.length;
  bystanderCount += 1;
  const data = `still here ${bystanderCount}`;
  await publishOk(herald.url, 'bystander', data);
  await client.waitEvents(n + 1, { timeout: 5000 });
  assert.equal(client.events[n].data, data);
}

before(async () => {
  h = await startHerald({ config: { limits: { max_message_bytes: MAX_MESSAGE } } });
  bystander = await subscribe(h.url, '/events?topic=bystander');
});

after(async () => {
  bystander?.close();
  await h?.stop();
});

function rawPost(path, body, { headers = '' } = {}) {
  const b = Buffer.from(body);
  return Buffer.concat([
    Buffer.from(`POST ${path} HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n${headers}Content-Length: ${b.length}\r\n\r\n`),
    b,
  ]);
}

describe('POST /topics/{topic}', () => {
  test('answers 201 {id, topic, subscribers} as JSON', async () => {
    const res = await publish(h.url, 'pub-shape', 'hello');
    assert.equal(res.status, 201, res.text);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.deepEqual(Object.keys(res.json).sort(), ['id', 'subscribers', 'topic']);
    assert.match(res.json.id, ID_RE);
    assert.equal(res.json.topic, 'pub-shape');
    assert.equal(res.json.subscribers, 0);
  });

  test('a subscriber receives the data exactly and is counted', async () => {
    const sse = await subscribe(h.url, '/events?topic=pub-one');
    try {
      const r = await publishOk(h.url, 'pub-one', 'hello world');
      assert.equal(r.subscribers, 1);
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.raw, `id: ${r.id}\ndata: hello world\n\n`);
    } finally {
      sse.close();
    }
  });

  test('ids share one epoch and increase across topics', async () => {
    const ids = [];
    for (const t of ['ids-a', 'ids-b', 'ids-c', 'ids-a', 'ids-b']) ids.push((await publishOk(h.url, t, t)).id);
    const parsed = ids.map(parseId);
    for (const p of parsed) assert.equal(p.epoch, parsed[0].epoch);
    for (let i = 1; i < parsed.length; i++) {
      assert.ok(parsed[i].seq > parsed[i - 1].seq, `ids must increase: ${ids.join(' ')}`);
    }
  });

  test('?event= and X-Event name the event; the query wins', async () => {
    const sse = await subscribe(h.url, '/events?topic=pub-events');
    try {
      const a = await publishOk(h.url, 'pub-events', 'one', { event: 'created' });
      const b = await publishOk(h.url, 'pub-events', 'two', { headers: { 'X-Event': 'updated' } });
      const c = await publishOk(h.url, 'pub-events', 'three', { event: 'q.wins', headers: { 'X-Event': 'header-loses' } });
      const evs = await sse.waitEvents(3);
      assert.equal(evs[0].raw, `id: ${a.id}\nevent: created\ndata: one\n\n`);
      assert.equal(evs[1].raw, `id: ${b.id}\nevent: updated\ndata: two\n\n`);
      assert.equal(evs[2].raw, `id: ${c.id}\nevent: q.wins\ndata: three\n\n`);
    } finally {
      sse.close();
    }
  });

  test('form-urlencoded bodies are not decoded', async () => {
    const sse = await subscribe(h.url, '/events?topic=pub-form');
    try {
      await publishOk(h.url, 'pub-form', 'a=b+c%20d&e', { contentType: 'application/x-www-form-urlencoded' });
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.data, 'a=b+c%20d&e');
    } finally {
      sse.close();
    }
  });

  test('empty data is allowed', async () => {
    const sse = await subscribe(h.url, '/events?topic=pub-empty');
    try {
      const r = await publishOk(h.url, 'pub-empty', '');
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.id, r.id);
      assert.equal(ev.data, '');
    } finally {
      sse.close();
    }
  });

  test('topic names: every allowed character, 200 bytes, percent-decoded path', async () => {
    const odd = 'A-Za_z.0~9:x/y@z';
    assert.equal((await publishOk(h.url, odd, 'x')).topic, odd);
    const long = 't'.repeat(200);
    assert.equal((await publishOk(h.url, long, 'x')).topic, long);
    const r = await publishOk(h.url, 'pct%3Atopic%40x', 'x');
    assert.equal(r.topic, 'pct:topic@x');
  });

  test('data of exactly max_message_bytes is accepted', async () => {
    const r = await publishOk(h.url, 'pub-max', 'x'.repeat(MAX_MESSAGE));
    assert.equal(r.topic, 'pub-max');
  });

  test('curl publishes, and a subscriber receives it', async () => {
    const sse = await subscribe(h.url, '/events?topic=pub-curl');
    try {
      const r = await curl(['-X', 'POST', '-H', 'Content-Type: text/plain', '--data-binary', '@-',
        '-w', '\n%{http_code}', `${h.url}/topics/pub-curl?event=from-curl`], { input: 'sent by curl' });
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.split('\n');
      assert.equal(lines.at(-1), '201', r.stdout);
      const json = JSON.parse(lines[0]);
      assert.equal(json.topic, 'pub-curl');
      assert.equal(json.subscribers, 1);
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.raw, `id: ${json.id}\nevent: from-curl\ndata: sent by curl\n\n`);
    } finally {
      sse.close();
    }
  });
});

describe('POST /publish (batch)', () => {
  test('publishes every item in order: 201 {messages}', async () => {
    const sse = await subscribe(h.url, '/events?topic=batch-a&topic=batch-b');
    try {
      const res = await publishBatch(h.url, [
        { topic: 'batch-a', data: 'first' },
        { topic: 'batch-b', data: 'second', event: 'ev' },
        { topic: 'batch-a', data: 'third\nline' },
      ]);
      assert.equal(res.status, 201, res.text);
      assert.match(res.headers.get('content-type'), /^application\/json/);
      const msgs = res.json.messages;
      assert.equal(msgs.length, 3);
      assert.deepEqual(msgs.map((m) => m.topic), ['batch-a', 'batch-b', 'batch-a']);
      for (const m of msgs) {
        assert.match(m.id, ID_RE);
        assert.equal(m.subscribers, 1);
      }
      const seqs = msgs.map((m) => parseId(m.id).seq);
      assert.ok(seqs[0] < seqs[1] && seqs[1] < seqs[2], msgs.map((m) => m.id).join(' '));
      const evs = await sse.waitEvents(3);
      assert.equal(evs[0].raw, `id: ${msgs[0].id}\ndata: first\n\n`);
      assert.equal(evs[1].raw, `id: ${msgs[1].id}\nevent: ev\ndata: second\n\n`);
      assert.equal(evs[2].raw, `id: ${msgs[2].id}\ndata: third\ndata: line\n\n`);
    } finally {
      sse.close();
    }
  });

  describe('all-or-nothing validation', () => {
    let sse;
    before(async () => { sse = await subscribe(h.url, '/events?topic=batch-x'); });
    after(() => sse?.close());
    afterEach(async () => {
      await sse.expectNoMore(300, { from: 0 });
      await bystanderAlive();
    });

    test('a bad topic in item 1 → 400 naming index 1, nothing published', async () => {
      const res = await publishBatch(h.url, [
        { topic: 'batch-x', data: 'ok' },
        { topic: 'bad topic', data: 'no' },
      ]);
      const err = assertError(res, 400);
      assert.ok(['invalid_topic', 'invalid_json'].includes(err.error), res.text);
      assert.match(err.message, /\b1\b/, `message should name index 1: ${err.message}`);
    });

    test('a bad event in item 2 → 400 naming index 2', async () => {
      const res = await publishBatch(h.url, [
        { topic: 'batch-x', data: 'ok' },
        { topic: 'batch-x', data: 'ok' },
        { topic: 'batch-x', data: 'no', event: 'bad event' },
      ]);
      const err = assertError(res, 400);
      assert.ok(['invalid_event', 'invalid_json'].includes(err.error), res.text);
      assert.match(err.message, /\b2\b/, `message should name index 2: ${err.message}`);
    });

    test('an item without data → 400 invalid_json naming the index', async () => {
      const res = await publishBatch(h.url, [{ topic: 'batch-x', data: 'ok' }, { topic: 'batch-x' }]);
      const err = assertError(res, 400, 'invalid_json');
      assert.match(err.message, /\b1\b/, err.message);
    });

    test('data that is not a string → 400 invalid_json', async () => {
      const res = await publishBatch(h.url, [{ topic: 'batch-x', data: 42 }]);
      const err = assertError(res, 400, 'invalid_json');
      assert.match(err.message, /\b0\b/, err.message);
    });

    test('an item that is not an object → 400 invalid_json', async () => {
      const res = await publishBatch(h.url, [{ topic: 'batch-x', data: 'ok' }, 'nope']);
      const err = assertError(res, 400, 'invalid_json');
      assert.match(err.message, /\b1\b/, err.message);
    });

    test('a body that is not an array → 400 invalid_json', async () => {
      assertError(await publishBatch(h.url, { topic: 'batch-x', data: 'ok' }), 400, 'invalid_json');
    });

    test('a body that is not JSON → 400 invalid_json', async () => {
      assertError(await publishBatch(h.url, '[{"topic":"batch-x","data":"ok"'), 400, 'invalid_json');
    });

    test('without application/json → 415', async () => {
      const res = await request(`${h.url}/publish`, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain' },
        body: JSON.stringify([{ topic: 'batch-x', data: 'ok' }]),
      });
      assertError(res, 415, 'unsupported_media_type');
    });

    test('an item over max_message_bytes → 413', async () => {
      const res = await publishBatch(h.url, [
        { topic: 'batch-x', data: 'ok' },
        { topic: 'batch-x', data: 'y'.repeat(MAX_MESSAGE + 1) },
      ]);
      assertError(res, 413, 'payload_too_large');
    });
  });
});

describe('bad input: a clear error for that client, nobody else disturbed', () => {
  afterEach(() => bystanderAlive());

  test('invalid topic names → 400 invalid_topic', async () => {
    for (const t of ['bad%20topic', 't'.repeat(201), '%C3%BCber', 'a%3Fb', 'semi;colon', 'a%00b']) {
      assertError(await publish(h.url, t, 'x'), 400, 'invalid_topic');
    }
  });

  test('empty topic (POST /topics/) → 400 invalid_topic or 404 not_found', async () => {
    const res = await publish(h.url, '', 'x');
    if (res.status === 404) assertError(res, 404, 'not_found');
    else assertError(res, 400, 'invalid_topic');
  });

  test('invalid event names → 400 invalid_event', async () => {
    assertError(await publish(h.url, 'ev-bad', 'x', { event: 'bad event' }), 400, 'invalid_event');
    assertError(await publish(h.url, 'ev-bad', 'x', { event: 'e'.repeat(65) }), 400, 'invalid_event');
    assertError(await publish(h.url, 'ev-bad', 'x', { event: '' }), 400, 'invalid_event');
    assertError(await publish(h.url, 'ev-bad', 'x', { headers: { 'X-Event': 'a/b' } }), 400, 'invalid_event');
    await publishOk(h.url, 'ev-bad', 'x', { event: `${'e'.repeat(60)}_.:-` });
  });

  test('invalid UTF-8 → 415 unsupported_media_type, nothing published', async () => {
    const sse = await subscribe(h.url, '/events?topic=utf8-bad');
    try {
      const bodies = [
        [0xff], // never valid
        [0x61, 0xc0, 0x80], // overlong NUL
        [0xed, 0xa0, 0x80], // UTF-16 surrogate
        [0xe2, 0x82], // truncated sequence
        [0x80], // lone continuation byte
        [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
      ];
      for (const b of bodies) {
        assertError(await publish(h.url, 'utf8-bad', Buffer.from(b)), 415, 'unsupported_media_type');
      }
      await sse.expectNoMore(300, { from: 0 });
    } finally {
      sse.close();
    }
  });

  test('Content-Length over the limit → 413 before the body is sent, then closed', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write('POST /topics/too-big HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n'
        + `Content-Length: ${MAX_MESSAGE * 100}\r\n\r\n`);
      const [res] = await conn.waitResponses(1);
      assert.equal(res.status, 413, res.head);
      assert.equal(res.json?.error, 'payload_too_large', res.text);
      await conn.waitClose();
    } finally {
      conn.destroy();
    }
  });

  test('Content-Length one over the limit → 413 (real client: curl)', async () => {
    const r = await curl(['-X', 'POST', '-H', 'Content-Type: text/plain', '--data-binary', '@-',
      '-w', '\n%{http_code}', `${h.url}/topics/too-big`], { input: 'z'.repeat(MAX_MESSAGE + 1) });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.equal(lines.at(-1), '413', r.stdout);
    assert.equal(JSON.parse(lines[0]).error, 'payload_too_large');
  });

  test('chunked body over the limit → 413 as soon as it is known, then closed', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write('POST /topics/too-big HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n'
        + 'Transfer-Encoding: chunked\r\n\r\n');
      const chunk = `800\r\n${'c'.repeat(0x800)}\r\n`;
      for (let i = 0; i < 3 && !conn.closed && conn.buf.length === 0; i++) await conn.write(chunk);
      // No terminating chunk is ever sent: the answer must not wait for it.
      const [res] = await conn.waitResponses(1);
      assert.equal(res.status, 413, res.head);
      assert.equal(res.json?.error, 'payload_too_large', res.text);
      await conn.waitClose();
    } finally {
      conn.destroy();
    }
  });

  test('chunked body within the limit is published whole', async () => {
    const sse = await subscribe(h.url, '/events?topic=chunked-ok');
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write('POST /topics/chunked-ok HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n'
        + 'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
      await conn.write('6\r\n world\r\n0\r\n\r\n');
      const [res] = await conn.waitResponses(1);
      assert.equal(res.status, 201, res.text);
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.data, 'hello world');
      assert.equal(ev.id, res.json.id);
    } finally {
      conn.destroy();
      sse.close();
    }
  });

  test('unknown paths → 404 not_found', async () => {
    for (const p of ['/index.html', '/nope', '/topicsx', '/eventsx', '/healthz/x']) {
      assertError(await request(`${h.url}${p}`), 404, 'not_found');
    }
  });

  test('known path, other method → 405 with Allow', async () => {
    const cases = [
      ['GET', '/publish', 'POST'],
      ['PUT', '/topics/x', 'POST'],
      ['DELETE', '/topics/x', 'GET'],
      ['POST', '/events?topic=x', 'GET'],
      ['POST', '/healthz', 'GET'],
    ];
    for (const [method, p, allowed] of cases) {
      const res = await request(`${h.url}${p}`, { method, body: method === 'GET' ? undefined : 'x' });
      assertError(res, 405, 'method_not_allowed');
      const allow = res.headers.get('allow') ?? '';
      assert.ok(allow.split(/,\s*/).includes(allowed), `${method} ${p}: Allow "${allow}" should include ${allowed}`);
    }
  });

  test('a header block over max_header_bytes → 431, then closed', async () => {
    const r = await rawRequest(h.host, h.port,
      `GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ${'b'.repeat(20000)}\r\n\r\n`, { timeout: 5000 });
    assert.equal(r.responses[0]?.status, 431, r.text.slice(0, 500));
    assert.equal(r.responses[0].json?.error, 'headers_too_large');
    assert.equal(r.responses.length, 1, `exactly one answer, then close: ${r.text.slice(0, 1000)}`);
    assert.ok(r.closed, 'connection should be closed after 431');
  });

  test('a request target over max_header_bytes / 2 → 414', async () => {
    const res = await request(`${h.url}/events?topic=${'u'.repeat(9000)}`);
    assertError(res, 414, 'uri_too_long');
  });

  for (const [name, bytes] of [
    ['not HTTP at all', 'HELLO WORLD\r\n\r\n'],
    ['a header line without a colon', 'GET /healthz HTTP/1.1\r\nHost test\r\n\r\n'],
    ['a non-numeric Content-Length', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n'],
    ['a bad chunk size', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n'],
    ['Content-Length with Transfer-Encoding', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    // Request-smuggling shapes (RFC 9112 §6.3, §5.1), each a 400 and a close.
    ['two differing Content-Lengths', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'],
    ['a repeated Content-Length', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc'],
    ['a Content-Length list', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc'],
    ['a bare CR ending the request line', 'GET /healthz HTTP/1.1\rHost: t\r\n\r\n'],
    ['a bare CR inside the headers', 'GET /healthz HTTP/1.1\r\nHost: t\rX: y\r\n\r\n'],
    ['a NUL byte in a header value', 'GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\u0000b\r\n\r\n'],
    ['a NUL byte in a header name', 'GET /healthz HTTP/1.1\r\nHost: t\r\nX\u0000: ab\r\n\r\n'],
    ['whitespace before a header colon', 'GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n'],
    ['a Transfer-Encoding that is not chunked last', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['a chunk size that overflows', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n'],
    ['LF-only chunk lines', 'POST /topics/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n'],
    ['binary garbage', Buffer.from(Array.from({ length: 256 }, (_, i) => (i * 37 + 11) & 0xff))],
  ]) {
    test(`malformed HTTP (${name}) → 400 bad_request, then closed`, async () => {
      const r = await rawRequest(h.host, h.port, bytes, { timeout: 5000 });
      assert.ok(r.responses.length >= 1, `expected a response, got ${JSON.stringify(r.text.slice(0, 500))}`);
      assert.equal(r.responses[0].status, 400, r.text.slice(0, 500));
      assert.equal(r.responses[0].json?.error, 'bad_request', r.text.slice(0, 500));
      assert.equal(r.responses.length, 1, `exactly one answer, then close: ${r.text.slice(0, 1000)}`);
      assert.ok(r.closed, 'connection should be closed after bad_request');
    });
  }

  test('a client that connects and vanishes mid-request disturbs nobody', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    await conn.write('POST /topics/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial');
    conn.destroy();
  });
});

describe('connections', () => {
  test('keep-alive: several requests on one socket', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      let rs = await conn.waitResponses(1);
      assert.equal(rs[0].status, 200);
      await conn.write(rawPost('/topics/keepalive', 'one'));
      rs = await conn.waitResponses(2);
      assert.equal(rs[1].status, 201, rs[1].text);
      await conn.write('GET /nope HTTP/1.1\r\nHost: t\r\n\r\n');
      rs = await conn.waitResponses(3);
      assert.equal(rs[2].status, 404);
      await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      rs = await conn.waitResponses(4);
      assert.equal(rs[3].status, 200);
      assert.equal(conn.closed, false);
    } finally {
      conn.destroy();
    }
  });

  test('pipelining: three requests written at once, three answers in order', async () => {
    const sse = await subscribe(h.url, '/events?topic=pipelined');
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write(Buffer.concat([
        Buffer.from('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n'),
        rawPost('/topics/pipelined', 'abc'),
        Buffer.from('GET /nope HTTP/1.1\r\nHost: t\r\n\r\n'),
      ]));
      const rs = await conn.waitResponses(3);
      assert.deepEqual(rs.map((r) => r.status), [200, 201, 404]);
      assert.equal(rs[0].text.trim(), 'ok');
      assert.equal(rs[1].json.topic, 'pipelined');
      assert.equal(rs[2].json.error, 'not_found');
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.data, 'abc');
    } finally {
      conn.destroy();
      sse.close();
    }
  });

  test('Connection: close is honoured', async () => {
    const r = await rawRequest(h.host, h.port, 'GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n');
    assert.equal(r.responses[0]?.status, 200, r.text);
    assert.ok(r.closed);
  });

  test('HTTP/1.0 without keep-alive: answered, then closed', async () => {
    const r = await rawRequest(h.host, h.port, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.equal(r.responses[0]?.status, 200, r.text);
    assert.ok(r.closed);
  });

  test('GET /healthz → 200 ok text/plain (curl)', async () => {
    const r = await curl(['-i', `${h.url}/healthz`]);
    assert.equal(r.code, 0, r.stderr);
    const [head, body] = r.stdout.split('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 200/);
    assert.match(head, /\r\ncontent-type: text\/plain/i);
    assert.equal(body.trim(), 'ok');
  });

  test('every answer carries a Content-Type', async () => {
    for (const [method, p] of [['GET', '/healthz'], ['GET', '/nope'], ['POST', '/topics/ct'], ['GET', '/publish']]) {
      const res = await request(`${h.url}${p}`, { method, body: method === 'POST' ? 'x' : undefined });
      assert.ok(res.headers.get('content-type'), `${method} ${p} has no Content-Type`);
    }
  });
});

describe('slow clients and header limits (header_timeout_s: 1, max_headers: 10)', () => {
  let hl;
  let watcher;
  before(async () => {
    hl = await startHerald({ config: { limits: { header_timeout_s: 1, max_headers: 10 } } });
    watcher = await subscribe(hl.url, '/events?topic=bystander');
  });
  after(async () => {
    watcher?.close();
    await hl?.stop();
  });
  afterEach(() => bystanderAlive(hl, watcher));

  test('slow-loris: partial headers → 408 request_timeout, then closed', async () => {
    const conn = await RawConn.connect(hl.host, hl.port);
    try {
      const t0 = Date.now();
      await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ');
      const [res] = await conn.waitResponses(1, { timeout: 4000 });
      assert.equal(res.status, 408, res.head);
      assert.equal(res.json?.error, 'request_timeout');
      await conn.waitClose({ timeout: 2000 });
      assert.ok(Date.now() - t0 >= 900, `408 came too early (${Date.now() - t0} ms)`);
    } finally {
      conn.destroy();
    }
  });

  test('slow-loris trickling bytes does not reset the timer', async () => {
    const conn = await RawConn.connect(hl.host, hl.port);
    try {
      const header = 'GET /healthz HTTP/1.1\r\nHost: t\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
      let i = 0;
      const trickle = setInterval(() => {
        if (i < header.length && !conn.closed) conn.write(header[i++]);
      }, 50);
      try {
        const [res] = await conn.waitResponses(1, { timeout: 4000 });
        assert.equal(res.status, 408, res.head);
      } finally {
        clearInterval(trickle);
      }
      await conn.waitClose({ timeout: 2000 });
    } finally {
      conn.destroy();
    }
  });

  test('a connection that sends nothing is closed silently', async () => {
    const conn = await RawConn.connect(hl.host, hl.port);
    try {
      await conn.waitClose({ timeout: 4000 });
      assert.equal(conn.buf.length, 0, `expected no bytes, got ${JSON.stringify(conn.text)}`);
    } finally {
      conn.destroy();
    }
  });

  test('an idle keep-alive connection is closed silently after its answer', async () => {
    const conn = await RawConn.connect(hl.host, hl.port);
    try {
      await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      await conn.waitResponses(1);
      const before = conn.buf.length;
      await conn.waitClose({ timeout: 4000 });
      assert.equal(conn.buf.length, before, 'no bytes after the answer');
    } finally {
      conn.destroy();
    }
  });

  test('an SSE stream is not subject to the header timeout', async () => {
    // The watcher has been connected since before(); make sure it outlives 2 timeouts.
    const sse = await subscribe(hl.url, '/events?topic=long-lived');
    try {
      await new Promise((r) => setTimeout(r, 2200));
      assert.equal(sse.stream.ended, false, 'the SSE stream must stay open');
      const r = await publishOk(hl.url, 'long-lived', 'late');
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.id, r.id);
    } finally {
      sse.close();
    }
  });

  test('more than max_headers headers → 431, then closed', async () => {
    const headers = Array.from({ length: 12 }, (_, i) => `X-H${i}: v\r\n`).join('');
    const r = await rawRequest(hl.host, hl.port, `GET /healthz HTTP/1.1\r\nHost: t\r\n${headers}\r\n`, { timeout: 4000 });
    assert.equal(r.responses[0]?.status, 431, r.text.slice(0, 500));
    assert.equal(r.responses[0].json?.error, 'headers_too_large');
    assert.equal(r.responses.length, 1, `exactly one answer, then close: ${r.text.slice(0, 1000)}`);
    assert.ok(r.closed);
  });

  test('exactly max_headers headers is fine', async () => {
    const headers = Array.from({ length: 8 }, (_, i) => `X-H${i}: v\r\n`).join(''); // + Host + Connection = 10
    const r = await rawRequest(hl.host, hl.port,
      `GET /healthz HTTP/1.1\r\nHost: t\r\n${headers}Connection: close\r\n\r\n`, { timeout: 4000 });
    assert.equal(r.responses[0]?.status, 200, r.text.slice(0, 500));
  });
});
