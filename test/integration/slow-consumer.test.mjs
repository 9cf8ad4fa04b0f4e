// A slow consumer's close reaches it whole (SPEC §4). A subscriber that stops
// reading while large messages are published is dropped once its queue
// passes limits.max_outbound_bytes: herald discards what it had not started
// writing (on TLS: not sealed yet), finishes the frame or event in progress,
// then ends the stream — a WebSocket close 1013, nothing more on SSE — and,
// on TLS, sends close_notify. A client that stalls for longer than the
// header timeout and then reads again gets whole frames (whole events) with
// ids that are a prefix of what was published, then that ending, and
// resumes from its last id. A client that never reads again is reset after
// limits.close_timeout_s.
//
// The clients are raw sockets (plain, or node's tls over one) whose reading
// the test pauses and resumes. Over TLS, the raw socket's EOF is held back
// from the TLS layer for a moment, so that an 'end' before it can only come
// from close_notify (node reports a bare FIN as 'end' too).

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import {
  startHerald, withTimeout, sleep, until, RawConn, parseWsFrames, wsUpgradeRequest, SSEStream, ID_RE,
} from '../lib/harness.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-slow-'));
const certFile = path.join(dir, 'cert.pem');
const keyFile = path.join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
  '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=localhost',
  '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
const ca = readFileSync(certFile);
after(() => { rmSync(dir, { recursive: true, force: true }); });

const MESSAGE = 'x'.repeat(60_000);
const SLOW_LINE = /slow consumer/;

/** POST /topics/{topic} over http or https (trusting the test certificate); resolves the JSON answer. */
function publish(h, useTls, topic, data) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = (useTls ? https : http).request(
      { host: h.host, port: h.port, path: `/topics/${topic}`, method: 'POST', ca, agent: false, servername: 'localhost' },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { text += d; });
        res.on('end', () => {
          if (res.statusCode !== 201) reject(new Error(`publish: ${res.statusCode} ${text}`));
          else resolve(JSON.parse(text));
        });
      });
    req.on('error', reject);
    req.end(data);
  }), 10_000, `publish to ${topic}`);
}

/**
 * A client connection: conn is a RawConn over the plaintext, raw the TCP
 * socket to pause and resume. Over TLS, closeNotify() tells whether the TLS
 * stream ended (close_notify) before the TCP stream did.
 */
async function connect(port, useTls) {
  const raw = await withTimeout(new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  }), 5000, 'TCP connect');
  if (!useTls) return { conn: new RawConn(raw), raw, closeNotify: () => undefined };
  let eofForwarded = false;
  let tlsEnded = false;
  const duplex = new Duplex({
    read() {},
    write(chunk, encoding, done) { raw.write(chunk, done); },
    final(done) { raw.end(); done(); },
  });
  raw.on('data', (d) => duplex.push(d));
  raw.on('end', () => setTimeout(() => { eofForwarded = true; duplex.push(null); }, 300));
  raw.on('error', (err) => duplex.destroy(err));
  raw.on('close', () => setTimeout(() => duplex.destroy(), 300));
  const socket = tls.connect({ socket: duplex, ca, servername: 'localhost' });
  socket.on('end', () => { tlsEnded = !eofForwarded; });
  await withTimeout(new Promise((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  }), 5000, 'the TLS handshake');
  return { conn: new RawConn(socket), raw, closeNotify: () => tlsEnded };
}

const TRANSPORTS = {
  websocket: {
    async open(client, topic, since) {
      await client.conn.write(wsUpgradeRequest(`/ws?topic=${topic}${since ? `&since=${since}` : ''}`));
      await client.conn.waitFor((c) => c.buf.indexOf('\r\n\r\n') !== -1, { what: 'the handshake response' });
      assert.match(client.conn.text, /^HTTP\/1\.1 101 /);
    },
    /** What arrived: the ids of whole message frames, and whether it ended with close 1013 and nothing after. */
    read(client) {
      const buf = client.conn.buf;
      const { frames, rest } = parseWsFrames(buf.subarray(buf.indexOf('\r\n\r\n') + 4));
      const last = frames.at(-1);
      return {
        ids: frames.filter((f) => f.json?.type === 'message').map((f) => f.json.id),
        whole: rest.length === 0,
        ended: last?.opcode === 8 && last.code === 1013,
        describe: () => `${frames.length} frames, last ${JSON.stringify({ opcode: last?.opcode, code: last?.code, reason: last?.reason })}, ${rest.length} bytes of a partial frame after them`,
      };
    },
  },
  sse: {
    async open(client, topic, since) {
      await client.conn.write(`GET /events?topic=${topic}${since ? `&last_event_id=${since}` : ''} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await client.conn.waitFor((c) => /\r\n\r\nretry: \d+\n/.test(c.text), { what: 'the SSE preamble' });
    },
    read(client) {
      const text = client.conn.buf.toString('utf8');
      const body = text.slice(text.indexOf('\r\n\r\n') + 4);
      const stream = new SSEStream();
      stream.feed(body);
      return {
        ids: stream.events.map((e) => e.id),
        whole: body.endsWith('\n\n') && stream.events.every((e) => e.data.length > MESSAGE.length),
        ended: true, // nothing follows the last event
        describe: () => `${stream.events.length} events, ends with ${JSON.stringify(body.slice(-40))}`,
      };
    },
  },
};

/** Publishes large messages until herald has dropped the stalled subscriber; resolves their ids in order. */
async function publishUntilDropped(h, useTls, topic) {
  const ids = [];
  for (let subscribers = 2; subscribers > 1; ) {
    assert.ok(ids.length < 2000, `the stalled subscriber was not dropped after ${ids.length} messages`);
    const res = await publish(h, useTls, topic, `${ids.length}:${MESSAGE}`);
    ids.push(res.id);
    subscribers = res.subscribers; // the stalled one and the bystander
  }
  return ids;
}

/** The ids a client got must be the first ones published: it can resume from the last. */
function assertPrefix(got, published, what) {
  assert.ok(got.length >= 1, `${what}: got no message at all`);
  for (const id of got) assert.match(id ?? '', ID_RE);
  assert.deepEqual(got, published.slice(0, got.length), `${what}: the ids are a prefix of what was published`);
}

/**
 * Starts herald, connects a subscriber that stops reading and a bystander
 * that reads, both of the transport over TLS or not, and publishes until
 * herald has dropped the first one.
 */
async function dropStalledSubscriber(transport, useTls, limits) {
  const h = await startHerald({
    config: { limits: { max_outbound_bytes: 65536, ...limits }, ...(useTls ? { tls: { cert: certFile, key: keyFile } } : {}) },
  });
  const topic = 'slow';
  const clients = [];
  try {
    for (let i = 0; i < 2; i++) {
      clients.push(await connect(h.port, useTls));
      await transport.open(clients[i], topic);
    }
    const [stalled, bystander] = clients;
    stalled.raw.pause();
    const published = await publishUntilDropped(h, useTls, topic);
    await h.waitForStderr(SLOW_LINE);
    const finish = async () => {
      for (const c of clients) c.conn.destroy();
      await h.stop();
    };
    /** A new subscriber from the stalled one's last id gets exactly the rest. */
    const resume = async (since) => {
      clients.push(await connect(h.port, useTls));
      const resumed = clients.at(-1);
      await transport.open(resumed, topic, since);
      const rest = published.slice(published.indexOf(since) + 1);
      await resumed.conn.waitFor(() => transport.read(resumed).ids.length >= rest.length,
        { what: `the ${rest.length} messages after ${since}`, timeout: 10_000 });
      assert.deepEqual(transport.read(resumed).ids, rest);
    };
    return { h, stalled, bystander, published, resume, finish };
  } catch (err) {
    for (const c of clients) c.conn.destroy();
    await h.stop();
    throw err;
  }
}

/** The bystander that reads got every message and is still connected. */
async function assertUndisturbed(transport, bystander, published) {
  await bystander.conn.waitFor(() => transport.read(bystander).ids.length >= published.length,
    { what: `all ${published.length} messages at the bystander`, timeout: 10_000 });
  assert.deepEqual(transport.read(bystander).ids, published);
  assert.equal(bystander.conn.closed, false);
}

for (const useTls of [false, true]) {
  for (const [name, transport] of Object.entries(TRANSPORTS)) {
    const whole = name === 'sse' ? 'events' : 'frames';
    describe(`${name} over ${useTls ? 'TLS' : 'plain TCP'}: a slow consumer's close reaches it whole`, () => {
      test(`it stalls past the decision and the header timeout, then reads: whole ${whole}${name === 'sse' ? '' : ', then close 1013'}${useTls ? ', then close_notify' : ''}`, async () => {
        // A short header timeout: it used to bound how long a dropped consumer had to read its tail.
        const { stalled, bystander, published, resume, finish } = await dropStalledSubscriber(transport, useTls, { header_timeout_s: 1 });
        try {
          // Longer than header_timeout_s (and its 250 ms sweep) after herald decided.
          await sleep(2000);
          stalled.raw.resume();
          await stalled.conn.waitClose({ timeout: 10_000 });

          const got = transport.read(stalled);
          assert.ok(got.whole, `only whole ${whole}: ${got.describe()}`);
          assert.ok(got.ended, `ends as its transport ends a slow consumer: ${got.describe()}`);
          assertPrefix(got.ids, published, 'the stalled subscriber');
          assert.ok(got.ids.length < published.length, 'the stalled subscriber missed the latest messages');
          if (useTls) assert.equal(stalled.closeNotify(), true, 'close_notify came before the TCP FIN');
          await assertUndisturbed(transport, bystander, published);
          await resume(got.ids.at(-1));
        } finally {
          await finish();
        }
      });

      // The bound is the same code for every transport: tried once each way.
      if ((name === 'websocket') === useTls) return;
      test('it never reads its tail: reset after limits.close_timeout_s; the bystander is undisturbed', async () => {
        const { h, stalled, bystander, published, finish } = await dropStalledSubscriber(transport, useTls, { close_timeout_s: 1 });
        try {
          await h.waitForStderr(/closing \S+: it did not read its last output within limits\.close_timeout_s/);
          // A reset: the stalled client's socket leaves ESTABLISHED before it reads a byte. (A FIN
          // would wait behind the bytes it does not read; libuv reports either as EOF once read.)
          const port = stalled.raw.localPort;
          await until(() => execFileSync('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`]).length === 0,
            { timeout: 3000, what: `the client's port ${port} to leave ESTABLISHED` });
          stalled.raw.resume();
          await stalled.conn.waitClose({ timeout: 10_000 });
          const got = transport.read(stalled);
          assert.ok(!got.whole || !got.ended || (useTls && !stalled.closeNotify()), `cut off, not ended cleanly: ${got.describe()}`);
          assertPrefix(got.ids, published, 'the stalled subscriber');
          await assertUndisturbed(transport, bystander, published);
        } finally {
          await finish();
        }
      });
    });
  }
}
