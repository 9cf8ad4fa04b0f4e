// herald.js's subscribe ops on WebSocket against a scripted server (the
// order of answers a real herald gives only under faults): only the op
// that last added a topic answers for it, so an older op refused after a
// newer one re-added the topic drops nothing the newer op confirmed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocketServer, WebSocket } from 'ws';
import { until } from '../lib/harness.mjs';

globalThis.WebSocket ??= WebSocket;
const { Herald } = await import('../../clients/js/herald.js');

/** A server that acks everything but the first subscribe naming `held`, answered by answerHeld(). */
async function scriptedServer(t, held) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((resolve) => wss.once('listening', resolve));
  const ops = [];
  let pending = null;
  let socket = null;
  wss.on('connection', (ws) => {
    socket = ws;
    ws.on('message', (data) => {
      const op = JSON.parse(String(data));
      ops.push(op);
      if (op.op === 'subscribe' && op.topics.includes(held) && !pending) pending = op;
      else ws.send(JSON.stringify({ type: 'ack', ref: op.ref }));
    });
  });
  return {
    url: `http://127.0.0.1:${wss.address().port}/`,
    ops,
    held: () => pending,
    answerHeld: (error) => socket.send(JSON.stringify({ type: 'error', ref: pending.ref, error, message: 'refused' })),
    close: () => {
      for (const c of wss.clients) c.terminate();
      return new Promise((resolve) => wss.close(resolve));
    },
  };
}

for (const error of ['forbidden', 'unavailable']) {
  test(`an op refused ${error} after the topic was unsubscribed and added again meanwhile leaves it to the newer op`, async (t) => {
    const server = await scriptedServer(t, 'secret');
    const h = new Herald(server.url, { transports: ['websocket'], heartbeat: 1, backoff: { base: 10, cap: 20 } });
    t.after(() => {
      h.close();
      return server.close();
    });
    const errors = [];
    h.on('error', (e) => errors.push(e));
    await new Promise((resolve) => h.on('open', resolve));
    const first = h.subscribe(['x', 'secret']);
    await until(() => server.held() !== null, { what: 'the first subscribe op' });
    await h.unsubscribe('x');
    await h.subscribe('x'); // acked: x is the connection's again
    server.answerHeld(error);
    await first;
    await until(() => errors.length > 0, { what: 'the error event' });
    assert.deepEqual(errors[0].topics, ['secret'], 'the refusal names only the topics the op still owned');
    assert.equal(errors[0].retrying, error === 'unavailable' ? true : undefined);
    assert.deepEqual(h.topics.includes('x'), true, 'x stays in the list');
    assert.equal(h.topics.includes('secret'), error === 'unavailable');
    if (error === 'unavailable') {
      // The retry asks again for what the refused op owned, not for x.
      await until(() => server.ops.filter((o) => o.op === 'subscribe').length >= 3, { what: 'the retry' });
      const retry = server.ops.filter((o) => o.op === 'subscribe').at(-1);
      assert.deepEqual(retry.topics, ['secret']);
    }
    const subs = server.ops.filter((o) => o.op === 'unsubscribe');
    assert.deepEqual(subs.map((o) => o.topics), [['x']], 'x was not unsubscribed again');
  });
}
