// Access log (issue 15, item 5): a line per response and per stream end at info, on by default
// (access_log), log_format "json" for shippers, and tokens never in stderr.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startHerald, runHerald, request, publish, openSSE, openWS, RawConn, until } from '../lib/harness.mjs';

const TOKEN = 'eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2VuLWJ5dGVz.c2lnbmF0dXJlLWJ5dGVz';

/** The parsed fields of the text lines whose message is msg ("request", "stream ended"). */
function textLines(stderr, msg) {
  return stderr.split('\n').filter((l) => l.includes(` info ${msg} `)).map((l) => {
    const fields = {};
    for (const m of l.slice(l.indexOf(` info ${msg} `)).matchAll(/ (\w+)=("(?:[^"\\]|\\.)*"|\S+)/g))
      fields[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
    return fields;
  });
}

describe('access log', () => {
  test('one line per request: method, path without the token, status, bytes, duration, peer', async () => {
    const h = await startHerald({ config: { auth: { jwt_secret: 'x'.repeat(32) } } });
    try {
      const res = await request(`${h.url}/topics/t1?access_token=${TOKEN}&x=1&access_token=${TOKEN}`, { method: 'POST', body: 'hi' });
      assert.equal(res.status, 401);
      const res2 = await request(`${h.url}/healthz?access%5Ftoken=${TOKEN}`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(res2.status, 200);
      await h.waitForStderr(/path=\/healthz/);
      const [post, health] = textLines(h.stderr(), 'request');
      assert.equal(post.method, 'POST');
      assert.equal(post.path, '/topics/t1?x=1');
      assert.equal(post.status, '401');
      assert.ok(Number(post.bytes) > 100, post.bytes);
      assert.match(post.duration_ms, /^\d+$/);
      assert.match(post.peer, /^127\.0\.0\.1:\d+$/);
      assert.equal(health.path, '/healthz');
      assert.equal(health.status, '200');
      await h.stop();
      // Not a byte of the token, nor of its parts, anywhere in stderr.
      for (const part of [TOKEN, ...TOKEN.split('.'), 'access_token']) assert.ok(!h.stderr().includes(part), part);
    } finally {
      await h.stop();
    }
  });

  test('a 304 of an asset (If-None-Match) is logged and counted like any answer', async () => {
    const h = await startHerald();
    try {
      const first = await request(`${h.url}/herald.js`);
      assert.equal(first.status, 200);
      const etag = first.headers.get('etag');
      const res = await request(`${h.url}/herald.js`, { headers: { 'If-None-Match': etag } });
      assert.equal(res.status, 304);
      await h.waitForStderr(/path=\/herald\.js status=304/);
      const lines = textLines(h.stderr(), 'request').filter((l) => l.path === '/herald.js');
      assert.deepEqual(lines.map((l) => l.status), ['200', '304']);
      assert.ok(Number(lines[1].bytes) > 0, lines[1].bytes);
      const metrics = await request(`${h.url}/metrics`);
      assert.match(metrics.text, /^herald_http_responses_total\{code="304"\} 1$/m);
    } finally {
      await h.stop();
    }
  });

  test('access_log false: no request lines; other clients are served as before', async () => {
    const h = await startHerald({ config: { access_log: false } });
    try {
      assert.equal((await publish(h.url, 'quiet', 'x')).status, 201);
      assert.equal((await request(`${h.url}/nothing`)).status, 404);
      assert.doesNotMatch(h.stderr(), / info (request|stream ended) /);
    } finally {
      await h.stop();
    }
  });

  test('streams log when they end, with the reason; long-polls when answered', async () => {
    const h = await startHerald();
    try {
      const sse = await openSSE(h.url, `/events?topic=s&access_token=${TOKEN}`);
      sse.close();
      await h.waitForStderr(/stream ended transport=sse/);
      const ws = await openWS(h.url, '/ws?topic=w');
      ws.close(1000);
      await h.waitForStderr(/stream ended transport=websocket/);
      // The poll waits until the publish arrives; its line comes with the answer.
      const poll = request(`${h.url}/poll?topic=p&timeout=5`);
      await until(async () => /herald_connections\{transport="poll"\} 1/.test((await request(`${h.url}/metrics`)).text),
        { what: 'the poll to wait' });
      assert.equal((await publish(h.url, 'p', 'go')).status, 201);
      assert.equal((await poll).status, 200);
      await h.waitForStderr(/path=\/poll\S* status=200/);
      const held = await openSSE(h.url, '/events?topic=held');
      await h.stop();
      held.close();
      const [sseEnd, wsEnd, shutdownEnd] = textLines(h.stderr(), 'stream ended');
      assert.deepEqual([sseEnd.transport, sseEnd.status, sseEnd.reason, sseEnd.path],
        ['sse', '200', 'client closed', '/events?topic=s']);
      assert.deepEqual([wsEnd.transport, wsEnd.status, wsEnd.reason], ['websocket', '101', 'client closed']);
      assert.deepEqual([shutdownEnd.path, shutdownEnd.reason], ['/events?topic=held', 'shutdown']);
      assert.ok(!h.stderr().includes(TOKEN.split('.')[1]));
    } finally {
      await h.stop();
    }
  });

  test('a slow consumer and an expired token are named as the reason', async () => {
    const secret = 'y'.repeat(32);
    const h = await startHerald({ config: { heartbeat_s: 1, limits: { max_outbound_bytes: 1024, max_message_bytes: 1048576 }, auth: { jwt_secret: secret } } });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-access-'));
    try {
      const conn = await RawConn.connect(h.host, h.port);
      await conn.write(`GET /events?topic=slow HTTP/1.1\r\nHost: x\r\n\r\n`);
      await until(() => conn.text.includes('retry:'), { what: 'the stream head' });
      conn.socket.pause(); // nobody reads: the queue passes its limit and the stream ends
      const big = 'x'.repeat(1_000_000);
      for (let i = 0; i < 100 && !/reason="slow consumer"/.test(h.stderr()); i++)
        await publish(h.url, 'slow', big);
      await h.waitForStderr(/stream ended transport=sse .*reason="slow consumer"/);

      writeFileSync(path.join(dir, 'secret'), secret);
      const r = await runHerald(['token', '--secret-file', path.join(dir, 'secret'), '--subscribe', '*', '--ttl', '3s']);
      const sse = await openSSE(h.url, `/events?topic=exp&access_token=${r.stdout.trim()}`);
      assert.equal(sse.status, 200);
      // Ends at the first heartbeat (1 s) after exp, at most 4 s from now.
      await h.waitForStderr(/stream ended transport=sse .*reason="token expired"/, 10_000);
      sse.close();
      conn.socket.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await h.stop();
    }
  });
});

describe('log_format json', () => {
  test('every line is one JSON object with time, level, msg and the fields', async () => {
    const h = await startHerald({ config: { log_format: 'json' } });
    try {
      await request(`${h.url}/healthz?access_token=${TOKEN}`);
      await request(`${h.url}/healthz?a=1&access_token=${TOKEN}&b=2`);
      await h.waitForStderr(/"msg":"request"/);
      await h.stop();
      const lines = h.stderr().trim().split('\n').map((l) => JSON.parse(l));
      for (const l of lines) {
        assert.match(l.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.ok(['debug', 'info', 'warn', 'error'].includes(l.level));
        assert.equal(typeof l.msg, 'string');
      }
      const req = lines.find((l) => l.msg === 'request');
      assert.deepEqual({ ...req, time: undefined, peer: undefined, duration_ms: undefined, bytes: undefined },
        { time: undefined, level: 'info', msg: 'request', method: 'GET', path: '/healthz', status: 200, peer: undefined, duration_ms: undefined, bytes: undefined });
      assert.equal(typeof req.bytes, 'number');
      assert.ok(lines.some((l) => l.path === '/healthz?a=1&b=2'));
      assert.ok(lines.some((l) => /^listening on /.test(l.msg)));
      assert.ok(!h.stderr().includes('access_token'));
      assert.ok(!h.stderr().includes(TOKEN));
    } finally {
      await h.stop();
    }
  });
});
