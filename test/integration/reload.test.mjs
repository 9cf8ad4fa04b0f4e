// Signals other than SIGTERM/SIGINT (docs/api.md "Reloading — SIGHUP"):
// SIGUSR1, SIGUSR2 and SIGPIPE never stop herald; SIGHUP reads the config
// file again (with the command line's overrides) and every worker switches
// to it without dropping a connection: log_level, token keys, origin lists
// and limits take effect for what comes next, while connections already
// open keep going. A bad file is refused whole with a line naming the key;
// keys only a restart can change keep their running values, with a warning.
//
// Each herald here runs two workers, so both must switch (CTest also runs
// this file under ThreadSanitizer); "reload complete" is logged once the
// last one has.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import {
  startHerald, request, publish, publishOk, subscribe, openWS, RawConn, sleep, ID_RE,
} from '../lib/harness.mjs';

/** A regex matching re only in what herald logged after the first `offset` characters. */
function loggedAfter(offset, re) {
  return new RegExp(`^[\\s\\S]{${offset}}[\\s\\S]*?${re.source}`);
}

/**
 * Writes config (an object, or raw text) as herald's config file, sends
 * SIGHUP and waits for `until` in the log; resolves what the reload logged.
 */
async function reload(h, config, { until = /reload complete/ } = {}) {
  const from = h.stderr().length;
  writeFileSync(h.configFile, typeof config === 'string' ? config : JSON.stringify(config));
  h.child.kill('SIGHUP');
  await h.waitForStderr(loggedAfter(from, until));
  return h.stderr().slice(from);
}

/** Every message history holds for topic, oldest first (a poll from the start of the epoch). */
async function history(url, topic, anyId) {
  const res = await request(`${url}/poll?topic=${topic}&since=${anyId.split('-')[0]}-0&timeout=0`);
  assert.equal(res.status, 200, res.text);
  return res.json.messages.map((m) => m.data);
}

const b64json = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
/** An HS256 token granting every topic, signed with secret. */
function token(secret) {
  const input = `${b64json({ alg: 'HS256', typ: 'JWT' })}.${b64json({ herald: { publish: ['*'], subscribe: ['*'] } })}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}
const bearer = (t) => ({ Authorization: `Bearer ${t}` });

test('SIGUSR1, SIGUSR2 and SIGPIPE do not stop herald: it keeps serving, its history and its subscribers', async () => {
  const h = await startHerald({ config: { workers: 2 } });
  try {
    const first = await publishOk(h.url, 'kept', 'before');
    const sse = await subscribe(h.url, '/events?topic=kept');
    for (const signal of ['SIGPIPE', 'SIGUSR1', 'SIGUSR2']) h.child.kill(signal);
    await h.waitForStderr(/received SIGUSR1: herald does not use it; ignored/);
    await h.waitForStderr(/received SIGUSR2: herald does not use it; ignored/);
    await publishOk(h.url, 'kept', 'after');
    const [event] = await sse.waitEvents(1);
    assert.equal(event.data, 'after');
    assert.deepEqual(await history(h.url, 'kept', first.id), ['before', 'after']);
    sse.close();
  } finally {
    await h.stop();
  }
});

test('SIGHUP, SIGUSR1 and SIGUSR2 during the shutdown drain do not cut it short: exit 0', async () => {
  const h = await startHerald({ config: { workers: 2, shutdown_grace_s: 30 } });
  // A request whose body is still to come keeps the drain waiting for it; 100 Continue says it is read.
  const pending = await RawConn.connect(h.host, h.port);
  await pending.write('POST /topics/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n');
  await pending.waitFor((c) => c.text.includes('100 Continue'), { what: '100 Continue' });
  h.child.kill('SIGTERM');
  await h.waitForStderr(/received SIGTERM: shutting down/);
  for (const signal of ['SIGHUP', 'SIGUSR1', 'SIGUSR2']) h.child.kill(signal);
  await sleep(200); // proving a negative: herald is still draining
  assert.equal(h.child.exitCode, null);
  assert.equal(h.child.signalCode, null);
  pending.destroy();
  await h.stop();
  assert.doesNotMatch(h.stderr(), /reloading|received SIGUSR/);
});

test('SIGHUP without --config logs that there is nothing to reload, and herald keeps serving', async () => {
  const h = await startHerald({ args: ['--listen', '127.0.0.1:0'] });
  try {
    h.child.kill('SIGHUP');
    await h.waitForStderr(/received SIGHUP: herald was started without --config, nothing to reload/);
    assert.equal((await request(`${h.url}/healthz`)).status, 200);
  } finally {
    await h.stop();
  }
});

test('log_level: request lines (debug) appear after a reload to debug and stop after one back to info', async () => {
  const h = await startHerald({ config: { workers: 2, log_level: 'info', access_log: false } });
  try {
    await request(`${h.url}/topics/alpha`);
    await reload(h, { workers: 2, log_level: 'debug', access_log: false });
    await request(`${h.url}/topics/beta`);
    await h.waitForStderr(/GET \/topics\/beta/);
    await reload(h, { workers: 2, log_level: 'info', access_log: false });
    await request(`${h.url}/topics/gamma`);
    // The answer came after its log line would have been written: one more line after it settles it.
    h.child.kill('SIGUSR1');
    await h.waitForStderr(/received SIGUSR1/);
    assert.doesNotMatch(h.stderr(), /\/topics\/(alpha|gamma)/);
  } finally {
    await h.stop();
  }
});

test('a new jwt_secret: old tokens are refused, new ones accepted; WebSockets opened before keep their rights', async () => {
  const oldSecret = 'reload-test-secret-old-0123456789abcdef';
  const newSecret = 'reload-test-secret-new-0123456789abcdef';
  const auth = (secret) => ({ jwt_secret: secret, anonymous_publish: false, anonymous_subscribe: true });
  const h = await startHerald({ config: { workers: 2, auth: auth(oldSecret) } });
  const [oldToken, newToken] = [token(oldSecret), token(newSecret)];
  let withToken;
  let anonymous;
  try {
    withToken = await openWS(h.url, `/ws?topic=news&access_token=${oldToken}`);
    anonymous = await openWS(h.url, '/ws');
    assert.equal((await publish(h.url, 'news', 'one', { headers: bearer(oldToken) })).status, 201);
    await withToken.waitEnvelopes(1);

    const log = await reload(h, { workers: 2, auth: auth(newSecret) });
    assert.doesNotMatch(log, /error|warn/);
    const refused = await publish(h.url, 'news', 'old token', { headers: bearer(oldToken) });
    assert.equal(refused.status, 401, refused.text);
    assert.equal((await publish(h.url, 'news', 'two', { headers: bearer(newToken) })).status, 201);
    await assert.rejects(openWS(h.url, `/ws?access_token=${oldToken}`), (err) => err.status === 401);
    (await openWS(h.url, `/ws?access_token=${newToken}`)).close();

    // Still connected, with the rights it was given: it receives, and publishes with its old token.
    const envelopes = await withToken.waitEnvelopes(2);
    assert.equal(envelopes[1].data, 'two');
    const ack = await withToken.ok({ op: 'publish', topic: 'news', data: 'three' });
    assert.match(ack.id, ID_RE);
    // The anonymous one keeps the anonymous rights: subscribe yes, publish no.
    await anonymous.ok({ op: 'subscribe', topics: ['news'] });
    const denied = await anonymous.call({ op: 'publish', topic: 'news', data: 'no' });
    assert.equal(denied.error, 'unauthorized');
    await anonymous.assertUsable();
  } finally {
    withToken?.close();
    anonymous?.close();
    await h.stop();
  }
});

test('new cors and websocket allow_origins apply to the next requests', async () => {
  const origins = (origin) => ({
    workers: 2, cors: { allow_origins: [origin] }, websocket: { allow_origins: [origin] },
  });
  const [a, b] = ['https://a.example', 'https://b.example'];
  const h = await startHerald({ config: origins(a) });
  try {
    const allowed = async (origin) =>
      (await request(`${h.url}/healthz`, { headers: { Origin: origin } })).headers.get('access-control-allow-origin');
    assert.equal(await allowed(a), a);
    assert.equal(await allowed(b), null);
    await assert.rejects(openWS(h.url, '/ws', { headers: { Origin: b } }), (err) => err.status === 403);
    const before = await openWS(h.url, '/ws', { headers: { Origin: a } });

    await reload(h, origins(b));
    assert.equal(await allowed(b), b);
    assert.equal(await allowed(a), null);
    (await openWS(h.url, '/ws', { headers: { Origin: b } })).close();
    await assert.rejects(openWS(h.url, '/ws', { headers: { Origin: a } }), (err) => err.status === 403);
    await before.assertUsable();
    before.close();
  } finally {
    await h.stop();
  }
});

test('a changed limit applies to the next requests; a stream opened before stays up', async () => {
  const limits = (bytes) => ({ workers: 2, limits: { max_message_bytes: bytes } });
  const h = await startHerald({ config: limits(100) });
  try {
    const sse = await subscribe(h.url, '/events?topic=sized');
    const big = 'x'.repeat(200);
    assert.equal((await publish(h.url, 'sized', big)).status, 413);
    await reload(h, limits(1000));
    await publishOk(h.url, 'sized', big);
    const [event] = await sse.waitEvents(1);
    assert.equal(event.data, big);
    await reload(h, limits(100));
    assert.equal((await publish(h.url, 'sized', big)).status, 413);
    sse.close();
  } finally {
    await h.stop();
  }
});

test('a bad new config is refused whole, with a line naming the problem; the running one stays, and so do its clients', async () => {
  const running = { workers: 2, limits: { max_message_bytes: 100 } };
  const h = await startHerald({ config: running });
  try {
    const sse = await subscribe(h.url, '/events?topic=steady');
    const refusals = [
      ['{"limits": {', /invalid JSON near line 1/],
      [{ ...running, limits: { max_message_bytes: 0 } }, /limits\.max_message_bytes: must be an integer between 1 and/],
      [{ ...running, limits: { max_message_bytes: 1000 }, colour: 'blue' }, /unknown key 'colour'/],
      [{ ...running, limits: { max_message_bytes: 1000 }, auth: { jwt_public_key: 'not a key' } }, /auth\.jwt_public_key: /],
      [{ ...running, limits: { max_message_bytes: 1000 }, tls: { cert: '/nonexistent/cert.pem' } }, /tls\.cert and tls\.key must be set together/],
    ];
    for (const [config, reason] of refusals) {
      const log = await reload(h, config, { until: /reload refused.*\n/ });
      assert.match(log, new RegExp(`error reload refused, the running configuration stays: .*${reason.source}`));
    }
    rmSync(h.configFile);
    h.child.kill('SIGHUP');
    await h.waitForStderr(/reload refused, the running configuration stays: cannot read config file '.*': No such file/);
    assert.doesNotMatch(h.stderr(), /reload complete/);

    // The running limit (100 bytes) is still in force, and the subscriber still served.
    assert.equal((await publish(h.url, 'steady', 'x'.repeat(200))).status, 413);
    await publishOk(h.url, 'steady', 'still here');
    const [event] = await sse.waitEvents(1);
    assert.equal(event.data, 'still here');
    sse.close();
  } finally {
    await h.stop();
  }
});

test('keys only a restart changes keep their running values, with a warning naming them; the rest applies', async () => {
  const h = await startHerald({ config: { workers: 2, history: { max_messages: 5 }, limits: { max_message_bytes: 100 } } });
  try {
    const log = await reload(h, {
      workers: 1,
      history: { max_messages: 2 },
      limits: { max_message_bytes: 1000 },
      // --listen on the command line overrides the file, at a reload too: no warning for it.
      listen: ['127.0.0.1:1'],
    });
    assert.match(log, /warn reload: kept the running value of workers, history\.max_messages \(changes only at a restart\)/);
    assert.doesNotMatch(log, /listen/);
    const first = await publishOk(h.url, 'restart', 'x'.repeat(200));
    for (const data of ['b', 'c', 'd']) await publishOk(h.url, 'restart', data);
    assert.equal((await history(h.url, 'restart', first.id)).length, 4);
    // Still two workers (/metrics has a gauge per worker).
    const metrics = await request(`${h.url}/metrics`);
    assert.match(metrics.text, /herald_worker_connections\{worker="1"\}/);
  } finally {
    await h.stop();
  }
});
