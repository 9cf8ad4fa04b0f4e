// Connection limits: limits.max_connections and limits.max_connections_per_ip
// answer 503 too_many_connections and close, without disturbing the
// connections already served. Several 127.x source addresses stand for
// several clients.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, subscribe, curl, RawConn, publish } from '../lib/harness.mjs';

const servers = [];
after(async () => { for (const h of servers) await h.stop(); });

async function healthFrom(h, sourceAddress) {
  const r = await curl(['-s', '--interface', sourceAddress, '-o', '-', '-w', '\n%{http_code}',
    `${h.url}/healthz`]);
  const lines = r.stdout.trimEnd().split('\n');
  return { status: Number(lines.at(-1)), body: lines.slice(0, -1).join('\n') };
}

test('max_connections_per_ip refuses the extra connection of one address only', async () => {
  const h = await startHerald({ config: { limits: { max_connections_per_ip: 2 } } });
  servers.push(h);
  const first = await subscribe(h.url, '/events?topic=ip-a');
  const second = await subscribe(h.url, '/events?topic=ip-a');
  try {
    const refused = await healthFrom(h, '127.0.0.1');
    assert.equal(refused.status, 503);
    assert.equal(JSON.parse(refused.body).error, 'too_many_connections');

    const other = await healthFrom(h, '127.0.0.2');
    assert.equal(other.status, 200, 'another address is not limited by the first one');

    const published = await curl(['-s', '--interface', '127.0.0.3', '-o', '/dev/null', '-w',
      '%{http_code}', '--data-binary', 'still served', `${h.url}/topics/ip-a`]);
    assert.equal(published.stdout, '201');
    const [got] = await first.waitEvents(1);
    assert.equal(got.data, 'still served');
    assert.equal((await second.waitEvents(1))[0].data, 'still served');
  } finally {
    first.close();
    second.close();
  }
  // Closing frees the address's slots again.
  await until200(h, '127.0.0.1');
});

async function until200(h, address) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const r = await healthFrom(h, address);
    if (r.status === 200) return;
    assert.ok(Date.now() < deadline, `still refused after closing: ${r.status}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('max_connections refuses connections over the global limit; connected clients are unaffected', async () => {
  const h = await startHerald({ config: { limits: { max_connections: 3 } } });
  servers.push(h);
  const first = await subscribe(h.url, '/events?topic=global');
  const second = await subscribe(h.url, '/events?topic=global');
  const third = await RawConn.connect(h.host, h.port);
  try {
    const refused = await healthFrom(h, '127.0.0.4');
    assert.equal(refused.status, 503);
    assert.equal(JSON.parse(refused.body).error, 'too_many_connections');
    // The slot held by the third is given back; the subscribers got nothing wrong meanwhile.
    third.destroy();
    await until200(h, '127.0.0.4');
    const res = await publish(h.url, 'global', 'after the refusal');
    assert.equal(res.status, 201);
    for (const client of [first, second]) {
      const [event] = await client.waitEvents(1);
      assert.equal(event.data, 'after the refusal');
    }
  } finally {
    first.close();
    second.close();
    third.destroy();
  }
});

test('answers are never dropped for max_outbound_bytes: a large batch answer, and a pipelining client that does not read', async () => {
  const h = await startHerald({ config: { limits: { max_outbound_bytes: 16384 } } });
  servers.push(h);
  const items = Array.from({ length: 400 }, (_, i) => ({ topic: 'big-answer', data: `m${i}` }));
  const res = await fetch(`${h.url}/publish`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(items),
  });
  assert.equal(res.status, 201);
  const body = await res.json();
  assert.equal(body.messages.length, 400, 'the whole answer arrives, though it is larger than the limit');

  // 2000 pipelined requests (far more answer bytes than the limit): herald
  // stops reading while answers pile up, and answers every one in order.
  const conn = await RawConn.connect(h.host, h.port);
  const n = 2000;
  let requests = '';
  for (let i = 0; i < n; i++) requests += `GET /healthz?i=${i} HTTP/1.1\r\nHost: x\r\n\r\n`;
  conn.socket.pause();
  await conn.write(requests);
  await new Promise((resolve) => setTimeout(resolve, 200));
  conn.socket.resume();
  const responses = await conn.waitResponses(n, { timeout: 20_000 });
  assert.equal(responses.length, n);
  assert.ok(responses.every((r) => r.status === 200));
  conn.destroy();
});

test('a body that stops arriving gets 408 after header_timeout_s; a refused connection is closed at once', async () => {
  // One worker: with several, the second connection may be accepted (by another worker's
  // listener) before the first one, and be the one that holds the slot.
  const h = await startHerald({ config: { workers: 1, limits: { header_timeout_s: 1, max_connections: 1 } } });
  servers.push(h);
  const stalled = await RawConn.connect(h.host, h.port);
  await stalled.write('POST /topics/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab');
  // While the stalled upload holds the only slot, another connection is refused and closed
  // at once — not after the 1 s timeout that would apply to a lingering connection.
  const t0 = Date.now();
  const refused = await RawConn.connect(h.host, h.port);
  await refused.waitClose({ timeout: 900 });
  assert.ok(Date.now() - t0 < 900);
  assert.match(refused.text, /^HTTP\/1\.1 503 /);
  assert.match(refused.text, /too_many_connections/);

  const [res] = await stalled.waitResponses(1, { timeout: 3000 });
  assert.equal(res.status, 408);
  assert.equal(JSON.parse(res.body).error, 'request_timeout');
  await stalled.waitClose();
});
