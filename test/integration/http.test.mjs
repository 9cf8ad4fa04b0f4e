// RFC 9112 / RFC 9110 edges of the HTTP/1.1 layer that llhttp 8.1 leaves to
// herald (docs/api.md "HTTP/1.1"): Host, the absolute-form target, protocol
// versions, transfer codings, Expect: 100-continue, chunk sizes over the body
// limit, empty header names, trailing bytes after a /publish batch, and HEAD
// on every endpoint GET reaches. All over raw sockets, so that the bytes on
// the wire are exactly the ones under test.
//
// A bystander SSE subscriber stays connected the whole time; after every test
// it must still receive what is published: no bad request disturbs it.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  startHerald, publishOk, subscribe, assertError, RawConn, rawRequest, ID_RE,
} from '../lib/harness.mjs';

const MAX_MESSAGE = 4096;
const MAX_REQUEST = 16384;

let h;
let bystander;
let bystanderCount = 0;

before(async () => {
  h = await startHerald({ config: { limits: { max_message_bytes: MAX_MESSAGE, max_request_bytes: MAX_REQUEST } } });
  bystander = await subscribe(h.url, '/events?topic=bystander');
});

after(async () => {
  bystander?.close();
  await h?.stop();
});

afterEach(async () => {
  const n = bystander.events.length;
  const data = `still here ${++bystanderCount}`;
  await publishOk(h.url, 'bystander', data);
  await bystander.waitEvents(n + 1, { timeout: 5000 });
  assert.equal(bystander.events[n].data, data);
});

const post = (target, body, { version = '1.1', headers = '' } = {}) => Buffer.concat([
  Buffer.from(`POST ${target} HTTP/${version}\r\nHost: t\r\nContent-Type: text/plain\r\n${headers}`
    + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`),
  Buffer.from(body),
]);

/** Sends bytes on a fresh connection; asserts exactly one error answer, then the close. */
async function assertRefused(bytes, status, code) {
  const r = await rawRequest(h.host, h.port, bytes, { timeout: 5000 });
  assert.ok(r.responses.length >= 1, `expected a response, got ${JSON.stringify(r.text.slice(0, 500))}`);
  const json = assertError(r.responses[0], status, code);
  assert.equal(r.responses.length, 1, `exactly one answer: ${r.text.slice(0, 1000)}`);
  assert.equal(r.responses[0].headers.connection, 'close', r.text.slice(0, 500));
  assert.ok(r.closed, `connection should be closed after ${status}`);
  return json;
}

/** Sends one request on a fresh connection; resolves its (complete) response and the connection. */
async function exchange(bytes, { method } = {}) {
  const conn = await RawConn.connect(h.host, h.port);
  await conn.write(bytes);
  const [res] = await conn.waitResponses(1, { requestMethods: method ? [method] : [] });
  return { res, conn };
}

describe('Host', () => {
  test('an HTTP/1.1 request without Host → 400 bad_request, then closed', async () => {
    const json = await assertRefused('GET /healthz HTTP/1.1\r\nAccept: */*\r\n\r\n', 400, 'bad_request');
    assert.match(json.message, /Host/);
  });

  test('two Host headers → 400 bad_request, then closed (HTTP/1.1 and HTTP/1.0)', async () => {
    for (const version of ['1.1', '1.0']) {
      const json = await assertRefused(`GET /healthz HTTP/${version}\r\nHost: a\r\nhost: a\r\n\r\n`, 400, 'bad_request');
      assert.match(json.message, /Host/);
    }
  });

  test('an HTTP/1.0 request may omit Host', async () => {
    const r = await rawRequest(h.host, h.port, 'GET /healthz HTTP/1.0\r\n\r\n');
    assert.equal(r.responses[0]?.status, 200, r.text);
  });
});

describe('absolute-form request target', () => {
  test('GET http://host/healthz is routed by its path', async () => {
    const { res, conn } = await exchange('GET http://herald.test/healthz HTTP/1.1\r\nHost: herald.test\r\n\r\n');
    try {
      assert.equal(res.status, 200, res.text);
      assert.equal(res.text, 'ok\n');
      // The connection stays usable: an origin-form request follows on it.
      await conn.write('GET /healthz HTTP/1.1\r\nHost: herald.test\r\n\r\n');
      const rs = await conn.waitResponses(2);
      assert.equal(rs[1].status, 200);
    } finally {
      conn.destroy();
    }
  });

  test('the query is kept; the scheme is case-insensitive; the authority is not the path', async () => {
    const sse = await subscribe(h.url, '/events?topic=absolute');
    try {
      const { res, conn } = await exchange(post('HTTPS://other.example:8443/topics/absolute?event=abs', 'via absolute-form'));
      conn.destroy();
      assert.equal(res.status, 201, res.text);
      assert.equal(res.json.topic, 'absolute');
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.data, 'via absolute-form');
      assert.equal(ev.event, 'abs');

      const poll = await exchange(`GET http://herald.test/poll?topic=absolute&since=${ev.id}&timeout=0 HTTP/1.1\r\nHost: herald.test\r\n\r\n`);
      poll.conn.destroy();
      assert.equal(poll.res.status, 200, poll.res.text);
      assert.deepEqual(poll.res.json.messages, []);   // since= was read: nothing after it
      assert.equal(poll.res.json.more, false);

      // Without a path the target names "/": the console's page, not a 404.
      const root = await exchange('GET http://herald.test?x=1 HTTP/1.1\r\nHost: herald.test\r\n\r\n');
      root.conn.destroy();
      assert.equal(root.res.status, 200);
      assert.equal(root.res.headers['content-type'], 'text/html; charset=utf-8');
    } finally {
      sse.close();
    }
  });
});

describe('HTTP versions', () => {
  for (const version of ['2.0', '3.0', '0.9', '7.3']) {
    test(`HTTP/${version} → 505 http_version_not_supported, then closed`, async () => {
      await assertRefused(`GET /healthz HTTP/${version}\r\nHost: t\r\n\r\n`, 505, 'http_version_not_supported');
    });
  }

  test('the HTTP/2 connection preface (prior knowledge) → 505, then closed', async () => {
    await assertRefused('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 505, 'http_version_not_supported');
  });

  test('a request line without a version (HTTP/0.9) → 505, then closed', async () => {
    await assertRefused('GET /healthz\r\n\r\n', 505, 'http_version_not_supported');
  });

  test('HTTP/1.0 and HTTP/1.1 are answered; a later 1.x minor is read as 1.1 (keep-alive)', async () => {
    const r10 = await rawRequest(h.host, h.port, 'GET /healthz HTTP/1.0\r\nHost: t\r\n\r\n');
    assert.equal(r10.responses[0]?.status, 200, r10.text);
    assert.ok(r10.closed, 'HTTP/1.0 without keep-alive closes');
    for (const version of ['1.1', '1.2']) {
      const { res, conn } = await exchange(`GET /healthz HTTP/${version}\r\nHost: t\r\n\r\n`);
      try {
        assert.equal(res.status, 200, res.text);
        assert.notEqual(res.headers.connection, 'close', `HTTP/${version}: ${res.head}`);
        await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
        assert.equal((await conn.waitResponses(2))[1].status, 200);
      } finally {
        conn.destroy();
      }
    }
  });
});

describe('Transfer-Encoding', () => {
  const chunked = (te, version = '1.1') =>
    `POST /topics/te HTTP/${version}\r\nHost: t\r\nContent-Type: text/plain\r\n${te}\r\n3\r\nabc\r\n0\r\n\r\n`;

  test('a transfer coding other than chunked (gzip, chunked) → 501 not_implemented, then closed', async () => {
    for (const te of ['Transfer-Encoding: gzip, chunked\r\n',
      'Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n',
      'Transfer-Encoding: identity, chunked\r\n']) {
      await assertRefused(chunked(te), 501, 'not_implemented');
    }
  });

  test('a coding that does not end in chunked (gzip), or an empty one → 400 bad_request, then closed', async () => {
    // RFC 9112 §6.3: the body's length cannot be determined: 400 and close, which wins over §6.1's 501.
    for (const te of ['Transfer-Encoding: gzip\r\n', 'Transfer-Encoding: \r\n',
      'Transfer-Encoding:\r\nContent-Length: 3\r\n']) {
      await assertRefused(chunked(te), 400, 'bad_request');
    }
  });

  test('Transfer-Encoding in an HTTP/1.0 request → 400 bad_request, then closed', async () => {
    for (const te of ['Transfer-Encoding: chunked\r\n', 'Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n']) {
      const json = await assertRefused(chunked(te, '1.0'), 400, 'bad_request');
      assert.match(json.message, /HTTP\/1\.0/);
    }
  });

  test('plain chunked still works, and nothing was published to the topic by the refused ones', async () => {
    const { res, conn } = await exchange(chunked('Transfer-Encoding: chunked\r\n'));
    conn.destroy();
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.topic, 'te');
    const info = await exchange('GET /topics/te HTTP/1.1\r\nHost: t\r\n\r\n');
    info.conn.destroy();
    assert.equal(info.res.status, 200, info.res.text);
    assert.equal(info.res.json.last_id, res.json.id, info.res.text);
  });
});

describe('Expect: 100-continue', () => {
  const expecting = (head) => `${head}Host: t\r\nExpect: 100-continue\r\n\r\n`;

  test('a request that may go on gets 100 Continue, then its answer', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write(expecting('POST /topics/expect HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n'));
      await conn.waitFor((c) => c.text.includes('\r\n\r\n'), { what: 'the interim answer' });
      assert.equal(conn.text, 'HTTP/1.1 100 Continue\r\n\r\n');
      await conn.write('hello');
      await conn.waitFor((c) => c.text.includes('201 Created') && c.text.endsWith('}\n'), { what: 'the 201' });
      assert.equal(conn.closed, false);
    } finally {
      conn.destroy();
    }
  });

  test('is ignored in HTTP/1.0: no 100 Continue, the body is read as sent', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write(expecting('POST /topics/expect HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n'));
      await conn.write('hello');
      await conn.waitClose();
      assert.doesNotMatch(conn.text, /100 Continue/);
      assert.match(conn.text, /^HTTP\/1\.1 201 /);
    } finally {
      conn.destroy();
    }
  });

  for (const [name, head, status, code] of [
    ['an unknown path (404)', 'POST /nope HTTP/1.1\r\nContent-Length: 5\r\n', 404, 'not_found'],
    ['another method (405)', 'PUT /topics/expect HTTP/1.1\r\nContent-Length: 5\r\n', 405, 'method_not_allowed'],
    ['a bad topic (400)', 'POST /topics/bad%20topic HTTP/1.1\r\nContent-Length: 5\r\n', 400, 'invalid_topic'],
    ['a bad event (400)', 'POST /topics/expect?event=no%20spaces HTTP/1.1\r\nContent-Length: 5\r\n', 400, 'invalid_event'],
    ['a batch that is not JSON (415)', 'POST /publish HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n', 415, 'unsupported_media_type'],
    ['a Content-Length over the limit (413)', `POST /topics/expect HTTP/1.1\r\nContent-Length: ${MAX_MESSAGE + 1}\r\n`, 413, 'payload_too_large'],
    ['a chunked body to an unknown path (404)', 'POST /nope HTTP/1.1\r\nTransfer-Encoding: chunked\r\n', 404, 'not_found'],
  ]) {
    test(`headers that already decide ${name}: that answer, no 100 Continue, then closed`, async () => {
      // The body is never sent: the answer must come without it.
      await assertRefused(expecting(head), status, code);
    });
  }
});

describe('Expect: 100-continue with tokens', () => {
  const SECRET = 'herald-http-test-secret-0a9b8c7d';
  let ha;
  before(async () => {
    ha = await startHerald({ config: { auth: { jwt_secret: SECRET, anonymous_publish: false } } });
  });
  after(async () => { await ha?.stop(); });

  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  function token(claims) {
    const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
  }

  test('no token where one is needed (401), or one for other topics (403): no 100 Continue', async () => {
    const sse = await subscribe(ha.url, '/events?topic=guarded');
    try {
      const other = token({ herald: { publish: ['elsewhere'] }, exp: Math.floor(Date.now() / 1000) + 300 });
      for (const [auth, status, code] of [['', 401, 'unauthorized'], [`Authorization: Bearer ${other}\r\n`, 403, 'forbidden']]) {
        const r = await rawRequest(ha.host, ha.port,
          `POST /topics/guarded HTTP/1.1\r\nHost: t\r\n${auth}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n`, { timeout: 5000 });
        assert.equal(r.responses.length, 1, r.text);
        assertError(r.responses[0], status, code);
        assert.ok(r.closed, `closed after ${status}`);
      }
      // A token that may publish there gets its 100 Continue, and the subscriber the message.
      const good = token({ herald: { publish: ['guarded'] }, exp: Math.floor(Date.now() / 1000) + 300 });
      const conn = await RawConn.connect(ha.host, ha.port);
      try {
        await conn.write(`POST /topics/guarded HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ${good}\r\n`
          + 'Content-Length: 5\r\nExpect: 100-continue\r\n\r\n');
        await conn.waitFor((c) => c.text === 'HTTP/1.1 100 Continue\r\n\r\n', { what: '100 Continue' });
        await conn.write('hello');
        const [ev] = await sse.waitEvents(1);
        assert.equal(ev.data, 'hello');
      } finally {
        conn.destroy();
      }
    } finally {
      sse.close();
    }
  });
});

describe('trailer fields', () => {
  // RFC 9110 §6.5.1: a trailer field is not merged into the header section.
  // Otherwise a token, a Content-Type or an Origin a proxy never saw in the
  // head (or stripped from it) would count as if the client had sent it there.
  const SECRET = 'herald-http-trailer-secret-5e4d3c2b1a';
  let ha;
  before(async () => {
    ha = await startHerald({ config: { auth: { jwt_secret: SECRET, anonymous_publish: false } } });
  });
  after(async () => { await ha?.stop(); });

  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ herald: { publish: ['*'] } })}`;
  const good = `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
  const chunked = (target, head, body, trailers) => `POST ${target} HTTP/1.1\r\nHost: t\r\n${head}`
    + `Transfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n${trailers}\r\n`;

  test('a token sent as a trailer does not authorize: 401, and nothing is published', async () => {
    const sse = await subscribe(ha.url, '/events?topic=trailed');
    try {
      const r = await rawRequest(ha.host, ha.port,
        chunked('/topics/trailed', '', 'sneaked', `Authorization: Bearer ${good}\r\n`), { timeout: 5000 });
      assert.equal(r.responses.length, 1, r.text);
      assertError(r.responses[0], 401, 'unauthorized');
      // The same token in the head publishes; the subscriber gets only that message.
      const ok = await rawRequest(ha.host, ha.port,
        chunked('/topics/trailed', `Authorization: Bearer ${good}\r\nConnection: close\r\n`, 'in the head', ''), { timeout: 5000 });
      assert.equal(ok.responses[0]?.status, 201, ok.text);
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.data, 'in the head');
      assert.equal(sse.events.length, 1);
    } finally {
      sse.close();
    }
  });

  test('a Content-Type sent as a trailer does not make a batch JSON: 415', async () => {
    const body = JSON.stringify([{ topic: 'trailed', data: 'x' }]);
    const r = await rawRequest(ha.host, ha.port,
      chunked('/publish', `Authorization: Bearer ${good}\r\n`, body, 'Content-Type: application/json\r\n'), { timeout: 5000 });
    assert.equal(r.responses.length, 1, r.text);
    assertError(r.responses[0], 415, 'unsupported_media_type');
  });

  test('trailers still count against max_headers, and the next request on the connection reads its own headers', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      await conn.write(chunked('/topics/trailed', '', 'one', 'X-Trailer: 1\r\n')
        + 'GET /topics/trailed HTTP/1.1\r\nHost: t\r\n\r\n');
      const [first, second] = await conn.waitResponses(2);
      assert.equal(first.status, 201, conn.text);
      assert.equal(second.status, 200, conn.text);
    } finally {
      conn.destroy();
    }
    const many = Array.from({ length: 200 }, (_, i) => `X-T${i}: v\r\n`).join('');
    await assertRefused(chunked('/topics/trailed', '', 'two', many), 431, 'headers_too_large');
  });
});

describe('chunk sizes', () => {
  test('a chunk over the body limit → 413 as soon as its size line is read (not a 408 later)', async () => {
    for (const [target, limit] of [['/topics/chunks', MAX_MESSAGE], ['/publish', MAX_REQUEST]]) {
      const conn = await RawConn.connect(h.host, h.port);
      try {
        await conn.write(`POST ${target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n`
          + `Transfer-Encoding: chunked\r\n\r\n${(limit + 1).toString(16)}\r\n`);
        // header_timeout_s is 10 s: an answer within 2 s is the size check, not the timeout.
        const [res] = await conn.waitResponses(1, { timeout: 2000 });
        assertError(res, 413, 'payload_too_large');
        await conn.waitClose();
      } finally {
        conn.destroy();
      }
    }
  });

  test('a later chunk that would take the body past the limit → 413 before its data', async () => {
    const conn = await RawConn.connect(h.host, h.port);
    try {
      const first = 'a'.repeat(MAX_MESSAGE - 10);
      await conn.write(`POST /topics/chunks HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n`
        + `Transfer-Encoding: chunked\r\n\r\n${first.length.toString(16)}\r\n${first}\r\nb\r\n`);
      const [res] = await conn.waitResponses(1, { timeout: 2000 });
      assertError(res, 413, 'payload_too_large');
      await conn.waitClose();
    } finally {
      conn.destroy();
    }
  });

  test('chunks that add up to exactly the limit are fine', async () => {
    const half = 'x'.repeat(MAX_MESSAGE / 2);
    const hex = half.length.toString(16);
    const { res, conn } = await exchange(`POST /topics/chunks HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n`
      + `Transfer-Encoding: chunked\r\n\r\n${hex}\r\n${half}\r\n${hex}\r\n${half}\r\n0\r\n\r\n`);
    conn.destroy();
    assert.equal(res.status, 201, res.text);
  });
});

describe('header names', () => {
  test('an empty header name (": value") → 400 bad_request, then closed', async () => {
    for (const head of ['GET /healthz HTTP/1.1\r\nHost: t\r\n: value\r\n\r\n',
      'GET /healthz HTTP/1.1\r\n: value\r\nHost: t\r\n\r\n',
      'GET /healthz HTTP/1.1\r\nHost: t\r\n:\r\n\r\n']) {
      const json = await assertRefused(head, 400, 'bad_request');
      assert.match(json.message, /empty header name/);
    }
  });
});

describe('POST /publish: one JSON document', () => {
  const batch = (body) => Buffer.concat([
    Buffer.from(`POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`),
    Buffer.from(body),
  ]);

  test('anything after the array → 400 invalid_json, and nothing is published', async () => {
    const sse = await subscribe(h.url, '/events?topic=trailing');
    try {
      const item = '[{"topic":"trailing","data":"must not arrive"}]';
      for (const body of [`${item} x`, `${item}${item}`, `${item} []`, `${item}\n,`, `${item} \u0001`]) {
        const { res, conn } = await exchange(batch(body));
        try {
          assertError(res, 400, 'invalid_json');
          // A well-formed request with a bad body: the connection stays usable.
          await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
          assert.equal((await conn.waitResponses(2))[1].status, 200);
        } finally {
          conn.destroy();
        }
      }
      const m = await publishOk(h.url, 'trailing', 'first to arrive');
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.id, m.id);
      assert.equal(ev.data, 'first to arrive');
    } finally {
      sse.close();
    }
  });

  test('trailing JSON whitespace is fine', async () => {
    const { res, conn } = await exchange(batch('[{"topic":"trailing-ws","data":"ok"}] \r\n\t\n'));
    conn.destroy();
    assert.equal(res.status, 201, res.text);
    assert.match(res.json.messages[0].id, ID_RE);
  });
});

describe('HEAD', () => {
  /** The HEAD answer and the GET answer for one target, each on a fresh connection. */
  async function headAndGet(target) {
    const head = await exchange(`HEAD ${target} HTTP/1.1\r\nHost: t\r\n\r\n`, { method: 'HEAD' });
    const get = await exchange(`GET ${target} HTTP/1.1\r\nHost: t\r\n\r\n`);
    get.conn.destroy();
    return { head: head.res, headConn: head.conn, get: get.res };
  }

  test('HEAD /healthz, /topics, /topics/{topic}, /poll: the GET\'s status and headers, no body', async () => {
    const first = await publishOk(h.url, 'head-poll', 'one');
    await publishOk(h.url, 'head-poll', 'two');
    for (const target of ['/healthz', '/topics', '/topics/head-poll', `/poll?topic=head-poll&since=${first.id}&timeout=0`]) {
      const { head, headConn, get } = await headAndGet(target);
      try {
        assert.equal(head.status, get.status, `HEAD ${target}: ${head.head}`);
        assert.equal(head.headers['content-type'], get.headers['content-type'], target);
        assert.equal(Number(head.headers['content-length']), get.body.length, `HEAD ${target}: ${head.head}`);
        // No body: the next answer on the connection starts right after the head.
        await headConn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
        const rs = await headConn.waitResponses(2, { requestMethods: ['HEAD', 'GET'] });
        assert.equal(rs[1].status, 200, `after HEAD ${target}: ${headConn.text.slice(0, 800)}`);
        assert.equal(rs[1].text, 'ok\n');
      } finally {
        headConn.destroy();
      }
    }
  });

  test('HEAD /poll does not wait: answered at once with the head a GET would get now', async () => {
    const started = Date.now();
    const { res, conn } = await exchange('HEAD /poll?topic=head-poll-wait&timeout=30 HTTP/1.1\r\nHost: t\r\n\r\n', { method: 'HEAD' });
    conn.destroy();
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    assert.equal(res.status, 200, res.head);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.ok(Number(res.headers['content-length']) > 0, res.head);
  });

  test('HEAD /events: the SSE headers, no body, then closed; nothing is subscribed', async () => {
    const r = await rawRequest(h.host, h.port, 'HEAD /events?topic=head-events HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\r\n', { timeout: 5000 });
    assert.ok(r.closed, `closed after the head: ${r.text}`);
    assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(r.text.endsWith('\r\n\r\n'), `nothing after the head: ${JSON.stringify(r.text)}`);
    assert.match(r.text, /\r\nContent-Type: text\/event-stream/i);
    assert.match(r.text, /\r\nCache-Control: no-cache/i);
    assert.match(r.text, /\r\nAccess-Control-Allow-Origin: /i);
    const m = await publishOk(h.url, 'head-events', 'nobody listens');
    assert.equal(m.subscribers, 0);
  });

  test('HEAD /events with a bad query: the GET\'s error status and headers, no body', async () => {
    const { res, conn } = await exchange('HEAD /events HTTP/1.1\r\nHost: t\r\n\r\n', { method: 'HEAD' });
    try {
      assert.equal(res.status, 400, res.head);
      assert.match(res.headers['content-type'], /^application\/json/);
      assert.ok(Number(res.headers['content-length']) > 0);
      await conn.write('GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n');
      const rs = await conn.waitResponses(2, { requestMethods: ['HEAD', 'GET'] });
      assert.equal(rs[1].status, 200);
    } finally {
      conn.destroy();
    }
  });

  test('HEAD /ws: the 426 a GET without Upgrade gets, no body', async () => {
    const { head, headConn, get } = await headAndGet('/ws');
    headConn.destroy();
    assert.equal(get.status, 426);
    assert.equal(head.status, 426, head.head);
    assert.equal(head.headers.upgrade, 'websocket');
    assert.equal(Number(head.headers['content-length']), get.body.length);
  });

  test('405 answers list HEAD wherever GET is allowed', async () => {
    for (const [method, target, allow] of [
      ['POST', '/events?topic=x', 'GET, HEAD'],
      ['POST', '/poll?topic=x', 'GET, HEAD'],
      ['POST', '/ws', 'GET, HEAD'],
      ['POST', '/healthz', 'GET, HEAD'],
      ['DELETE', '/topics/x', 'GET, HEAD, POST'],
      ['HEAD', '/publish', 'POST'],
    ]) {
      const { res, conn } = await exchange(`${method} ${target} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n`, { method });
      conn.destroy();
      assert.equal(res.status, 405, `${method} ${target}: ${res.head}`);
      assert.equal(res.headers.allow, allow, `${method} ${target}`);
    }
  });
});
