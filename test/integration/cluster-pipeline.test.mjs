// Pipelined publishes in cluster mode (docs/api.md "Connection handling"):
// a publish whose answer waits for Redis no longer holds its connection, so
// the publishes pipelined behind it reach the engine before it is answered
// (and go to Redis in the same script calls), while every answer still
// leaves in request order. A request that is not a publish waits for the
// answers before it, as before; errors and closes come out in their place.
// Raw sockets write whole pipelines at once.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import {
  subscribe, request, until, RawConn, parseResponses, publishOk,
} from '../lib/harness.mjs';
import {
  startRedis, startCluster, startProxy, onTestEnd, sseItems, messageIds, splitId, waitHealthy,
} from '../lib/cluster.mjs';

const CONFIG = { heartbeat_s: 5, limits: { max_message_bytes: 4096 } };

let redis;
let cluster;
let A;
let B;

before(async () => {
  redis = await startRedis();
  cluster = await startCluster(2, { redis, config: CONFIG });
  ({ A, B } = cluster);
});

after(async () => {
  await cluster?.stop();
  await redis?.stop();
});

function topicRequest(topic, body, { headers = '', query = '', version = '1.1' } = {}) {
  return `POST /topics/${topic}${query} HTTP/${version}\r\nHost: x\r\n${headers}` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

function batchRequest(items) {
  const body = JSON.stringify(items);
  return `POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** Redis's count of EVALSHA calls so far (INFO commandstats). */
async function scriptCalls() {
  const info = await redis.cli('INFO', 'commandstats');
  const m = /cmdstat_evalsha:calls=(\d+)/.exec(info);
  return m ? Number(m[1]) : 0;
}

/** Writes all requests in one write on a new connection; resolves the connection. */
async function writePipeline(node, requests) {
  const conn = await RawConn.connect(node.host, node.port);
  await conn.write(requests.join(''));
  return conn;
}

function completeAnswers(conn) {
  return parseResponses(conn.buf).responses.filter((r) => r.complete);
}

async function answersOf(conn, n, { timeout = 20_000 } = {}) {
  let answers = [];
  await until(() => {
    answers = completeAnswers(conn);
    return answers.length >= n;
  }, { timeout, what: () => `${n} answers (got ${answers.length})` });
  return answers;
}

function assertIncreasing(ids, label) {
  for (let i = 1; i < ids.length; i++) {
    const [p, c] = [splitId(ids[i - 1]), splitId(ids[i])];
    assert.equal(c.epoch, p.epoch, `${label}: one epoch`);
    assert.ok(c.seq > p.seq, `${label}: ids increase in request order: ${ids[i - 1]} then ${ids[i]}`);
  }
}

/**
 * One node on its own Redis through a proxy (all stopped with the test t),
 * and callsOf(): that Redis's count of EVALSHA calls so far.
 */
async function proxiedNode(t, { config = CONFIG, waitHealthy: wait = true } = {}) {
  const own = await startRedis();
  onTestEnd(t, () => own.stop());
  const proxy = await startProxy(own.port);
  onTestEnd(t, () => proxy.close());
  const node = (await startCluster(1, { redis: proxy.url, config, waitHealthy: wait })).A;
  onTestEnd(t, () => node.stop());
  const callsOf = async () => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await own.cli('INFO', 'commandstats'))?.[1] ?? 0);
  return { proxy, node, callsOf };
}

test('600 publishes pipelined in one write: they reach Redis together, answered in request order, each id the message B delivers in that place', async () => {
  const topic = 'pipe-order';
  const n = 600;
  const sub = await subscribe(B.url, `/events?topic=${topic}`);
  try {
    const callsBefore = await scriptCalls();
    const conn = await writePipeline(A, Array.from({ length: n }, (_, i) => topicRequest(topic, `p${i}`)));
    const answers = await answersOf(conn, n);
    conn.destroy();
    const calls = (await scriptCalls()) - callsBefore;
    assert.deepEqual(answers.filter((a) => a.status !== 201).slice(0, 3), [], 'every publish 201');
    const ids = answers.map((a) => a.json.id);
    assertIncreasing(ids, 'answers');
    // Held one at a time, each publish was one script call; reaching the
    // engine together, they share calls (up to 64 requests each).
    assert.ok(calls < n / 4, `${calls} script calls for ${n} pipelined publishes`);

    await sub.waitFor(() => messageIds(sseItems(sub)).length >= n,
      { timeout: 15_000, what: `${n} messages on B (got ${messageIds(sseItems(sub)).length})` });
    const got = sseItems(sub).filter((i) => i.type === 'message');
    assert.deepEqual(got.map((i) => i.id), ids, 'B delivers the answered ids, in request order');
    assert.deepEqual(got.map((i) => i.data), ids.map((_, i) => `p${i}`), 'each answered id holds its own request\'s data');
  } finally {
    sub.close();
  }
});

test('a mixed pipeline: reads wait for the publishes before them, errors come out in their place', async () => {
  const topic = 'pipe-mixed';
  const requests = [
    topicRequest(topic, 'm0'),
    `GET /topics/${topic} HTTP/1.1\r\nHost: x\r\n\r\n`,
    'POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\nnot json',
    topicRequest(topic, 'm1'),
    topicRequest(topic, 'bad event', { query: '?event=no%20spaces' }),
    topicRequest(topic, 'm2'),
    'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
    batchRequest([{ topic, data: 'm3' }, { topic, data: 'm4' }]),
    'GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n',
    topicRequest(topic, 'm5'),
  ];
  const conn = await writePipeline(A, requests);
  const answers = await answersOf(conn, requests.length);
  conn.destroy();
  assert.deepEqual(answers.map((a) => a.status), [201, 200, 400, 201, 400, 201, 200, 201, 404, 201]);
  assert.equal(answers[2].json.error, 'invalid_json');
  assert.equal(answers[4].json.error, 'invalid_event');
  assert.equal(answers[1].json.last_id, answers[0].json.id, 'GET /topics/{t} was answered after the publish before it');
  const ids = [answers[0], answers[3], answers[5]].map((a) => a.json.id)
    .concat(answers[7].json.messages.map((m) => m.id), [answers[9].json.id]);
  assertIncreasing(ids, 'publish answers');
  const held = await request(`${B.url}/poll?topic=${topic}&since=earliest&timeout=0`);
  assert.deepEqual(held.json.messages.map((m) => [m.id, m.data]),
    ids.map((id, i) => [id, `m${i}`]), 'stored in request order');
});

test('a body too large behind pipelined publishes: 413 after their answers, then closed', async () => {
  const topic = 'pipe-413';
  const conn = await writePipeline(A, [
    topicRequest(topic, 'a'),
    topicRequest(topic, 'b'),
    `POST /topics/${topic} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n`,
    topicRequest(topic, 'never read'),
  ]);
  await conn.waitClose({ timeout: 10_000 });
  const answers = completeAnswers(conn);
  assert.deepEqual(answers.map((a) => a.status), [201, 201, 413]);
  assert.equal(answers[2].headers.connection, 'close');
  const held = await request(`${B.url}/poll?topic=${topic}&since=earliest&timeout=0`);
  assert.deepEqual(held.json.messages.map((m) => m.data), ['a', 'b']);
});

test('Connection: close and HTTP/1.0 on a pipelined publish: its answer is the last, and nothing behind it is read', async () => {
  for (const [label, last] of [
    ['Connection: close', topicRequest('pipe-close-1', 'c1', { headers: 'Connection: close\r\n' })],
    ['HTTP/1.0', topicRequest('pipe-close-1', 'c1', { version: '1.0' })],
  ]) {
    const topic = 'pipe-close-1';
    const before = (await request(`${B.url}/poll?topic=${topic}&since=earliest&timeout=0`)).json.messages.length;
    const conn = await writePipeline(A, [topicRequest(topic, 'c0'), last, topicRequest(topic, 'not read')]);
    await conn.waitClose({ timeout: 10_000 });
    const answers = completeAnswers(conn);
    assert.deepEqual(answers.map((a) => a.status), [201, 201], label);
    assert.notEqual(answers[0].headers.connection, 'close', label);
    assert.equal(answers[1].headers.connection, 'close', label);
    const held = await request(`${B.url}/poll?topic=${topic}&since=earliest&timeout=0`);
    assert.deepEqual(held.json.messages.slice(before).map((m) => m.data), ['c0', 'c1'], `${label}: nothing behind it published`);
  }
});

test('clients that close in the middle of their pipelines: the node stays healthy and other clients are undisturbed', async () => {
  const topic = 'pipe-gone';
  const sub = await subscribe(B.url, `/events?topic=${topic}-steady`);
  try {
    const steady = (async () => {
      const sent = [];
      for (let i = 0; i < 40; i++) sent.push(await publishOk(A.url, `${topic}-steady`, `s${i}`));
      return sent;
    })();
    for (let round = 0; round < 6; round++) {
      const conn = await writePipeline(A, Array.from({ length: 1500 }, (_, i) => topicRequest(topic, `g${round}-${i}`)));
      // Gone at once in some rounds, after the first answers in the others.
      if (round % 2 === 1) await conn.waitFor(() => completeAnswers(conn).length > 0, { timeout: 10_000, what: 'a first answer' });
      conn.socket.resetAndDestroy();
    }
    const sent = await steady;
    await sub.waitFor(() => messageIds(sseItems(sub)).length >= sent.length,
      { timeout: 10_000, what: `${sent.length} steady messages on B` });
    assert.deepEqual(messageIds(sseItems(sub)), sent.map((s) => s.id));
    assert.equal((await request(`${A.url}/healthz`)).status, 200);
    // A pipeline after them is served whole.
    const conn = await writePipeline(A, Array.from({ length: 100 }, (_, i) => topicRequest(topic, `after${i}`)));
    const answers = await answersOf(conn, 100);
    conn.destroy();
    assert.deepEqual([...new Set(answers.map((a) => a.status))], [201]);
  } finally {
    sub.close();
  }
});

test('a half-close (shutdown of the write side) with 50 pipelined publishes outstanding: all 50 answered in order, then closed', async (t) => {
  const { proxy, node, callsOf } = await proxiedNode(t);
  const topic = 'pipe-half-close';
  await publishOk(node.url, topic, 'warm-up');
  const callsBefore = await callsOf();

  // Redis's answers are held, so that the EOF arrives while every answer is owed.
  proxy.pause({ direction: 'down' });
  const n = 50;
  const conn = await writePipeline(node, Array.from({ length: n }, (_, i) => topicRequest(topic, `h${i}`)));
  conn.socket.end();
  await until(async () => (await callsOf()) > callsBefore, { what: 'a publish script call to reach Redis' });
  proxy.resume();

  await conn.waitClose({ timeout: 10_000 });
  const answers = completeAnswers(conn);
  assert.deepEqual(answers.map((a) => a.status), Array(n).fill(201));
  const ids = answers.map((a) => a.json.id);
  assertIncreasing(ids, 'answers');
  const held = await request(`${node.url}/poll?topic=${topic}&since=earliest&timeout=0`);
  assert.deepEqual(held.json.messages.slice(1).map((m) => [m.id, m.data]),
    ids.map((id, i) => [id, `h${i}`]), 'each stored, in request order');
  await publishOk(node.url, topic, 'others undisturbed');
});

/** Writes bytes over TLS, then ends (close_notify, then FIN); resolves all that came back once closed. */
function tlsExchange(node, bytes, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: node.port, ca, servername: 'localhost' });
    const chunks = [];
    socket.on('secureConnect', () => socket.end(bytes));
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

test('over TLS, close_notify with 50 pipelined publishes outstanding is a half-close too: all answered in order, then closed', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-pipe-tls-'));
  onTestEnd(t, () => rmSync(dir, { recursive: true, force: true }));
  const [cert, key] = [path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  const ca = readFileSync(cert);
  const { proxy, node, callsOf } = await proxiedNode(t, { config: { ...CONFIG, tls: { cert, key } }, waitHealthy: false });
  const topic = 'pipe-tls-half-close';
  const warmUp = topicRequest(topic, 'warm-up', { headers: 'Connection: close\r\n' });
  await until(async () => /^HTTP\/1\.1 201/.test((await tlsExchange(node, warmUp, ca)).toString('latin1')),
    { timeout: 10_000, what: 'a first publish over TLS' });
  const callsBefore = await callsOf();

  proxy.pause({ direction: 'down' });
  const n = 50;
  const exchange = tlsExchange(node, Array.from({ length: n }, (_, i) => topicRequest(topic, `h${i}`)).join(''), ca);
  await until(async () => (await callsOf()) > callsBefore, { what: 'a publish script call to reach Redis' });
  proxy.resume();
  const answers = parseResponses(await exchange).responses.filter((r) => r.complete);
  assert.deepEqual(answers.map((a) => a.status), Array(n).fill(201));
  assertIncreasing(answers.map((a) => a.json.id), 'answers');
});

test('Redis lost while a pipeline is outstanding: every publish answered 503 in request order, errors in their place', async (t) => {
  const { proxy, node, callsOf } = await proxiedNode(t);
  const topic = 'pipe-down';
  await publishOk(node.url, topic, 'warm-up');
  const callsBefore = await callsOf();

  // Redis runs what it is sent but its answers are held: the publishes are outstanding.
  proxy.pause({ direction: 'down' });
  const n = 200;
  const requests = Array.from({ length: n }, (_, i) => (i === 100
    ? topicRequest(topic, 'bad', { query: '?event=no%20spaces' })
    : topicRequest(topic, `d${i}`)));
  const conn = await writePipeline(node, requests);
  await until(async () => (await callsOf()) > callsBefore, { what: 'a publish script call to reach Redis' });
  assert.equal(completeAnswers(conn).length, 0, 'nothing answered while Redis holds its answers');
  proxy.cut();
  proxy.resume();

  const answers = await answersOf(conn, n);
  conn.destroy();
  const statuses = answers.map((a) => a.status);
  assert.equal(statuses[100], 400, 'the bad request answered in its place');
  assert.equal(answers[100].json.error, 'invalid_event');
  assert.deepEqual(statuses.filter((s, i) => i !== 100 && s !== 503), [], 'every other publish 503');
  // Those the lost call carried may have been stored (outcome_unknown), the rest were not sent
  // (unavailable): in request order, never the other way round.
  const codes = answers.filter((_, i) => i !== 100).map((a) => a.json.error);
  const firstUnavailable = codes.indexOf('unavailable');
  assert.ok(codes.every((c) => c === 'outcome_unknown' || c === 'unavailable'), codes.join());
  assert.ok(firstUnavailable === -1 || codes.slice(firstUnavailable).every((c) => c === 'unavailable'),
    `outcome_unknown after unavailable: ${codes.join()}`);

  await waitHealthy(node, { timeout: 15_000 });
  await publishOk(node.url, topic, 'again');
});

test('shutdown with pipelined publishes outstanding, a synchronous error last: each is answered in order, the last answer (the error, made before the drain) closes, then the node exits', async (t) => {
  const { proxy, node, callsOf } = await proxiedNode(t);
  const topic = 'pipe-drain';
  await publishOk(node.url, topic, 'warm-up');
  const callsBefore = await callsOf();

  proxy.pause({ direction: 'down' });
  const n = 10;
  // The 400 is made (with Keep-Alive) as soon as it is read, queued behind the publishes owed.
  const conn = await writePipeline(node, [
    ...Array.from({ length: n }, (_, i) => topicRequest(topic, `q${i}`)),
    topicRequest(topic, 'bad', { query: '?event=no%20spaces' }),
  ]);
  await until(async () => (await callsOf()) > callsBefore, { what: 'a publish script call to reach Redis' });
  const stopping = node.stop();
  await node.waitForStderr(/shutting down/);
  proxy.resume();

  await conn.waitClose({ timeout: 10_000 });
  const answers = completeAnswers(conn);
  assert.deepEqual(answers.map((a) => a.status), [...Array(n).fill(201), 400]);
  assert.equal(answers[n].json.error, 'invalid_event');
  assertIncreasing(answers.slice(0, n).map((a) => a.json.id), 'answers');
  assert.deepEqual(answers.map((a) => a.headers.connection === 'close'), [...Array(n).fill(false), true],
    'only the last answer says Connection: close');
  assert.equal(answers[n].headers['keep-alive'], undefined, 'the last answer promises no keep-alive');
  await stopping;
});
