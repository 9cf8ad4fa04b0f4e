// A WebSocket message trickled in slowly holds its buffer on the server: it
// must complete within 2 × heartbeat_s like any silence, even while the peer
// keeps the connection alive with pings (docs/api.md, close 1008).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, RawWS, wsFrame } from '../lib/harness.mjs';

test('a fragmented message not completed within 2 × heartbeat_s is closed with 1008', async () => {
  const h = await startHerald({ config: { heartbeat_s: 1 } });
  const r = await RawWS.connect(h.host, h.port);
  const keepAlive = setInterval(() => { r.write(wsFrame({ opcode: 9, payload: 'alive' })).catch(() => {}); }, 200);
  try {
    const t0 = Date.now();
    await r.write(wsFrame({ opcode: 1, fin: false, payload: '{"op":"ping",' }));
    const frame = await r.waitCloseFrame({ timeout: 6000 });
    const elapsed = Date.now() - t0;
    assert.equal(frame.code, 1008, JSON.stringify(frame));
    assert.match(frame.reason, /not completed/);
    assert.ok(elapsed >= 1500, `closed after ${elapsed} ms, before 2 × heartbeat_s`);
  } finally {
    clearInterval(keepAlive);
    r.destroy();
    await h.stop();
  }
});

test('a peer that keeps completing messages is not closed', async () => {
  const h = await startHerald({ config: { heartbeat_s: 1 } });
  const r = await RawWS.connect(h.host, h.port);
  try {
    for (let i = 0; i < 12; i++) {
      await r.write(wsFrame({ opcode: 1, fin: false, payload: `{"op":"ping","ref":${i}` }));
      await new Promise((resolve) => setTimeout(resolve, 100));
      await r.write(wsFrame({ opcode: 0, fin: true, payload: '}' }));
      await r.waitJson((j) => j.ref === i);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.equal(r.closed, false);
  } finally {
    r.destroy();
    await h.stop();
  }
});
