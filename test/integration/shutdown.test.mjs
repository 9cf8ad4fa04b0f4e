// Graceful shutdown (README, docs/protocol.md): on SIGTERM herald stops accepting, answers
// the requests already under way (health checks then say 503 draining),
// ends SSE streams after flushing them, and exits 0.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, subscribe, publishOk, RawConn } from '../lib/harness.mjs';

test('a request under way when SIGTERM arrives is answered 503 draining, then closed', async () => {
  const h = await startHerald({ config: { shutdown_grace_s: 5 } });
  const conn = await RawConn.connect(h.host, h.port);
  const sse = await subscribe(h.url, '/events?topic=drain');
  await publishOk(h.url, 'drain', 'before the end');
  await sse.waitEvents(1);

  // A complete request in the same write as the partial one: once it is answered,
  // herald has read the partial request too, so it is under way at the SIGTERM.
  await conn.write('GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\nGET /healthz HTTP/1.1\r\nHost: herald\r\n');
  await conn.waitResponses(1);
  h.child.kill('SIGTERM');
  await h.waitForStderr(/shutting down/);
  await conn.write('\r\n');
  const [, res] = await conn.waitResponses(2);
  assert.equal(res.status, 503);
  assert.equal(JSON.parse(res.body).error, 'draining');
  assert.match(res.headers.connection ?? '', /close/i);
  await conn.waitClose();

  await sse.waitEnd();
  assert.equal(sse.events.length, 1, 'the stream was flushed, then ended');
  await h.stop();
});

test('streams whose requests complete during the drain are ended at once (SSE end, WebSocket 1001)', async () => {
  const h = await startHerald({ config: { shutdown_grace_s: 10 } });
  const sse = await RawConn.connect(h.host, h.port);
  const ws = await RawConn.connect(h.host, h.port);
  // As above: a complete request first, in the same write, shows the partial one was read.
  const ready = 'GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n';
  await sse.write(`${ready}GET /events?topic=late HTTP/1.1\r\nHost: herald\r\n`);
  await ws.write(`${ready}GET /ws HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
    + 'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n');
  await sse.waitResponses(1);
  await ws.waitResponses(1);
  const t0 = Date.now();
  h.child.kill('SIGTERM');
  await h.waitForStderr(/shutting down/);
  await sse.write('\r\n');
  await ws.write('\r\n');
  await sse.waitClose({ timeout: 3000 });
  assert.match(sse.text, /^HTTP\/1\.1 200 [^]*HTTP\/1\.1 200 [^]*text\/event-stream/);
  await ws.waitFor((c) => c.buf.includes(Buffer.from([0x88])), { what: 'a close frame' });
  const close = ws.buf.subarray(ws.buf.indexOf(Buffer.from([0x88])));
  assert.equal(close.readUInt16BE(2), 1001);
  ws.destroy();
  await h.stop();
  assert.ok(Date.now() - t0 < 5000, 'herald did not wait for the 10 s grace period');
});
