// Connection limits: limits.max_connections and limits.max_connections_per_ip
// answer 503 too_many_connections and close, without disturbing the
// connections already served. Several 127.x source addresses stand for
// several clients.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import {
  startHerald, subscribe, curl, RawConn, publish, request, until, withTimeout,
} from '../lib/harness.mjs';

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

/**
 * POSTs body on a connection of its own, the body a moment after the head (as
 * over a real network, where it arrives after herald answered); resolves
 * {status, body}, or {error} (EPIPE, ECONNRESET).
 */
function postAlone(h, path, body) {
  return new Promise((resolve) => {
    const req = http.request({
      host: h.host, port: h.port, path, method: 'POST', agent: false,
      headers: { 'content-type': 'text/plain', 'content-length': body.length },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
      res.on('error', (err) => resolve({ error: err.code ?? err.message }));
    });
    req.on('error', (err) => resolve({ error: err.code ?? err.message }));
    req.flushHeaders();
    setTimeout(() => req.end(body), 20);
  });
}

async function metrics(h) {
  const res = await request(`${h.url}/metrics`);
  assert.equal(res.status, 200, res.text);
  const values = new Map();
  for (const line of res.text.split('\n')) {
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) values.set(m[1], Number(m[2]));
  }
  return values;
}

/** /metrics once the server takes connections again (earlier tries may be refused). */
async function metricsWhenServed(h) {
  let values;
  await until(async () => {
    try {
      values = await metrics(h);
      return true;
    } catch {
      return false;
    }
  }, { timeout: 5000, what: '/metrics to be served' });
  return values;
}

/** Connections the log reports as refused for `reason`: one per single line, N per summary line. */
function loggedRefusals(stderr, reason) {
  let total = 0;
  let lines = 0;
  for (const line of stderr.split('\n')) {
    if (!line.includes(reason)) continue;
    const summary = /refusing connections: .*: (\d+) more in the last \d+ ms/.exec(line);
    if (summary) total += Number(summary[1]);
    else if (/refusing \S+: /.test(line)) total += 1;
    else continue;
    lines++;
  }
  return { total, lines };
}

test('40 POSTs of 20 KB to a full server all read the 503, not a reset; refusals are counted and logged in bursts', async () => {
  const h = await startHerald({ config: { limits: { max_connections: 1 } } });
  servers.push(h);
  // Answered, so accepted and counted: the server is full.
  const holder = await RawConn.connect(h.host, h.port);
  await holder.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await holder.waitResponses(1);

  const body = Buffer.alloc(20 * 1024, 'x');
  const results = await Promise.all(Array.from({ length: 40 }, () => postAlone(h, '/topics/full', body)));
  const wrong = results.filter((r) => r.status !== 503);
  assert.deepEqual(wrong, [], `${wrong.length} of 40 did not read the 503`);
  for (const r of results) {
    assert.equal(JSON.parse(r.body).error, 'too_many_connections');
    assert.match(JSON.parse(r.body).message, /limits\.max_connections reached/);
  }
  // The connection that holds the slot was not disturbed.
  await holder.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal((await holder.waitResponses(2)).at(-1).status, 200);
  holder.destroy();

  const m = await metricsWhenServed(h);
  const refused = m.get('herald_connections_refused_total{reason="max_connections"}');
  assert.ok(refused >= 40, `refused counter: ${refused}`);
  assert.ok(m.get('herald_connections_accepted_total') >= 41);
  assert.equal(m.get('herald_connections_refused_total{reason="file_descriptors"}'), 0);
  assert.equal(m.get('herald_accept_errors_total{error="emfile"}'), 0);
  // Every refusal is in the log, summed up: a line a second per worker, not a line each.
  await until(() => loggedRefusals(h.stderr(), 'limits.max_connections reached').total === refused,
    { timeout: 3000, what: `the log to account for ${refused} refusals:\n${h.stderr()}` });
  const { lines } = loggedRefusals(h.stderr(), 'limits.max_connections reached');
  assert.ok(lines <= 8, `${lines} log lines for ${refused} refusals:\n${h.stderr()}`);
});

test('a refused client is read out for a bounded time and number of bytes, then closed', async () => {
  const h = await startHerald({ config: { workers: 1, limits: { max_connections: 1 } } });
  servers.push(h);
  const holder = await RawConn.connect(h.host, h.port);
  await holder.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await holder.waitResponses(1);

  // Reads the 503 but never closes its side: closed by herald after about 2 s, which the
  // client learns from the reset its next byte gets.
  const idle = new RawConn(net.connect({ host: h.host, port: h.port, allowHalfOpen: true }));
  const t0 = Date.now();
  await idle.waitFor((c) => /too_many_connections/.test(c.text), { what: 'the 503' });
  const poking = setInterval(() => idle.write('.'), 100);
  await idle.waitClose({ timeout: 5000 }).finally(() => clearInterval(poking));
  const lingered = Date.now() - t0;
  assert.ok(lingered >= 1500 && lingered < 4000, `closed after ${lingered} ms`);

  // Keeps sending after the 503: cut after a bounded number of bytes, well before the 2 s.
  const flood = new RawConn(net.connect({ host: h.host, port: h.port, allowHalfOpen: true }));
  const t1 = Date.now();
  const chunk = Buffer.alloc(64 * 1024, 'y');
  const sending = (async () => { while (!flood.closed && (await flood.write(chunk))); })();
  await flood.waitClose({ timeout: 5000 });
  await sending;
  assert.ok(Date.now() - t1 < 1500, `closed after ${Date.now() - t1} ms`);

  // Neither held a place: the holder leaves, and the next client is served.
  holder.destroy();
  await metricsWhenServed(h);
});

/** How many descriptors the process has open. */
function openFds(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

test('out of file descriptors: clients read a 503, it is logged and counted, and herald recovers when descriptors free up', async () => {
  const h = await startHerald({ config: { workers: 2 } });
  servers.push(h);
  // Room for a few connections more than herald holds now (the soft limit only: it is put back).
  const pid = String(h.child.pid);
  const soft = execFileSync('prlimit', ['--pid', pid, '--nofile', '--output=SOFT', '--noheadings'],
    { encoding: 'utf8' }).trim();
  execFileSync('prlimit', ['--pid', pid, `--nofile=${openFds(h.child.pid) + 8}:`]);
  try {
    const subscribers = [];
    let refused = null;
    for (let i = 0; i < 20 && refused === null; i++) {
      const conn = await RawConn.connect(h.host, h.port);
      await conn.write('GET /events?topic=fds HTTP/1.1\r\nHost: x\r\n\r\n');
      await conn.waitFor((c) => /^HTTP\/1\.1 \d{3}/.test(c.text) || c.closed, { what: 'an answer' });
      if (/^HTTP\/1\.1 200/.test(conn.text)) subscribers.push(conn);
      else refused = conn;
    }
    assert.ok(refused, 'no connection was refused');
    assert.ok(subscribers.length >= 3, `${subscribers.length} subscribers fit`);
    assert.match(refused.text, /^HTTP\/1\.1 503 /);
    assert.match(refused.text, /"error":"too_many_connections","message":"out of file descriptors\."/);
    await refused.waitClose();
    assert.equal(refused.error, null, `the refused client saw ${refused.error?.code}`);
    await h.waitForStderr(/accept failed: too many open files/);
    await h.waitForStderr(/refusing \S+: out of file descriptors/);

    // Two subscribers leave: their descriptors serve the next clients.
    subscribers.pop().destroy();
    subscribers.pop().destroy();
    const m = await metricsWhenServed(h);
    assert.ok(m.get('herald_accept_errors_total{error="emfile"}') >= 1);
    assert.ok(m.get('herald_connections_refused_total{reason="file_descriptors"}') >= 1);
    // The subscribers that stayed were not disturbed. The /metrics connection's
    // descriptor may still be open in herald (it closes when it reads the EOF),
    // so the publish may be refused once more, with the same clear 503.
    let res;
    await until(async () => {
      res = await publish(h.url, 'fds', 'after');
      if (res.status === 201) return true;
      assert.equal(res.status, 503, `publish answered ${res.status}: ${res.text}`);
      assert.match(res.text, /out of file descriptors/);
      return false;
    }, { timeout: 5000, what: () => `a publish once descriptors are free (last: ${res?.status})` });
    for (const s of subscribers) {
      await s.waitFor((c) => /data: after/.test(c.text), { what: 'the message' });
      s.destroy();
    }
  } finally {
    execFileSync('prlimit', ['--pid', pid, `--nofile=${soft}:`]);
  }
});
