// Bodies and WebSocket messages still being received (docs/api.md,
// "Connection handling"): a request must complete within
// limits.request_timeout_s of its first byte, however steadily it trickles
// in (408), and the bytes unfinished requests and messages hold count against
// limits.max_pending_body_bytes, shared by every worker: past it a new body
// is answered 503 busy and a WebSocket message closed with 1013, while other
// clients go on as before, and closing the holders gives the budget back.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, subscribe, openWS, RawConn, RawWS, wsFrame, request, curl, until,
} from '../lib/harness.mjs';

const servers = [];
after(async () => { for (const h of servers) await h.stop(); });

/** One sample of GET /metrics (no labels, or the one label given as `name{label="v"}`). */
async function metric(h, series) {
  const res = await request(`${h.url}/metrics`);
  assert.equal(res.status, 200);
  const line = res.text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line, `${series} in /metrics`);
  return Number(line.slice(series.length + 1));
}

const PENDING = 'herald_pending_body_bytes';

/** A POST whose head and first bytes are sent, the rest of the declared body never. */
async function partialBody(h, declared, sent) {
  const conn = await RawConn.connect(h.host, h.port);
  await conn.write(`POST /topics/held HTTP/1.1\r\nHost: x\r\nContent-Length: ${declared}\r\n\r\n${'x'.repeat(sent)}`);
  return conn;
}

test('a body trickled a byte at a time gets 408 after request_timeout_s, though no pause reaches header_timeout_s', async () => {
  const h = await startHerald({ config: { limits: { header_timeout_s: 1, request_timeout_s: 2 } } });
  servers.push(h);
  const bystander = await subscribe(h.url, '/events?topic=trickle');
  const conn = await RawConn.connect(h.host, h.port);
  const t0 = Date.now();
  await conn.write('POST /topics/trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n');
  // A byte every 250 ms: each pause is a quarter of header_timeout_s, and 100 bytes take 25 s.
  const trickle = setInterval(() => { conn.write('x'); }, 250);
  try {
    const [res] = await conn.waitResponses(1, { timeout: 4000 });
    const elapsed = Date.now() - t0;
    assert.equal(res.status, 408, res.body);
    const body = JSON.parse(res.body);
    assert.equal(body.error, 'request_timeout');
    assert.match(body.message, /did not complete within 2 s/);
    assert.ok(elapsed >= 1900, `answered after ${elapsed} ms, before request_timeout_s`);
    await conn.waitClose();
  } finally {
    clearInterval(trickle);
    conn.destroy();
  }
  // Nobody else was disturbed.
  const res = await request(`${h.url}/topics/trickle`, { method: 'POST', body: 'after' });
  assert.equal(res.status, 201, res.text);
  assert.equal((await bystander.waitEvents(1))[0].data, 'after');
  bystander.close();
});

test('a request with a complete body within request_timeout_s is answered and keeps its connection', async () => {
  const h = await startHerald({ config: { limits: { request_timeout_s: 1 } } });
  servers.push(h);
  const conn = await RawConn.connect(h.host, h.port);
  try {
    // Three requests on one connection, over more than request_timeout_s in all: the
    // deadline is per request, from its first byte.
    for (let i = 0; i < 3; i++) {
      await conn.write('POST /topics/steady HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await conn.write('cd');
      await conn.waitResponses(i + 1);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    const responses = await conn.waitResponses(3);
    assert.deepEqual(responses.map((r) => r.status), [201, 201, 201]);
    assert.equal(conn.closed, false);
  } finally {
    conn.destroy();
  }
});

test('bodies being received share max_pending_body_bytes across workers: past it 503 busy, other clients unaffected, all of it back once they close', async () => {
  const budget = 4096;
  const h = await startHerald({ config: { workers: 2, limits: { max_pending_body_bytes: budget } } });
  servers.push(h);
  const subscriber = await subscribe(h.url, '/events?topic=budget');
  const publisher = await openWS(h.url, '/ws');
  // Only bytes received count: a body declared but not sent holds nothing.
  const idle = await partialBody(h, 1 << 20, 0);
  // Four uploads that sent 1 KiB each hold the whole budget, whichever worker took them.
  const holders = [idle];
  for (let i = 0; i < 4; i++) holders.push(await partialBody(h, 2048, 1024));
  try {
    await until(async () => (await metric(h, PENDING)) === budget, { what: 'the budget to be held' });

    // A new body is refused as it arrives: 503 busy, Retry-After, connection closed.
    const refused = await RawConn.connect(h.host, h.port);
    await refused.write('POST /topics/budget HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello');
    const [res] = await refused.waitResponses(1);
    assert.equal(res.status, 503, res.body);
    assert.equal(res.headers['retry-after'], '1');
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(JSON.parse(res.body).error, 'busy');
    await refused.waitClose();
    // A chunked body too, as its first chunk arrives (a real client: curl).
    const chunked = await curl(['-s', '-o', '-', '-w', '\n%{http_code}', '-H', 'Transfer-Encoding: chunked',
      '--data-binary', 'chunk', `${h.url}/topics/budget`]);
    assert.match(chunked.stdout, /"error":"busy"[\s\S]*\n503$/);

    // Requests without a body, streams and complete WebSocket messages go on.
    assert.equal((await request(`${h.url}/healthz`)).status, 200);
    const ack = await publisher.call({ op: 'publish', topic: 'budget', data: 'still flowing' });
    assert.equal(ack.type, 'ack', JSON.stringify(ack));
    assert.equal((await subscriber.waitEvents(1))[0].data, 'still flowing');
    assert.equal(await metric(h, 'herald_pending_body_refusals_total{protocol="http"}'), 2);
  } finally {
    for (const c of holders) c.destroy();
  }
  await until(async () => (await metric(h, PENDING)) === 0, { what: 'the budget to be given back' });
  const res = await request(`${h.url}/topics/budget`, { method: 'POST', body: 'x'.repeat(3000) });
  assert.equal(res.status, 201, res.text);
  assert.equal((await subscriber.waitEvents(2))[1].data.length, 3000);
  subscriber.close();
  publisher.close();
});

test('bodies refused (413), answered, or cut by a timeout give their share back', async () => {
  const h = await startHerald({
    config: { limits: { max_pending_body_bytes: 4096, max_message_bytes: 2048, header_timeout_s: 1 } },
  });
  servers.push(h);
  // A chunked body is counted as it arrives; once over max_message_bytes: 413, closed, given back.
  const oversized = await RawConn.connect(h.host, h.port);
  await oversized.write(`POST /topics/held HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${(1000).toString(16)}\r\n${'y'.repeat(1000)}\r\n`);
  await until(async () => (await metric(h, PENDING)) === 1000, { what: 'the first chunk to be held' });
  await oversized.write(`${(2000).toString(16)}\r\n${'y'.repeat(2000)}\r\n`);
  const [big] = await oversized.waitResponses(1);
  assert.equal(big.status, 413);
  assert.equal(await metric(h, PENDING), 0);
  await oversized.waitClose();
  // An answered request holds nothing afterwards.
  const res = await request(`${h.url}/topics/held`, { method: 'POST', body: 'z'.repeat(2000) });
  assert.equal(res.status, 201, res.text);
  assert.equal(await metric(h, PENDING), 0);
  // A stalled upload meets header_timeout_s: 408, and what it sent is given back.
  const stalled = await partialBody(h, 1024, 10);
  await until(async () => (await metric(h, PENDING)) === 10, { what: 'the upload to be held' });
  const [timedOut] = await stalled.waitResponses(1, { timeout: 3000 });
  assert.equal(timedOut.status, 408);
  assert.equal(await metric(h, PENDING), 0);
  await stalled.waitClose();
});

test('a WebSocket message being received counts against the same budget: past it 1013, and the budget comes back', async () => {
  const h = await startHerald({ config: { limits: { max_pending_body_bytes: 5000 } } });
  servers.push(h);
  const subscriber = await subscribe(h.url, '/events?topic=ws-budget');
  const start = '{"op":"publish","topic":"ws-budget","data":"';
  // First fragments of 1.5 KB: two hold more than 3 KB of the budget, a third does not fit.
  const fragment = start + 'z'.repeat(1500 - start.length);
  const holders = [await RawWS.connect(h.host, h.port), await RawWS.connect(h.host, h.port)];
  const third = await RawWS.connect(h.host, h.port);
  try {
    for (const ws of holders) await ws.write(wsFrame({ opcode: 1, fin: false, payload: fragment }));
    await until(async () => (await metric(h, PENDING)) >= 3000, { what: 'two messages to be held' });
    // The third message would pass the budget: closed with 1013, try again later.
    await third.write(wsFrame({ opcode: 1, fin: false, payload: fragment }));
    const frame = await third.expectClose(1013);
    assert.match(frame.reason, /busy/);
    assert.equal(await metric(h, 'herald_pending_body_refusals_total{protocol="websocket"}'), 1);
    // The holders, and everyone else, are served meanwhile.
    const res = await request(`${h.url}/topics/ws-budget`, { method: 'POST', body: 'small' });
    assert.equal(res.status, 201, res.text);
    assert.equal((await subscriber.waitEvents(1))[0].data, 'small');
    await holders[0].write(wsFrame({ opcode: 0, fin: true, payload: '","ref":"done"}' }));
    const ack = await holders[0].waitJson((j) => j.ref === 'done');
    assert.equal(ack.type, 'ack', JSON.stringify(ack));
    assert.equal((await subscriber.waitEvents(2))[1].data.length, 1500 - start.length);
  } finally {
    for (const ws of [...holders, third]) ws.destroy();
  }
  await until(async () => (await metric(h, PENDING)) === 0, { what: 'the budget to be given back' });
  // A new fragmented message is taken whole.
  const again = await RawWS.connect(h.host, h.port);
  await again.write(wsFrame({ opcode: 1, fin: false, payload: fragment }));
  await again.write(wsFrame({ opcode: 0, fin: true, payload: '","ref":"again"}' }));
  assert.equal((await again.waitJson((j) => j.ref === 'again')).type, 'ack');
  again.destroy();
  subscriber.close();
});
