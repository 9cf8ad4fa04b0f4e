// TLS on the listeners (docs/api.md): with tls.cert and tls.key every listener
// speaks HTTPS and WSS. Real clients (curl, node's https and tls modules, the
// npm ws client) trust a self-signed certificate made for 127.0.0.1 with the
// openssl CLI; every transport works over it, large messages and bursts
// arrive intact and in order (partial writes of ciphertext), backpressure
// still drops slow readers, and a client that does not speak TLS, or breaks
// off its handshake, loses its own connection only.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { randomBytes, X509Certificate } from 'node:crypto';
import {
  startHerald, runHerald, writeConfig, assertSanitizerClean, subscribe, openWS, curl, RawConn,
  withTimeout, ID_RE,
} from '../lib/harness.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-tls-'));
const certFile = path.join(dir, 'cert.pem');
const keyFile = path.join(dir, 'key.pem');
const otherKeyFile = path.join(dir, 'other-key.pem');

function makeCertificate(cert, key) {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
}
makeCertificate(certFile, keyFile);
makeCertificate(path.join(dir, 'other-cert.pem'), otherKeyFile);
const ca = readFileSync(certFile);
const tlsConfig = { cert: certFile, key: keyFile };

after(() => { rmSync(dir, { recursive: true, force: true }); });

/** An HTTPS request trusting the test certificate; resolves {status, headers, text, json}. */
function httpsRequest(url, { method = 'GET', body, headers = {}, timeout = 10_000 } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers, ca, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  }), timeout, `${method} ${url}`);
}

async function publishTls(base, topic, data) {
  const res = await httpsRequest(`${base}/topics/${topic}`, { method: 'POST', body: data });
  assert.equal(res.status, 201, `publish to ${topic}: ${res.status} ${res.text}`);
  assert.match(res.json.id, ID_RE);
  return res.json;
}

/** A raw TLS connection (node's tls module) wrapped like a raw TCP one. */
function connectTls(port, { timeout = 5000 } = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' });
    socket.once('secureConnect', () => resolve(new RawConn(socket)));
    socket.once('error', reject);
  }), timeout, `TLS connect to port ${port}`);
}

/** The first flight of a real TLS client (node's), captured by a plain TCP server. */
async function captureClientHello() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const hello = new Promise((resolve) => server.once('connection', (s) => s.once('data', (d) => {
    resolve(d);
    s.destroy();
  })));
  const client = tls.connect({ host: '127.0.0.1', port: server.address().port, servername: 'localhost', ca });
  client.on('error', () => {});
  try {
    return await withTimeout(hello, 5000, 'a ClientHello');
  } finally {
    client.destroy();
    server.close();
  }
}

describe('TLS listener', () => {
  let h;
  let base;
  before(async () => {
    // Two workers share the one TLS context (CTest also runs this file under
    // ThreadSanitizer); room for the burst below in a paused reader's queue.
    h = await startHerald({
      config: { tls: tlsConfig, workers: 2, log_level: 'debug', limits: { max_outbound_bytes: 64 * 1024 * 1024 } },
    });
    assert.match(h.stderr(), /listening on https:\/\/127\.0\.0\.1:\d+/);
    base = `https://127.0.0.1:${h.port}`;
  });
  after(async () => { await h?.stop(); });

  test('curl: GET /healthz and POST /topics/{topic} over https', async () => {
    const health = await curl(['--cacert', certFile, `${base}/healthz`]);
    assert.equal(health.code, 0, health.stderr);
    assert.equal(health.stdout, 'ok\n');
    const pub = await curl(['--cacert', certFile, '-d', 'hello', `${base}/topics/tls-curl`]);
    assert.equal(pub.code, 0, pub.stderr);
    const json = JSON.parse(pub.stdout);
    assert.match(json.id, ID_RE);
    assert.equal(json.topic, 'tls-curl');
    // TLS 1.2 is the floor: an older protocol is refused.
    const old = await curl(['--cacert', certFile, '--tlsv1.1', '--tls-max', '1.1', `${base}/healthz`]);
    assert.notEqual(old.code, 0, 'a TLS 1.1 handshake must fail');
  });

  test('SSE over https receives a published message', async () => {
    const sse = await subscribe(base, '/events?topic=tls-sse', { ca });
    try {
      const { id } = await publishTls(base, 'tls-sse', 'over tls');
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.id, id);
      assert.equal(ev.data, 'over tls');
    } finally {
      sse.close();
    }
  });

  test('WebSocket over wss: subscribe, receive, publish with the op', async () => {
    const ws = await openWS(base, '/ws', { ca });
    try {
      await ws.ok({ op: 'subscribe', topics: ['tls-ws'] });
      const { id } = await publishTls(base, 'tls-ws', 'from https');
      const ack = await ws.ok({ op: 'publish', topic: 'tls-ws', data: 'from wss' });
      assert.match(ack.id, ID_RE);
      const envs = await ws.waitEnvelopes(2, { topic: 'tls-ws' });
      assert.deepEqual(envs.map((e) => [e.id, e.data]), [[id, 'from https'], [ack.id, 'from wss']]);
    } finally {
      ws.ws.terminate();
    }
  });

  test('long-poll over https waits for the next message', async () => {
    const { id: first } = await publishTls(base, 'tls-poll', 'one');
    const poll = httpsRequest(`${base}/poll?topic=tls-poll&since=${first}&timeout=10`);
    await new Promise((r) => setTimeout(r, 200));
    const { id: second } = await publishTls(base, 'tls-poll', 'two');
    const res = await poll;
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.messages.map((m) => [m.id, m.data]), [[second, 'two']]);
    assert.equal(res.json.cursor, second);
  });

  test('a 60 KiB message and a burst of 500 (8 MiB) arrive intact and in order (SSE and wss)', async () => {
    const sse = await subscribe(base, '/events?topic=tls-burst', { ca });
    const ws = await openWS(base, '/ws?topic=tls-burst', { ca });
    try {
      // The SSE reader stops reading during the burst, so that the socket fills
      // and herald's writes of ciphertext are partial; it reads again after.
      sse.req.socket.pause();
      const big = randomBytes(30 * 1024).toString('hex'); // 60 KiB of text
      const sent = [[(await publishTls(base, 'tls-burst', big)).id, big]];
      // The burst goes through one keep-alive TLS connection (curl reads the bodies from stdin).
      const N = 500;
      const batch = [];
      for (let i = 0; i < N; i++) batch.push({ topic: 'tls-burst', data: `${i}:${'b'.repeat(16 * 1024)}` });
      for (let i = 0; i < N; i += 50) {
        const res = await httpsRequest(`${base}/publish`, {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(batch.slice(i, i + 50)),
        });
        assert.equal(res.status, 201, res.text);
        const ids = res.json.messages.map((r) => r.id);
        ids.forEach((id, k) => sent.push([id, batch[i + k].data]));
      }
      assert.equal(sent.length, N + 1);
      sse.req.socket.resume();
      await sse.waitEvents(N + 1, { timeout: 30_000 });
      assert.deepEqual(sse.events.map((e) => [e.id, e.data]), sent);
      const envs = await ws.waitEnvelopes(N + 1, { timeout: 30_000 });
      assert.deepEqual(envs.map((e) => [e.id, e.data]), sent);
    } finally {
      sse.close();
      ws.ws.terminate();
    }
  });

  test('plain HTTP to the TLS port is closed; a TLS subscriber is undisturbed', async () => {
    const sse = await subscribe(base, '/events?topic=tls-plain', { ca });
    try {
      const plain = await RawConn.connect('127.0.0.1', h.port);
      await plain.write('GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n');
      await plain.waitClose();
      assert.doesNotMatch(plain.text, /HTTP\/1\.1/);
      await h.waitForStderr(/TLS from 127\.0\.0\.1:\d+ failed/);
      const { id } = await publishTls(base, 'tls-plain', 'still here');
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.id, id);
    } finally {
      sse.close();
    }
  });

  test('a garbage ClientHello and a handshake cut off midway disturb no one else', async () => {
    const sse = await subscribe(base, '/events?topic=tls-garbage', { ca });
    const ws = await openWS(base, '/ws?topic=tls-garbage', { ca });
    try {
      // A handshake record header announcing a ClientHello, then noise.
      const garbage = await RawConn.connect('127.0.0.1', h.port);
      await garbage.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c]),
        randomBytes(60)]));
      await garbage.waitClose();

      // A real ClientHello, then a hang-up as soon as the server's first flight arrives.
      const cut = await RawConn.connect('127.0.0.1', h.port);
      await cut.write(await captureClientHello());
      await cut.waitFor((c) => c.buf.length > 0, { what: 'the server hello' });
      assert.equal(cut.buf[0], 0x16, 'a TLS handshake record');
      cut.destroy();

      // And one that connects and says nothing, then leaves.
      const silent = await RawConn.connect('127.0.0.1', h.port);
      silent.destroy();

      const { id } = await publishTls(base, 'tls-garbage', 'unharmed');
      assert.equal((await sse.waitEvents(1))[0].id, id);
      assert.equal((await ws.waitEnvelopes(1))[0].id, id);
      await ws.assertUsable();
    } finally {
      sse.close();
      ws.ws.terminate();
    }
  });

  test('a TLS 1.2 client that asks to renegotiate loses its connection; others are undisturbed', async () => {
    // OpenSSL would answer every renegotiation request with an alert and
    // carry on, so a client that never reads could make herald write
    // without end: herald ends the connection instead.
    const sse = await subscribe(base, '/events?topic=tls-reneg', { ca });
    try {
      const socket = await withTimeout(new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: h.port, ca, servername: 'localhost', maxVersion: 'TLSv1.2' });
        s.once('secureConnect', () => resolve(s));
        s.once('error', reject);
      }), 5000, 'a TLS 1.2 connection');
      assert.equal(socket.getProtocol(), 'TLSv1.2');
      // TLS 1.2 suites are forward-secret AEAD only.
      assert.match(socket.getCipher().name, /^ECDHE-.*(GCM|CHACHA20)/);
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.on('error', () => {});
      socket.renegotiate({}, () => {});
      await withTimeout(closed, 5000, 'herald closing the renegotiating connection');
      await h.waitForStderr(/TLS from 127\.0\.0\.1:\d+ failed: the client asked to renegotiate/);
      const { id } = await publishTls(base, 'tls-reneg', 'unharmed');
      assert.equal((await sse.waitEvents(1))[0].id, id);
    } finally {
      sse.close();
    }
  });
});

test('a TLS subscriber that stops reading is dropped as a slow consumer; another keeps receiving', async () => {
  const MSG = 8000;
  const hs = await startHerald({
    config: {
      tls: tlsConfig,
      limits: { max_outbound_bytes: 16384 },
      history: { max_messages: 100000, max_bytes: 64 * 1024 * 1024 },
    },
  });
  const base = `https://127.0.0.1:${hs.port}`;
  let slow;
  let fast;
  try {
    slow = await connectTls(hs.port);
    await slow.write('GET /events?topic=tls-slow HTTP/1.1\r\nHost: t\r\n\r\n');
    await slow.waitFor((c) => /\r\n\r\nretry: \d+\n/.test(c.text), { what: 'the SSE preamble' });
    slow.socket.pause(); // never read again (until the end)
    fast = await subscribe(base, '/events?topic=tls-slow', { ca });

    const ids = [];
    const started = Date.now();
    let subscribers = 2;
    while (subscribers === 2) {
      assert.ok(ids.length < 5000 && Date.now() - started < 90_000,
        `the non-reading TLS subscriber was not disconnected after ${ids.length} messages of ${MSG} bytes`);
      const r = await publishTls(base, 'tls-slow', `${ids.length}:${'s'.repeat(MSG)}`);
      ids.push(r.id);
      subscribers = r.subscribers;
    }
    assert.equal(subscribers, 1);
    await fast.waitEvents(ids.length, { timeout: 30_000 });
    assert.deepEqual(fast.events.map((e) => e.id), ids);
    assert.equal(fast.stream.ended, false);
    slow.socket.resume();
    await slow.waitClose({ timeout: 10_000 });
    await hs.waitForStderr(/slow consumer/);
  } finally {
    slow?.destroy();
    fast?.close();
    await hs.stop();
  }
});

test('SIGTERM with open wss and SSE-over-TLS clients exits 0 (WebSocket 1001, SSE ended)', async () => {
  const hs = await startHerald({ config: { tls: tlsConfig, shutdown_grace_s: 5 } });
  const base = `https://127.0.0.1:${hs.port}`;
  const sse = await subscribe(base, '/events?topic=tls-bye', { ca });
  const ws = await openWS(base, '/ws?topic=tls-bye', { ca });
  await publishTls(base, 'tls-bye', 'last');
  await sse.waitEvents(1);
  await ws.waitEnvelopes(1);
  const stopped = hs.stop();
  const closed = await ws.waitClose({ timeout: 5000 });
  assert.equal(closed.code, 1001);
  await sse.waitEnd({ timeout: 5000 });
  await stopped;
});

test('SIGHUP with a new certificate: new connections get it, a TLS stream opened before stays up', async () => {
  const otherCertFile = path.join(dir, 'other-cert.pem');
  const fingerprint = (file) => new X509Certificate(readFileSync(file)).fingerprint256;
  const bothCas = [ca, readFileSync(otherCertFile)];
  /** The certificates of `count` new connections (two workers: spread over both). */
  const served = (port, count = 4) => Promise.all(Array.from({ length: count }, () => withTimeout(new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca: bothCas, servername: 'localhost' });
    socket.once('secureConnect', () => { resolve(socket.getPeerCertificate().fingerprint256); socket.destroy(); });
    socket.once('error', reject);
  }), 5000, 'a TLS handshake')));
  const reloadWith = async (hs, config, until) => {
    const from = hs.stderr().length;
    writeFileSync(hs.configFile, JSON.stringify({ workers: 2, ...config }));
    hs.child.kill('SIGHUP');
    await hs.waitForStderr(new RegExp(`^[\\s\\S]{${from}}[\\s\\S]*?${until.source}`));
    return hs.stderr().slice(from);
  };

  const hs = await startHerald({ config: { tls: tlsConfig, workers: 2 } });
  const base = `https://127.0.0.1:${hs.port}`;
  let sse;
  try {
    sse = await subscribe(base, '/events?topic=tls-reload', { ca });
    assert.deepEqual(new Set(await served(hs.port)), new Set([fingerprint(certFile)]));

    await reloadWith(hs, { tls: { cert: otherCertFile, key: otherKeyFile } }, /reload complete/);
    assert.deepEqual(new Set(await served(hs.port)), new Set([fingerprint(otherCertFile)]));
    // The stream opened with the first certificate is still up, and still served.
    const res = await new Promise((resolve, reject) => {
      const req = https.request(`${base}/topics/tls-reload`, { method: 'POST', ca: bothCas, agent: false }, resolve);
      req.on('error', reject);
      req.end('after the swap');
    });
    assert.equal(res.statusCode, 201);
    res.resume();
    const [event] = await sse.waitEvents(1);
    assert.equal(event.data, 'after the swap');

    // A key that does not match is refused, naming tls.key; the new certificate stays.
    const refused = await reloadWith(hs, { tls: { cert: otherCertFile, key: keyFile } }, /reload refused.*\n/);
    assert.match(refused, /error reload refused, the running configuration stays: tls\.key: .*key\.pem/);
    // Turning TLS off needs a restart: kept, with a warning.
    const kept = await reloadWith(hs, {}, /reload complete/);
    assert.match(kept, /kept the running value of tls\.cert, tls\.key/);
    assert.deepEqual(new Set(await served(hs.port)), new Set([fingerprint(otherCertFile)]));
  } finally {
    sse?.close();
    await hs.stop();
  }
});

describe('bad TLS configuration exits 2 with one line naming the key', () => {
  async function expectConfigError(config, mentions) {
    const { dir: cfgDir, file } = writeConfig(config);
    try {
      const r = await runHerald(['--config', file, '--listen', '127.0.0.1:0']);
      assert.equal(r.code, 2, `exit code for ${JSON.stringify(config)}: ${r.code}; stderr:\n${r.stderr}`);
      assertSanitizerClean(r.stderr);
      const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
      assert.equal(lines.length, 1, `expected exactly one stderr line, got:\n${r.stderr}`);
      for (const m of mentions) assert.ok(lines[0].includes(m), `stderr should name ${m}: ${lines[0]}`);
      return lines[0];
    } finally {
      rmSync(cfgDir, { recursive: true, force: true });
    }
  }

  test('tls.cert: missing file', async () => {
    const missing = path.join(dir, 'nope.pem');
    await expectConfigError({ tls: { cert: missing, key: keyFile } }, ['tls.cert', missing]);
  });

  test('tls.cert: not a certificate', async () => {
    const junk = path.join(dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    await expectConfigError({ tls: { cert: junk, key: keyFile } }, ['tls.cert', junk]);
  });

  test('tls.key: missing file', async () => {
    const missing = path.join(dir, 'nokey.pem');
    await expectConfigError({ tls: { cert: certFile, key: missing } }, ['tls.key', missing]);
  });

  test('tls.key: a key that does not match the certificate', async () => {
    await expectConfigError({ tls: { cert: certFile, key: otherKeyFile } }, ['tls.key', otherKeyFile]);
  });

  test('tls.key without tls.cert (and the reverse)', async () => {
    await expectConfigError({ tls: { key: keyFile } }, ['tls.cert', 'tls.key']);
    await expectConfigError({ tls: { cert: certFile } }, ['tls.cert', 'tls.key']);
  });
});
