// Graceful shutdown (SPEC §4): on SIGTERM herald stops accepting, answers
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

  await conn.write('GET /healthz HTTP/1.1\r\nHost: herald\r\n');
  h.child.kill('SIGTERM');
  await h.waitForStderr(/shutting down/);
  await conn.write('\r\n');
  const [res] = await conn.waitResponses(1);
  assert.equal(res.status, 503);
  assert.equal(JSON.parse(res.body).error, 'draining');
  assert.match(res.headers.connection ?? '', /close/i);
  await conn.waitClose();

  await sse.waitEnd();
  assert.equal(sse.events.length, 1, 'the stream was flushed, then ended');
  await h.stop();
});
