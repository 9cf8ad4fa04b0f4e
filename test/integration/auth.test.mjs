// Auth — JSON Web Tokens (docs/api.md "Auth (tokens)" and the 401/403 rows
// of "Errors"): where a token is read from, which tokens are refused and with
// which answer, what a token's patterns grant on every endpoint (publish,
// batch publish, SSE, polling, WebSocket, topic info and listings), the
// anonymous defaults, servers without keys, RS256/ES256 public keys, keys
// herald refuses at start (and a short HS256 secret it warns about), expiry
// of long-lived connections, cookie tokens bound to the origins the config
// names, the WebSocket echo endpoint, and tokens kept out of the logs.
//
// Tokens are minted here with node:crypto alone, so the test depends on no
// JWT library (whose own choices could hide herald's).
//
// Every describe block that sends refused requests keeps a bystander SSE
// subscriber (with a valid token) connected throughout; after each test it
// must still receive what is published: refusals disturb nobody else.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign as cryptoSign } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  startHerald, runHerald, writeConfig, request, publish, publishOk, publishBatch, assertError,
  assertSanitizerClean, openSSE, subscribe, openEventSource, openWS, wsHandshake, until, ID_RE,
  rawRequest, RawConn, SSEStream, parseId, sleep,
} from '../lib/harness.mjs';

// ---------------------------------------------------------------------------
// Minting tokens

const SECRET = 'herald-auth-test-secret-5f2c9a';

/** Unpadded base64url (RFC 7515 §2) of a Buffer or a string. */
function b64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}
const b64json = (obj) => b64url(JSON.stringify(obj));

function signHS256(input, secret = SECRET) {
  return createHmac('sha256', secret).update(input).digest('base64url');
}
function signRS256(input, privateKey) {
  return b64url(cryptoSign('sha256', Buffer.from(input), privateKey));
}
/** JWS wants ES256 signatures as r || s (RFC 7518 §3.4), not DER: ieee-p1363. */
function signES256(input, privateKey, dsaEncoding = 'ieee-p1363') {
  return b64url(cryptoSign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding }));
}

/**
 * A compact JWT carrying `claims`. options:
 *   alg     'HS256' (default), 'RS256', 'ES256', 'HS512' or 'none'
 *   secret  HMAC secret (default SECRET); key: private key for RS256/ES256
 *   header  extra header fields (e.g. crit)
 *   der     ES256 only: sign with a DER signature (a classic client mistake)
 */
function token(claims, { alg = 'HS256', secret = SECRET, key, header = {}, der = false } = {}) {
  const input = `${b64json({ alg, typ: 'JWT', ...header })}.${b64json(claims)}`;
  let signature;
  if (alg === 'HS256') signature = signHS256(input, secret);
  else if (alg === 'HS512') signature = createHmac('sha512', secret).update(input).digest('base64url');
  else if (alg === 'RS256') signature = signRS256(input, key);
  else if (alg === 'ES256') signature = signES256(input, key, der ? 'der' : 'ieee-p1363');
  else if (alg === 'none') signature = '';
  else throw new Error(`token(): no signer for ${alg}`);
  return `${input}.${signature}`;
}

/** herald's claim: {herald: {publish, subscribe}} with the given pattern lists. */
const grant = ({ publish: pub, subscribe: sub } = {}, extra = {}) =>
  ({ ...extra, herald: { ...(pub ? { publish: pub } : {}), ...(sub ? { subscribe: sub } : {}) } });

const nowS = () => Math.floor(Date.now() / 1000);
const bearer = (t) => ({ Authorization: `Bearer ${t}` });

// Tokens of the HS256 blocks. None expires, so they hold for the whole file.
const ALL = token(grant({ publish: ['*'], subscribe: ['*'] }));
const READER = token(grant({ subscribe: ['*'] }));           // to look at topics
const CHAT_PUB = token(grant({ publish: ['chat.*'] }));
const CHAT_SUB = token(grant({ subscribe: ['chat.*'] }));
const CHAT_RW = token(grant({ publish: ['chat.*'], subscribe: ['chat.*'] }));

// Key pairs of the RS256/ES256 blocks, and their public halves as PEM files.
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaOther = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ecOther = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pemOf = (pair) => pair.publicKey.export({ type: 'spki', format: 'pem' });

const keyDir = mkdtempSync(path.join(os.tmpdir(), 'herald-auth-keys-'));
function keyFile(name, text) {
  const file = path.join(keyDir, name);
  writeFileSync(file, text);
  return file;
}
const RSA_FILE = keyFile('rsa.pem', pemOf(rsa));
const EC_FILE = keyFile('ec.pem', pemOf(ec));
after(() => rmSync(keyDir, { recursive: true, force: true }));

// ---------------------------------------------------------------------------
// Assertions

/** A response header from fetch (Headers) or from the raw/SSE/ws helpers (plain object). */
function headerOf(res, name) {
  return typeof res.headers?.get === 'function' ? res.headers.get(name) : res.headers?.[name];
}

/**
 * 401 unauthorized. Without a token the challenge is the bare `Bearer`; a
 * refused token adds error="invalid_token" (RFC 6750 §3.1). reason: a RegExp
 * the message must match (it says why the token was refused).
 */
function assertUnauthorized(res, { invalidToken = false, reason } = {}) {
  const json = assertError(res, 401, 'unauthorized');
  const challenge = headerOf(res, 'www-authenticate') ?? '';
  assert.match(challenge, /^Bearer\b/, `WWW-Authenticate: ${challenge}`);
  if (invalidToken) assert.match(challenge, /error="invalid_token"/, `WWW-Authenticate: ${challenge}`);
  else assert.equal(challenge, 'Bearer', 'no token: the bare challenge');
  if (reason) assert.match(json.message, reason);
  return json;
}

/** 403 forbidden whose message names `what` (the topic, or a batch's item). */
function assertForbidden(res, ...what) {
  const json = assertError(res, 403, 'forbidden');
  for (const w of what) assert.ok(json.message.includes(w), `403 message should name ${w}: ${json.message}`);
  return json;
}

/** GET /topics/{topic} with a token that may subscribe to everything. */
const topicInfo = (url, topic, t = READER) => request(`${url}/topics/${topic}`, { headers: bearer(t) });

/** Nothing was ever published to (or subscribed to) the topic. */
async function assertTopicAbsent(url, topic, t = READER) {
  assertError(await topicInfo(url, topic, t), 404, 'not_found');
}

/** A 403 names the scope it lacked (RFC 6750 §3.1), not merely the scheme. */
function assertInsufficientScope(res, ...what) {
  assertForbidden(res, ...what);
  assert.equal(headerOf(res, 'www-authenticate'), 'Bearer error="insufficient_scope"',
    `WWW-Authenticate of a ${res.status}`);
}

/**
 * POST /topics/{topic} written byte for byte, for header values fetch would
 * normalise (it trims the spaces of `Authorization: Bearer    `). headers: an
 * array of raw header lines. Resolves the parsed response.
 */
async function rawPublish(h, topic, data, { headers = [], query } = {}) {
  const target = `/topics/${topic}${query ? `?${query}` : ''}`;
  const head = [`POST ${target} HTTP/1.1`, 'Host: herald.test', 'Connection: close',
    'Content-Type: text/plain', `Content-Length: ${Buffer.byteLength(data)}`, ...headers];
  const { responses, text } = await rawRequest(h.host, h.port, `${head.join('\r\n')}\r\n\r\n${data}`);
  assert.equal(responses.length, 1, `one response to POST ${target}; got:\n${text}`);
  return responses[0];
}

/** Waits until the wall clock is past a token's exp (seconds) by `margin` ms. */
async function waitPastExp(exp, margin = 250) {
  const wait = exp * 1000 + margin - Date.now();
  if (wait > 0) await sleep(wait);
}

// ---------------------------------------------------------------------------
// A herald per describe block, with its bystander

/**
 * Starts herald with `config` for the enclosing describe block, a bystander
 * SSE subscriber on topic "bystander" holding `bystanderToken`, and checks
 * after every test that the bystander still receives.
 */
function useHerald(config, { bystanderToken = ALL } = {}) {
  const ctx = { h: null, bystander: null, count: 0, token: bystanderToken };
  before(async () => {
    ctx.h = await startHerald({ config });
    ctx.bystander = await subscribe(ctx.h.url, '/events?topic=bystander', { headers: bearer(bystanderToken) });
  });
  after(async () => {
    ctx.bystander?.close();
    await ctx.h?.stop();
  });
  afterEach(async () => {
    const n = ctx.bystander.events.length;
    ctx.count += 1;
    const data = `still here ${ctx.count}`;
    await publishOk(ctx.h.url, 'bystander', data, { headers: bearer(bystanderToken) });
    await ctx.bystander.waitEvents(n + 1, { timeout: 5000 });
    assert.equal(ctx.bystander.events[n].data, data, 'the bystander receives after the refused requests');
  });
  return ctx;
}

// Anonymous clients may do nothing: every right comes from a token.
const STRICT = { auth: { jwt_secret: SECRET, anonymous_publish: false, anonymous_subscribe: false } };

// A page's origin a config may list, and a stranger's.
const APP_ORIGIN = 'https://app.example';
const EVIL_ORIGIN = 'https://evil.example';

// ---------------------------------------------------------------------------

describe('POST /topics/{topic} with anonymous access off (HS256)', () => {
  const ctx = useHerald(STRICT);

  test('without a token: 401 unauthorized, WWW-Authenticate: Bearer, nothing published', async () => {
    const res = await publish(ctx.h.url, 'chat.anon', 'x');
    assertUnauthorized(res, { reason: /token/ });
    await assertTopicAbsent(ctx.h.url, 'chat.anon');
  });

  test('publish ["chat.*"]: 201 on chat.room1, 403 forbidden on news (nothing published)', async () => {
    const ok = await publishOk(ctx.h.url, 'chat.room1', 'hello', { headers: bearer(CHAT_PUB) });
    assert.equal(ok.topic, 'chat.room1');
    assertForbidden(await publish(ctx.h.url, 'news', 'no', { headers: bearer(CHAT_PUB) }), "'news'");
    await assertTopicAbsent(ctx.h.url, 'news');
    // The pattern is a glob over the whole name, not a prefix of it.
    assertForbidden(await publish(ctx.h.url, 'xchat.room1', 'no', { headers: bearer(CHAT_PUB) }), 'xchat.room1');
    // A subscribe pattern grants no publishing.
    assertForbidden(await publish(ctx.h.url, 'chat.room1', 'no', { headers: bearer(CHAT_SUB) }), 'chat.room1');
  });

  test('the token is read from the Authorization header, the access_token query parameter and the access_token cookie', async () => {
    const info0 = (await topicInfo(ctx.h.url, 'chat.where')).json?.history?.messages ?? 0;
    await publishOk(ctx.h.url, 'chat.where', 'header', { headers: bearer(CHAT_PUB) });
    await publishOk(ctx.h.url, 'chat.where', 'query', { query: `access_token=${CHAT_PUB}` });
    await publishOk(ctx.h.url, 'chat.where', 'cookie', { headers: { Cookie: `access_token=${CHAT_PUB}` } });
    // Among other cookies, in any place.
    await publishOk(ctx.h.url, 'chat.where', 'cookies', {
      headers: { Cookie: `session=abc; access_token=${CHAT_PUB}; theme=dark` },
    });
    // RFC 6265 allows a cookie value in double quotes.
    await publishOk(ctx.h.url, 'chat.where', 'quoted', { headers: { Cookie: `access_token="${CHAT_PUB}"` } });
    // A cookie whose name merely ends in access_token is another cookie.
    assertUnauthorized(await publish(ctx.h.url, 'chat.where', 'no', {
      headers: { Cookie: `my_access_token=${CHAT_PUB}` },
    }));
    const info = await topicInfo(ctx.h.url, 'chat.where');
    assert.equal(info.json.history.messages, info0 + 5, info.text);
  });

  test('only the first token found is read: header, then query, then cookie', async () => {
    const expired = token(grant({ publish: ['chat.*'] }, { exp: nowS() - 60 }));
    // A refused header token is not rescued by a good one further down…
    assertUnauthorized(await publish(ctx.h.url, 'chat.first', 'x', {
      headers: bearer(expired), query: `access_token=${CHAT_PUB}`,
    }), { invalidToken: true, reason: /expired/ });
    assertUnauthorized(await publish(ctx.h.url, 'chat.first', 'x', {
      query: `access_token=${expired}`, headers: { Cookie: `access_token=${CHAT_PUB}` },
    }), { invalidToken: true, reason: /expired/ });
    await assertTopicAbsent(ctx.h.url, 'chat.first');
    // …and a good one first makes the later ones irrelevant.
    await publishOk(ctx.h.url, 'chat.first', 'x', { headers: bearer(CHAT_PUB), query: `access_token=${expired}` });
    await publishOk(ctx.h.url, 'chat.first', 'x', {
      query: `access_token=${CHAT_PUB}`, headers: { Cookie: `access_token=${expired}` },
    });
  });

  test('"Authorization: Bearer" with nothing after it is an empty token, refused before a good ?access_token=', async () => {
    // RFC 6750 §2.1: the header names the Bearer scheme, so its (empty)
    // credentials are the request's token: read first and refused, never
    // taken for an absent header that would let the query parameter through.
    assertUnauthorized(await publish(ctx.h.url, 'chat.empty-bearer', 'x', {
      headers: { Authorization: 'Bearer' }, query: `access_token=${CHAT_PUB}`,
    }), { invalidToken: true, reason: /well-formed/ });
    // The same with spaces after the scheme; fetch would trim them, so raw bytes.
    for (const value of ['Bearer    ', 'Bearer ', 'bearer']) {
      const res = await rawPublish(ctx.h, 'chat.empty-bearer', 'x', {
        headers: [`Authorization: ${value}`], query: `access_token=${CHAT_PUB}`,
      });
      assertUnauthorized(res, { invalidToken: true, reason: /well-formed/ });
    }
    await assertTopicAbsent(ctx.h.url, 'chat.empty-bearer');
    // Another scheme is not a bearer token at all: the query parameter is the
    // token then. So is a scheme that merely starts with "Bearer".
    for (const value of ['Basic xyz', 'Basic dXNlcjpwYXNz', `Bearerx ${CHAT_PUB}`]) {
      await publishOk(ctx.h.url, 'chat.empty-bearer', value, {
        headers: { Authorization: value }, query: `access_token=${CHAT_PUB}`,
      });
    }
    // Without the query parameter, a Basic header is simply no token.
    assertUnauthorized(await publish(ctx.h.url, 'chat.empty-bearer', 'x', { headers: { Authorization: 'Basic xyz' } }));
  });

  test('a 403 carries WWW-Authenticate: Bearer error="insufficient_scope" on every endpoint', async () => {
    // RFC 6750 §3.1: the client learns that another token (with more scope)
    // would do, as opposed to the 401's invalid_token.
    assertInsufficientScope(await publish(ctx.h.url, 'news.scope', 'x', { headers: bearer(CHAT_PUB) }), 'news.scope');
    assertInsufficientScope(await publishBatch(ctx.h.url, [{ topic: 'news.scope', data: 'x' }], { headers: bearer(CHAT_PUB) }),
      'Item 0', 'news.scope');
    assertInsufficientScope(await openSSE(ctx.h.url, '/events?topic=news.scope', { headers: bearer(CHAT_SUB) }), 'news.scope');
    assertInsufficientScope(await request(`${ctx.h.url}/poll?topic=news.scope&timeout=0`, { headers: bearer(CHAT_SUB) }), 'news.scope');
    assertInsufficientScope(await topicInfo(ctx.h.url, 'news.scope', CHAT_SUB), 'news.scope');
    assertInsufficientScope(await wsHandshake(ctx.h.host, ctx.h.port, `/ws?topic=news.scope&access_token=${CHAT_SUB}`), 'news.scope');
    await assertTopicAbsent(ctx.h.url, 'news.scope');
  });

  test('GET /topics?prefix= refused with 403 names the scope too', async () => {
    const room1 = token(grant({ subscribe: ['chat.room1'] }));
    assertInsufficientScope(await request(`${ctx.h.url}/topics?prefix=chat.`, { headers: bearer(room1) }), 'chat.');
  });

  test('refused tokens: 401 with error="invalid_token" and a message saying why', async () => {
    const claims = grant({ publish: ['*'] });
    const good = token(claims);
    const [goodHeader, , goodSignature] = good.split('.');
    const cases = [
      { name: 'expired', t: token({ ...claims, exp: nowS() - 60 }), reason: /expired/ },
      { name: 'nbf in the future', t: token({ ...claims, nbf: nowS() + 3600 }), reason: /not valid yet|nbf/ },
      { name: 'wrong secret', t: token(claims, { secret: `${SECRET}-other` }), reason: /signature/ },
      { name: 'alg none', t: token(claims, { alg: 'none' }), reason: /algorithm/ },
      { name: 'alg HS512', t: token(claims, { alg: 'HS512' }), reason: /algorithm/ },
      // A payload swapped under a valid header and signature.
      { name: 'tampered payload', t: `${goodHeader}.${b64json(grant({ publish: ['*'], subscribe: ['*'] }))}.${goodSignature}`, reason: /signature/ },
      { name: 'two parts', t: good.split('.').slice(0, 2).join('.'), reason: /well-formed/ },
      { name: 'four parts', t: `${good}.${goodSignature}`, reason: /well-formed/ },
      { name: 'garbage', t: 'x.y.z', reason: /well-formed/ },
      // RFC 7515 §4.1.11: an unknown critical extension must be refused; the
      // sentence names it beside the algorithm.
      { name: 'crit header', t: token(claims, { header: { crit: ['x-herald'], 'x-herald': 1 } }), reason: /critical extension/ },
      { name: 'herald.publish not an array', t: token({ herald: { publish: 'chat.*' } }), reason: /claims/ },
      { name: 'exp not a number', t: token({ ...claims, exp: 'tomorrow' }), reason: /claims/ },
    ];
    const messages = new Map();
    for (const c of cases) {
      const res = await publish(ctx.h.url, 'chat.refused', c.name, { headers: bearer(c.t) });
      const json = assertUnauthorized(res, { invalidToken: true });
      assert.match(json.message, c.reason, `${c.name}: ${json.message}`);
      messages.set(c.reason.source, json.message);
    }
    // One sentence per reason (expired, nbf, signature, algorithm, malformed, claims).
    assert.equal(new Set(messages.values()).size, messages.size, JSON.stringify([...messages]));
    await assertTopicAbsent(ctx.h.url, 'chat.refused');
    // The genuine token, for contrast.
    await publishOk(ctx.h.url, 'chat.refused', 'good', { headers: bearer(good) });
  });

  test('exp and nbf apply without leeway, and a token without the herald claim grants nothing', async () => {
    const claims = grant({ publish: ['chat.*'] });
    await publishOk(ctx.h.url, 'chat.times', 'x', { headers: bearer(token({ ...claims, exp: nowS() + 60, nbf: nowS() - 60 })) });
    // exp = the current second has passed already (herald's clock reads at least
    // nowS() * 1000 ms): no leeway rescues it. Same for nbf two seconds ahead.
    assertUnauthorized(await publish(ctx.h.url, 'chat.times', 'x', { headers: bearer(token({ ...claims, exp: nowS() })) }),
      { invalidToken: true, reason: /expired/ });
    assertUnauthorized(await publish(ctx.h.url, 'chat.times', 'x', { headers: bearer(token({ ...claims, nbf: nowS() + 2 })) }),
      { invalidToken: true, reason: /not valid yet/ });
    const bare = token({ exp: nowS() + 60, sub: 'someone' });
    assertForbidden(await publish(ctx.h.url, 'chat.times', 'x', { headers: bearer(bare) }), 'chat.times');
  });

  test('patterns: * matches any run of characters anywhere; at most 256 patterns per list', async () => {
    const mid = token(grant({ publish: ['room.*.log', 'exact'] }));
    await publishOk(ctx.h.url, 'room.a.b.log', 'x', { headers: bearer(mid) });
    await publishOk(ctx.h.url, 'room..log', 'x', { headers: bearer(mid) });
    await publishOk(ctx.h.url, 'exact', 'x', { headers: bearer(mid) });
    assertForbidden(await publish(ctx.h.url, 'room.a.logx', 'x', { headers: bearer(mid) }), 'room.a.logx');
    assertForbidden(await publish(ctx.h.url, 'exactly', 'x', { headers: bearer(mid) }), 'exactly');
    const list = (n) => Array.from({ length: n }, (_, i) => `p${i}.*`);
    await publishOk(ctx.h.url, 'p255.x', 'x', { headers: bearer(token(grant({ publish: list(256) }))) });
    assertUnauthorized(await publish(ctx.h.url, 'p0.x', 'x', { headers: bearer(token(grant({ publish: list(257) }))) }),
      { invalidToken: true, reason: /claims/ });
  });

  test('/healthz and /metrics stay open without a token', async () => {
    assert.equal((await request(`${ctx.h.url}/healthz`)).status, 200);
    assert.equal((await request(`${ctx.h.url}/metrics`)).status, 200);
  });

  test('browsers: the preflight allows Authorization, and a 401 carries CORS so the page can read it', async () => {
    const pre = await request(`${ctx.h.url}/topics/chat.cors`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://app.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization' },
    });
    assert.equal(pre.status, 204);
    assert.match(pre.headers.get('access-control-allow-headers') ?? '', /\bAuthorization\b/i);
    const res = await publish(ctx.h.url, 'chat.cors', 'x', { headers: { Origin: 'http://app.example' } });
    assertUnauthorized(res);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    // ...and read WWW-Authenticate, to tell a refused token from a missing one.
    assert.match(res.headers.get('access-control-expose-headers') ?? '', /\bWWW-Authenticate\b/i);
  });
});

// ---------------------------------------------------------------------------

describe('cookie tokens and Origin: cors.allow_origins ["https://app.example"]', () => {
  // A browser attaches the cookie to requests any other site's page makes (a
  // form's POST, a WebSocket), so a cookie token counts only without Origin
  // or from an origin listed by name; header and query tokens are not
  // ambient, so they count from anywhere.
  const ctx = useHerald({ ...STRICT, cors: { allow_origins: [APP_ORIGIN] } });
  const cookie = (t = CHAT_RW) => ({ Cookie: `access_token=${t}` });

  test('POST /topics/T with the cookie: 201 without Origin or from the listed origin, 401 from another (nothing published)', async () => {
    await publishOk(ctx.h.url, 'chat.ck', 'no origin', { headers: cookie() });
    await publishOk(ctx.h.url, 'chat.ck', 'listed origin', { headers: { ...cookie(), Origin: APP_ORIGIN } });
    // Treated as no token: the bare challenge, not invalid_token.
    for (const origin of [EVIL_ORIGIN, 'https://app.example.evil.example', 'http://app.example', 'null']) {
      assertUnauthorized(await publish(ctx.h.url, 'chat.ck-evil', 'x', { headers: { ...cookie(), Origin: origin } }));
    }
    await assertTopicAbsent(ctx.h.url, 'chat.ck-evil');
    // A cookie that would be refused is not even looked at from there.
    assertUnauthorized(await publish(ctx.h.url, 'chat.ck-evil', 'x', { headers: { Cookie: 'access_token=x.y.z', Origin: EVIL_ORIGIN } }));
    const info = await topicInfo(ctx.h.url, 'chat.ck');
    assert.equal(info.json.history.messages, 2, info.text);
  });

  test('the same token in the Authorization header or ?access_token= works from any origin', async () => {
    await publishOk(ctx.h.url, 'chat.ck-hdr', 'header', { headers: { ...bearer(CHAT_PUB), Origin: EVIL_ORIGIN } });
    await publishOk(ctx.h.url, 'chat.ck-hdr', 'query', { headers: { Origin: EVIL_ORIGIN }, query: `access_token=${CHAT_PUB}` });
  });

  test('batch publish and GET /events with the cookie are bound to the origin too', async () => {
    const items = [{ topic: 'chat.ck-batch', data: 'x' }];
    assertUnauthorized(await publishBatch(ctx.h.url, items, { headers: { ...cookie(), Origin: EVIL_ORIGIN } }));
    await assertTopicAbsent(ctx.h.url, 'chat.ck-batch');
    const ok = await publishBatch(ctx.h.url, items, { headers: { ...cookie(), Origin: APP_ORIGIN } });
    assert.equal(ok.status, 201, ok.text);
    assertUnauthorized(await openSSE(ctx.h.url, '/events?topic=chat.ck-sse', { headers: { ...cookie(), Origin: EVIL_ORIGIN } }));
    // An EventSource on the page's own origin sends no Origin: the cookie counts.
    const sse = await subscribe(ctx.h.url, '/events?topic=chat.ck-sse', { headers: cookie() });
    sse.close();
  });

  test('WebSocket upgrade with the cookie, websocket.allow_origins ["*"]: 401 from any origin, even one cors lists', async () => {
    // "*" lets any page open the socket, so it cannot vouch for the cookie;
    // and for an upgrade cors.allow_origins is not the list that counts.
    for (const origin of [EVIL_ORIGIN, APP_ORIGIN]) {
      const res = await wsHandshake(ctx.h.host, ctx.h.port, '/ws?topic=chat.ck-ws', { headers: { ...cookie(), Origin: origin } });
      assertUnauthorized(res);
    }
    await assertTopicAbsent(ctx.h.url, 'chat.ck-ws');
    // Without Origin (not a browser page) the cookie counts.
    const ws = await openWS(ctx.h.url, '/ws?topic=chat.ck-ws', { headers: cookie() });
    try {
      await publishOk(ctx.h.url, 'chat.ck-ws', 'to the socket', { headers: bearer(CHAT_PUB) });
      assert.equal((await ws.waitEnvelopes(1))[0].data, 'to the socket');
    } finally {
      ws.close();
    }
  });
});

describe('cookie tokens and Origin: "*" vouches for nobody; websocket.allow_origins by name', () => {
  const ctx = useHerald({ ...STRICT, cors: { allow_origins: ['*'] }, websocket: { allow_origins: [APP_ORIGIN] } });
  const cookie = (t = CHAT_RW) => ({ Cookie: `access_token=${t}` });

  test('POST /topics/T with the cookie from an origin "*" allows: 401; without Origin: 201', async () => {
    for (const origin of [APP_ORIGIN, EVIL_ORIGIN]) {
      assertUnauthorized(await publish(ctx.h.url, 'chat.star', 'x', { headers: { ...cookie(), Origin: origin } }));
    }
    await assertTopicAbsent(ctx.h.url, 'chat.star');
    await publishOk(ctx.h.url, 'chat.star', 'no origin', { headers: cookie() });
    await publishOk(ctx.h.url, 'chat.star', 'header', { headers: { ...bearer(CHAT_PUB), Origin: EVIL_ORIGIN } });
  });

  test('WebSocket upgrade with the cookie from the origin websocket.allow_origins lists: 101 and the subscription works', async () => {
    const ws = await openWS(ctx.h.url, '/ws?topic=chat.star-ws', { headers: { ...cookie(), Origin: APP_ORIGIN } });
    try {
      await publishOk(ctx.h.url, 'chat.star-ws', 'via cookie', { headers: bearer(CHAT_PUB) });
      assert.equal((await ws.waitEnvelopes(1))[0].data, 'via cookie');
      // The session holds the cookie's rights for its ops as well.
      await ws.ok({ op: 'publish', topic: 'chat.star-ws', data: 'op' });
    } finally {
      ws.close();
    }
    // Another origin is refused before any token is read (origin_not_allowed).
    assertError(await wsHandshake(ctx.h.host, ctx.h.port, '/ws?topic=chat.star-ws', { headers: { ...cookie(), Origin: EVIL_ORIGIN } }),
      403, 'origin_not_allowed');
  });
});

// ---------------------------------------------------------------------------

describe('POST /publish (batch) with anonymous access off', () => {
  const ctx = useHerald(STRICT);

  test('one forbidden item: 403 naming "Item 1", and nothing of the batch is published', async () => {
    const first = await publishOk(ctx.h.url, 'chat.batch', 'before', { headers: bearer(CHAT_PUB) });
    const res = await publishBatch(ctx.h.url, [
      { topic: 'chat.batch', data: 'a' },
      { topic: 'news.batch', data: 'b' },
      { topic: 'chat.batch2', data: 'c' },
    ], { headers: bearer(CHAT_PUB) });
    assertForbidden(res, 'Item 1', 'news.batch');
    const info = await topicInfo(ctx.h.url, 'chat.batch');
    assert.equal(info.status, 200, info.text);
    assert.equal(info.json.last_id, first.id, 'last_id unchanged: item 0 was not published');
    assert.equal(info.json.history.messages, 1);
    await assertTopicAbsent(ctx.h.url, 'news.batch');
    await assertTopicAbsent(ctx.h.url, 'chat.batch2');
  });

  test('without a token: 401 naming the item; a refused token: 401 invalid_token; nothing published', async () => {
    const items = [{ topic: 'chat.batch-anon', data: 'a' }];
    const json = assertUnauthorized(await publishBatch(ctx.h.url, items));
    assert.match(json.message, /Item 0/);
    const expired = token(grant({ publish: ['*'] }, { exp: nowS() - 5 }));
    assertUnauthorized(await publishBatch(ctx.h.url, items, { headers: bearer(expired) }), { invalidToken: true, reason: /expired/ });
    await assertTopicAbsent(ctx.h.url, 'chat.batch-anon');
  });

  test('every item allowed: 201 with every message', async () => {
    const res = await publishBatch(ctx.h.url, [
      { topic: 'chat.batch-ok', data: 'a' },
      { topic: 'chat.batch-ok', data: 'b', event: 'e' },
    ], { headers: bearer(CHAT_PUB) });
    assert.equal(res.status, 201, res.text);
    assert.equal(res.json.messages.length, 2);
    for (const m of res.json.messages) assert.match(m.id, ID_RE);
  });
});

// ---------------------------------------------------------------------------

describe('POST /publish with limits.max_topics full', () => {
  // The bystander's topic is one of the four; the block fills the rest.
  const MAX_TOPICS = 4;
  const ctx = useHerald({ ...STRICT, limits: { max_topics: MAX_TOPICS } });
  before(async () => {
    for (let i = 1; i < MAX_TOPICS; i++) await publishOk(ctx.h.url, `full.${i}`, 'x', { headers: bearer(ALL) });
  });

  test('a new topic the caller may not publish to: 401/403, not 503 topic_limit', async () => {
    // The limit is full: a caller with the rights is told so…
    assertError(await publishBatch(ctx.h.url, [{ topic: 'news.new', data: 'x' }], { headers: bearer(ALL) }), 503, 'topic_limit');
    // …but one without them learns nothing about the hub from the answer.
    const json = assertUnauthorized(await publishBatch(ctx.h.url, [{ topic: 'news.new', data: 'x' }]));
    assert.match(json.message, /Item 0/);
    assertInsufficientScope(await publishBatch(ctx.h.url, [{ topic: 'news.new', data: 'x' }], { headers: bearer(CHAT_PUB) }),
      'Item 0', 'news.new');
    // Also when an allowed item comes first (it exists, so it passes the limit).
    const chatFull = token(grant({ publish: ['full.*'] }));
    assertInsufficientScope(await publishBatch(ctx.h.url, [
      { topic: 'full.1', data: 'ok' },
      { topic: 'news.new', data: 'x' },
    ], { headers: bearer(chatFull) }), 'Item 1', 'news.new');
    // POST /topics/T checked rights first already; it agrees.
    assertInsufficientScope(await publish(ctx.h.url, 'news.new', 'x', { headers: bearer(CHAT_PUB) }), 'news.new');
    await assertTopicAbsent(ctx.h.url, 'news.new');
    const info = await topicInfo(ctx.h.url, 'full.1');
    assert.equal(info.json.history.messages, 1, 'the refused batch published nothing');
  });
});

// ---------------------------------------------------------------------------

describe('GET /events (SSE) with anonymous access off', () => {
  const ctx = useHerald(STRICT);

  test('without a token: 401 unauthorized with WWW-Authenticate: Bearer', async () => {
    const c = await openSSE(ctx.h.url, '/events?topic=chat.sse-anon');
    assertUnauthorized(c);
    await assertTopicAbsent(ctx.h.url, 'chat.sse-anon');
  });

  test('a refused token: 401 invalid_token', async () => {
    const c = await openSSE(ctx.h.url, `/events?topic=chat.sse-bad&access_token=${token(grant({ subscribe: ['*'] }), { secret: 'nope' })}`);
    assertUnauthorized(c, { invalidToken: true, reason: /signature/ });
  });

  test('a topic outside the subscribe patterns: 403; with several topics the request is refused whole', async () => {
    assertForbidden(await openSSE(ctx.h.url, '/events?topic=news', { headers: bearer(CHAT_SUB) }), "'news'");
    // A publish pattern grants no subscribing.
    assertForbidden(await openSSE(ctx.h.url, '/events?topic=chat.x', { headers: bearer(CHAT_PUB) }), 'chat.x');
    const c = await openSSE(ctx.h.url, '/events?topic=chat.sse-whole&topic=news.sse', { headers: bearer(CHAT_SUB) });
    assertForbidden(c, 'news.sse');
    // Not subscribed to the allowed one either (the topic would exist while it had a subscriber).
    await assertTopicAbsent(ctx.h.url, 'chat.sse-whole');
  });

  test('npm eventsource with ?access_token= receives what is published', async () => {
    const es = await openEventSource(`${ctx.h.url}/events?topic=chat.es&access_token=${CHAT_SUB}`);
    try {
      await publishOk(ctx.h.url, 'chat.es', 'for the browser', { headers: bearer(CHAT_PUB) });
      const [m] = await es.wait(1);
      assert.equal(m.data, 'for the browser');
    } finally {
      es.close();
    }
  });

  test('a token in the Authorization header or the cookie opens the stream too', async () => {
    const viaHeader = await subscribe(ctx.h.url, '/events?topic=chat.sse-h', { headers: bearer(CHAT_SUB) });
    const viaCookie = await subscribe(ctx.h.url, '/events?topic=chat.sse-h', { headers: { Cookie: `access_token=${CHAT_SUB}` } });
    try {
      await publishOk(ctx.h.url, 'chat.sse-h', 'both', { headers: bearer(CHAT_PUB) });
      assert.equal((await viaHeader.waitEvents(1))[0].data, 'both');
      assert.equal((await viaCookie.waitEvents(1))[0].data, 'both');
    } finally {
      viaHeader.close();
      viaCookie.close();
    }
  });
});

// ---------------------------------------------------------------------------

describe('GET /poll with anonymous access off', () => {
  const ctx = useHerald(STRICT);

  test('without a token: 401; with a refused token: 401 invalid_token', async () => {
    assertUnauthorized(await request(`${ctx.h.url}/poll?topic=chat.poll&timeout=0`));
    const expired = token(grant({ subscribe: ['*'] }, { exp: nowS() - 5 }));
    assertUnauthorized(await request(`${ctx.h.url}/poll?topic=chat.poll&timeout=0&access_token=${expired}`),
      { invalidToken: true, reason: /expired/ });
  });

  test('with a token: 200 and the messages after the cursor', async () => {
    const first = await request(`${ctx.h.url}/poll?topic=chat.poll&timeout=0`, { headers: bearer(CHAT_SUB) });
    assert.equal(first.status, 200, first.text);
    assert.deepEqual(first.json.messages, []);
    await publishOk(ctx.h.url, 'chat.poll', 'polled', { headers: bearer(CHAT_PUB) });
    const next = await request(`${ctx.h.url}/poll?topic=chat.poll&timeout=0&since=${first.json.cursor}&access_token=${CHAT_SUB}`);
    assert.equal(next.status, 200, next.text);
    assert.deepEqual(next.json.messages.map((m) => m.data), ['polled']);
  });

  test('a long-poll with a token is woken by a publish', async () => {
    const waiting = request(`${ctx.h.url}/poll?topic=chat.lpoll&timeout=10`, { headers: bearer(CHAT_SUB) });
    // The poll is in place once the topic has its subscriber.
    await until(async () => (await topicInfo(ctx.h.url, 'chat.lpoll')).json?.subscribers_by_transport?.poll === 1,
      { what: 'the long-poll to be waiting' });
    await publishOk(ctx.h.url, 'chat.lpoll', 'woken', { headers: bearer(CHAT_PUB) });
    const res = await waiting;
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.messages.map((m) => m.data), ['woken']);
  });

  test('a forbidden topic: 403, also when only one of several is', async () => {
    assertForbidden(await request(`${ctx.h.url}/poll?topic=news&timeout=0`, { headers: bearer(CHAT_SUB) }), "'news'");
    assertForbidden(await request(`${ctx.h.url}/poll?topic=chat.a&topic=news.b&timeout=0`, { headers: bearer(CHAT_SUB) }), 'news.b');
  });
});

// ---------------------------------------------------------------------------

describe('WebSocket with anonymous access off', () => {
  const ctx = useHerald(STRICT);

  test('upgrade with ?access_token=: an allowed subscribe acks and delivers; a forbidden one errors and the connection stays open', async () => {
    const ws = await openWS(ctx.h.url, `/ws?access_token=${CHAT_RW}`);
    try {
      const refused = await ws.call({ op: 'subscribe', topics: ['news'], ref: 'r-news' });
      assert.equal(refused.type, 'error', JSON.stringify(refused));
      assert.equal(refused.error, 'forbidden');
      assert.equal(refused.ref, 'r-news');
      assert.match(refused.message, /news/);
      // All or nothing: the allowed topic of a refused op is not subscribed either.
      const whole = await ws.call({ op: 'subscribe', topics: ['chat.ws-whole', 'news.ws'] });
      assert.equal(whole.error, 'forbidden', JSON.stringify(whole));
      await assertTopicAbsent(ctx.h.url, 'chat.ws-whole');
      // Still open, and a later allowed op works.
      await ws.assertUsable();
      await ws.ok({ op: 'subscribe', topics: ['chat.ws'] });
      await publishOk(ctx.h.url, 'chat.ws', 'to the socket', { headers: bearer(CHAT_PUB) });
      const [env] = await ws.waitEnvelopes(1, { topic: 'chat.ws' });
      assert.equal(env.data, 'to the socket');
      assert.equal(ws.envelopes().length, 1, 'nothing of the refused topics');
    } finally {
      ws.close();
    }
  });

  test('publish op: allowed topics ack with the id, others error forbidden and publish nothing', async () => {
    const ws = await openWS(ctx.h.url, `/ws?access_token=${CHAT_RW}`);
    try {
      const ack = await ws.ok({ op: 'publish', topic: 'chat.wsp', data: 'from ws' });
      assert.match(ack.id, ID_RE);
      assert.equal(ack.topic, 'chat.wsp');
      assert.equal((await topicInfo(ctx.h.url, 'chat.wsp')).json.last_id, ack.id);
      const refused = await ws.call({ op: 'publish', topic: 'news.wsp', data: 'no' });
      assert.equal(refused.type, 'error', JSON.stringify(refused));
      assert.equal(refused.error, 'forbidden');
      await assertTopicAbsent(ctx.h.url, 'news.wsp');
      await ws.assertUsable();
    } finally {
      ws.close();
    }
  });

  test('without a token the upgrade succeeds but subscribe and publish ops get "unauthorized"', async () => {
    const ws = await openWS(ctx.h.url, '/ws');
    try {
      const sub = await ws.call({ op: 'subscribe', topics: ['chat.ws-anon'] });
      assert.equal(sub.type, 'error', JSON.stringify(sub));
      assert.equal(sub.error, 'unauthorized');
      const pub = await ws.call({ op: 'publish', topic: 'chat.ws-anon', data: 'no' });
      assert.equal(pub.type, 'error', JSON.stringify(pub));
      assert.equal(pub.error, 'unauthorized');
      await assertTopicAbsent(ctx.h.url, 'chat.ws-anon');
      await ws.assertUsable();
    } finally {
      ws.close();
    }
  });

  test('the token may come in the upgrade request\'s Authorization header', async () => {
    const ws = await openWS(ctx.h.url, '/ws', { headers: bearer(CHAT_RW) });
    try {
      await ws.ok({ op: 'subscribe', topics: ['chat.ws-hdr'] });
    } finally {
      ws.close();
    }
  });

  test('?topic= on the upgrade: forbidden → 403, no token → 401, refused token → 401, never 101', async () => {
    await assert.rejects(openWS(ctx.h.url, `/ws?topic=news&access_token=${CHAT_RW}`),
      (err) => err.status === 403 && err.json?.error === 'forbidden');
    assertForbidden(await wsHandshake(ctx.h.host, ctx.h.port, `/ws?topic=chat.a&topic=news&access_token=${CHAT_RW}`), "'news'");
    assertUnauthorized(await wsHandshake(ctx.h.host, ctx.h.port, '/ws?topic=chat.a'));
    const expired = token(grant({ subscribe: ['*'] }, { exp: nowS() - 5 }));
    // Refused even without a topic: an invalid token is never taken for none.
    assertUnauthorized(await wsHandshake(ctx.h.host, ctx.h.port, `/ws?access_token=${expired}`), { invalidToken: true, reason: /expired/ });
    await assertTopicAbsent(ctx.h.url, 'chat.a');
    // The allowed form subscribes at once.
    const ws = await openWS(ctx.h.url, `/ws?topic=chat.ws-up&access_token=${CHAT_RW}`);
    try {
      await publishOk(ctx.h.url, 'chat.ws-up', 'at once', { headers: bearer(CHAT_PUB) });
      const [env] = await ws.waitEnvelopes(1);
      assert.equal(env.data, 'at once');
    } finally {
      ws.close();
    }
  });
});

// ---------------------------------------------------------------------------

describe('the WebSocket echo endpoint (websocket.echo_path "/echo")', () => {
  const ctx = useHerald({ ...STRICT, websocket: { echo_path: '/echo' } });

  test('a refused token is 401 there too; without a token, or with a valid one, 101 and it echoes', async () => {
    // It reaches no topic, but an invalid token is refused everywhere, never
    // taken for none (a client would otherwise not learn it is broken).
    const forged = token(grant({ subscribe: ['*'] }), { secret: 'not-the-secret' });
    assertUnauthorized(await wsHandshake(ctx.h.host, ctx.h.port, `/echo?access_token=${forged}`),
      { invalidToken: true, reason: /signature/ });
    const expired = token(grant({ subscribe: ['*'] }, { exp: nowS() - 5 }));
    assertUnauthorized(await wsHandshake(ctx.h.host, ctx.h.port, '/echo', { headers: bearer(expired) }),
      { invalidToken: true, reason: /expired/ });
    for (const [what, path] of [['no token', '/echo'], ['a valid token', `/echo?access_token=${CHAT_SUB}`]]) {
      const ws = await openWS(ctx.h.url, path);
      try {
        await ws.send(`hello with ${what}`);
        await ws.waitFor(() => ws.messages.some((m) => m.text === `hello with ${what}`), { what: 'the echo' });
      } finally {
        ws.close();
      }
    }
  });
});

// ---------------------------------------------------------------------------

describe('GET /topics with anonymous access off', () => {
  const ctx = useHerald(STRICT);
  before(async () => { await publishOk(ctx.h.url, 'chat.t', 'x', { headers: bearer(CHAT_PUB) }); });

  const get = (p, t) => request(`${ctx.h.url}${p}`, { headers: t ? bearer(t) : {} });

  test('GET /topics/T: 401 without a token, 403 with a token lacking T, 200 with it', async () => {
    assertUnauthorized(await get('/topics/chat.t'));
    const news = token(grant({ subscribe: ['news'] }));
    assertForbidden(await get('/topics/chat.t', news), 'chat.t');
    // Checked before the lookup: a topic that does not exist is 403 too, not 404.
    assertForbidden(await get('/topics/chat.nothing', news), 'chat.nothing');
    // Publish rights are not subscribe rights.
    assertForbidden(await get('/topics/chat.t', CHAT_PUB), 'chat.t');
    const ok = await get('/topics/chat.t', CHAT_SUB);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.topic, 'chat.t');
    assert.equal(ok.json.history.messages, 1);
    assertError(await get('/topics/chat.nothing', CHAT_SUB), 404, 'not_found');
  });

  test('GET /topics?prefix=: needs a pattern Q* with the prefix starting with Q', async () => {
    const room1 = token(grant({ subscribe: ['chat.room1'] }));
    assertForbidden(await get('/topics?prefix=chat.', room1), 'chat.');
    const listed = await get('/topics?prefix=chat.', CHAT_SUB);
    assert.equal(listed.status, 200, listed.text);
    assert.ok(listed.json.topics.some((t) => t.topic === 'chat.t'), listed.text);
    assert.ok(listed.json.topics.every((t) => t.topic.startsWith('chat.')), listed.text);
    // A longer prefix is still under chat.*; a shorter one is not.
    assert.equal((await get('/topics?prefix=chat.t', CHAT_SUB)).status, 200);
    assertForbidden(await get('/topics?prefix=ch', CHAT_SUB));
  });

  test('GET /topics: a prefix or after that is no topic-name text is 400 invalid_parameter, even with subscribe ["*"]', async () => {
    // Checked like topic names, so nothing but topic-name bytes reaches the
    // registry's comparisons (and no such listing is silently empty).
    for (const query of ['prefix=%FF%FE', 'prefix=a%20b', 'prefix=a+b', 'after=%00', 'after=chat.t%0A', 'prefix=chat.&after=%C3%A9']) {
      const json = assertError(await get(`/topics?${query}`, READER), 400, 'invalid_parameter');
      assert.match(json.message, /prefix and after/, `${query}: ${json.message}`);
    }
    // Topic-name text, and the empty value, still list.
    for (const query of ['prefix=chat.', 'prefix=', 'after=chat.a', 'prefix=chat.&after=']) {
      const ok = await get(`/topics?${query}`, READER);
      assert.equal(ok.status, 200, `${query}: ${ok.text}`);
    }
  });

  test('GET /topics without a prefix: 200 with ["*"], 403 with ["chat.*"], 401 without a token', async () => {
    const all = await get('/topics', READER);
    assert.equal(all.status, 200, all.text);
    assert.ok(all.json.topics.some((t) => t.topic === 'chat.t'), all.text);
    assertForbidden(await get('/topics', CHAT_SUB));
    assertUnauthorized(await get('/topics'));
    assertUnauthorized(await get('/topics?prefix=chat.'));
    assertUnauthorized(await get(`/topics?access_token=${token(grant({ subscribe: ['*'] }), { alg: 'none' })}`),
      { invalidToken: true, reason: /algorithm/ });
  });
});

// ---------------------------------------------------------------------------

describe('expiry of long-lived connections (heartbeat_s 1)', () => {
  // A short retry so that EventSource's reconnect comes at once.
  const ctx = useHerald({ ...STRICT, heartbeat_s: 1, sse: { retry_ms: 100 } });

  /** A token valid for 1–2 s (exp is in whole seconds). */
  const shortLived = () => {
    const exp = nowS() + 2;
    return { exp, t: token(grant({ publish: ['chat.*'], subscribe: ['chat.*'] }, { exp })) };
  };

  test('SSE: the stream gets event herald-token-expired and ends; reconnecting with the same token is 401', async () => {
    const { exp, t } = shortLived();
    const query = `/events?topic=chat.exp&access_token=${t}`;
    const sse = await subscribe(ctx.h.url, query);
    try {
      await publishOk(ctx.h.url, 'chat.exp', 'before expiry', { headers: bearer(CHAT_PUB) });
      await sse.waitFor((s) => s.events.some((e) => e.data === 'before expiry'), { what: 'the message' });
      await sse.waitFor((s) => s.events.some((e) => e.event === 'herald-token-expired'),
        { timeout: 6000, what: 'event herald-token-expired' });
      assert.ok(Date.now() >= exp * 1000 - 100, `expired event ${exp * 1000 - Date.now()} ms before exp`);
      const last = sse.events.at(-1);
      assert.equal(last.event, 'herald-token-expired', 'the expiry event is the last one');
      assert.equal(JSON.parse(last.data).error, 'token_expired', last.data);
      await sse.waitEnd({ timeout: 3000 });
    } finally {
      sse.close();
    }
    assertUnauthorized(await openSSE(ctx.h.url, query), { invalidToken: true, reason: /expired/ });
  });

  test('SSE with npm eventsource: after herald-token-expired it reconnects once, gets 401 and stops', async () => {
    const { t } = shortLived();
    const es = await openEventSource(`${ctx.h.url}/events?topic=chat.es-exp&access_token=${t}`, { events: ['herald-token-expired'] });
    try {
      await es.wait(1, { type: 'herald-token-expired', timeout: 6000 });
      await until(() => es.es.readyState === 2, { timeout: 5000, what: 'EventSource to give up (CLOSED)' });
      assert.equal(es.got.requests.length, 2, 'the first request and one reconnect');
      assert.equal(es.got.opens, 1);
    } finally {
      es.close();
    }
  });

  test('WebSocket: closed with 1008 "token expired"; a new upgrade with the token is 401', async () => {
    const { exp, t } = shortLived();
    const ws = await openWS(ctx.h.url, `/ws?access_token=${t}`);
    try {
      await ws.ok({ op: 'subscribe', topics: ['chat.ws-exp'] });
      const closed = await ws.waitClose({ timeout: 6000 });
      assert.deepEqual(closed, { code: 1008, reason: 'token expired' });
      assert.ok(Date.now() >= exp * 1000 - 100, `closed ${exp * 1000 - Date.now()} ms before exp`);
    } finally {
      ws.close();
    }
    await assert.rejects(openWS(ctx.h.url, `/ws?access_token=${t}`),
      (err) => err.status === 401 && err.json?.error === 'unauthorized' && /expired/.test(err.json.message));
  });

  test('a waiting long-poll is not cut short by its token expiring', async () => {
    // Valid for 1–2 s, so that it is still valid when the request arrives.
    const exp = nowS() + 2;
    const t = token(grant({ subscribe: ['chat.*'] }, { exp }));
    const started = Date.now();
    const res = await request(`${ctx.h.url}/poll?topic=chat.lpoll-exp&timeout=3&access_token=${t}`);
    assert.equal(res.status, 200, res.text);
    assert.ok(Date.now() - started >= 2500, `answered after ${Date.now() - started} ms, before its timeout`);
    assert.ok(Date.now() >= exp * 1000, 'the token expired while the poll waited');
  });
});

// ---------------------------------------------------------------------------

describe('expiry at the next delivery (heartbeat_s 60: no heartbeat comes into it)', () => {
  const BACKLOG = { count: 256, bytes: 60_000 };   // ~15 MB, well over what the sockets buffer
  const ctx = useHerald({
    ...STRICT,
    heartbeat_s: 60,
    history: { max_bytes: 64 * 1024 * 1024 },
    limits: { max_request_bytes: 8 * 1024 * 1024 },
  });

  /** A token valid for 1–2 s (exp is in whole seconds). */
  const shortLived = () => {
    const exp = nowS() + 2;
    return { exp, t: token(grant({ publish: ['chat.*'], subscribe: ['chat.*'] }, { exp })) };
  };

  test('WebSocket: the first message after expiry is not delivered; the connection is closed 1008 "token expired" instead', async () => {
    const { exp, t } = shortLived();
    const ws = await openWS(ctx.h.url, `/ws?access_token=${t}`);
    try {
      await ws.ok({ op: 'subscribe', topics: ['chat.ws-exp60'] });
      await publishOk(ctx.h.url, 'chat.ws-exp60', 'before expiry', { headers: bearer(CHAT_PUB) });
      await ws.waitEnvelopes(1);
      await waitPastExp(exp);
      // Nothing closes it on its own before the next delivery (no heartbeat for 60 s).
      assert.equal(ws.closed, null, 'still open after expiry, until something is to be sent');
      await publishOk(ctx.h.url, 'chat.ws-exp60', 'after expiry', { headers: bearer(ALL) });
      assert.deepEqual(await ws.waitClose({ timeout: 5000 }), { code: 1008, reason: 'token expired' });
      assert.deepEqual(ws.envelopes().map((e) => e.data), ['before expiry'], 'no message frame after expiry');
    } finally {
      ws.close();
    }
  });

  test('WebSocket subscribed on the upgrade (?topic=): the same', async () => {
    const { exp, t } = shortLived();
    const ws = await openWS(ctx.h.url, `/ws?topic=chat.ws-exp60-up&access_token=${t}`);
    try {
      await waitPastExp(exp);
      await publishOk(ctx.h.url, 'chat.ws-exp60-up', 'after expiry', { headers: bearer(ALL) });
      assert.deepEqual(await ws.waitClose({ timeout: 5000 }), { code: 1008, reason: 'token expired' });
      assert.deepEqual(ws.envelopes(), [], 'no message frame after expiry');
    } finally {
      ws.close();
    }
  });

  test('SSE: the first message after expiry is not delivered; the stream gets herald-token-expired and ends', async () => {
    // A live message; the one sent from history while catching up is the next test.
    const { exp, t } = shortLived();
    const sse = await subscribe(ctx.h.url, `/events?topic=chat.sse-exp60&access_token=${t}`);
    try {
      await publishOk(ctx.h.url, 'chat.sse-exp60', 'before expiry', { headers: bearer(CHAT_PUB) });
      await sse.waitEvents(1);
      await waitPastExp(exp);
      assert.equal(sse.stream.ended, false, 'still open after expiry, until something is to be sent');
      await publishOk(ctx.h.url, 'chat.sse-exp60', 'after expiry', { headers: bearer(ALL) });
      await sse.waitFor((s) => s.events.some((e) => e.event === 'herald-token-expired'),
        { timeout: 5000, what: 'event herald-token-expired' });
      await sse.waitEnd({ timeout: 3000 });
      assert.deepEqual(sse.events.map((e) => e.event ?? e.data), ['before expiry', 'herald-token-expired']);
    } finally {
      sse.close();
    }
  });

  test('SSE catching up from history: what is still owed when the token expires is not sent', async (t) => {
    // Catch-up queues history only as the connection drains. A client that
    // reads nothing stalls it once the socket buffers are full; by the time
    // it reads again its token has expired, and the rest of the backlog must
    // not follow — only what was queued while the token was valid, then
    // herald-token-expired.
    const data = 'x'.repeat(BACKLOG.bytes);
    let first;
    for (let sent = 0; sent < BACKLOG.count; sent += 64) {
      const items = Array.from({ length: Math.min(64, BACKLOG.count - sent) }, () => ({ topic: 'chat.backlog', data }));
      const res = await publishBatch(ctx.h.url, items, { headers: bearer(ALL) });
      assert.equal(res.status, 201, res.text.slice(0, 300));
      first ??= res.json.messages[0].id;
    }
    const cursor = `${parseId(first).epoch}-0`;   // before the first message: the whole backlog is owed
    const { exp, t: expiring } = shortLived();
    const conn = await RawConn.connect(ctx.h.host, ctx.h.port);
    let ended = false;
    try {
      conn.socket.pause();   // read nothing yet
      await conn.write(`GET /events?topic=chat.backlog&last_event_id=${cursor}&access_token=${expiring} HTTP/1.1\r\n`
        + 'Host: herald.test\r\nAccept: text/event-stream\r\n\r\n');
      await waitPastExp(exp);
      conn.socket.resume();
      // Parsed once it ended: the buffer is only read then (it is megabytes).
      ended = await conn.waitClose({ timeout: 10_000 }).then(() => true, () => false);
    } finally {
      conn.destroy();
    }
    const text = conn.buf.toString('utf8');
    assert.match(text, /^HTTP\/1\.1 200 /, text.slice(0, 300));
    const stream = new SSEStream();
    stream.feed(text.slice(text.indexOf('\r\n\r\n') + 4));
    const messages = stream.events.filter((e) => e.event === undefined);
    t.diagnostic(`${messages.length} of ${BACKLOG.count} backlog messages arrived`);
    assert.ok(ended, `the stream did not end within 10 s; it got ${messages.length} of ${BACKLOG.count} `
      + `messages, then ${JSON.stringify(stream.events.slice(messages.length).map((e) => e.event))}`);
    assert.ok(messages.length > 0, 'some of the backlog was queued while the token was valid');
    assert.ok(messages.length < BACKLOG.count,
      `${messages.length} of ${BACKLOG.count} backlog messages arrived: the rest was sent after expiry`);
    assert.ok(messages.every((m) => m.data === data), 'whole messages only');
    assert.equal(stream.events.at(-1).event, 'herald-token-expired', 'the stream ends with herald-token-expired');
  });
});

// ---------------------------------------------------------------------------

describe('a secret set, anonymous flags left at their defaults (true)', () => {
  const ctx = useHerald({ auth: { jwt_secret: SECRET } });

  test('no token: publishing and subscribing are allowed', async () => {
    await publishOk(ctx.h.url, 'open.topic', 'anon');
    const sse = await subscribe(ctx.h.url, '/events?topic=open.topic');
    sse.close();
    assert.equal((await request(`${ctx.h.url}/topics/open.topic`)).status, 200);
    const ws = await openWS(ctx.h.url, '/ws?topic=open.topic');
    try { await ws.ok({ op: 'publish', topic: 'open.topic', data: 'anon ws' }); } finally { ws.close(); }
  });

  test('an invalid token is 401 anyway, never treated as absent', async () => {
    const expired = token(grant({ publish: ['*'] }, { exp: nowS() - 5 }));
    assertUnauthorized(await publish(ctx.h.url, 'open.bad', 'x', { headers: bearer(expired) }), { invalidToken: true, reason: /expired/ });
    assertUnauthorized(await publish(ctx.h.url, 'open.bad', 'x', { headers: { Cookie: 'access_token=x.y.z' } }), { invalidToken: true, reason: /well-formed/ });
    assertUnauthorized(await openSSE(ctx.h.url, `/events?topic=open.bad&access_token=${token({}, { secret: 'other' })}`), { invalidToken: true });
    assertUnauthorized(await wsHandshake(ctx.h.host, ctx.h.port, `/ws?access_token=${expired}`), { invalidToken: true });
    await assertTopicAbsent(ctx.h.url, 'open.bad');
  });

  test('a valid token adds to the anonymous rights, it takes none away', async () => {
    await publishOk(ctx.h.url, 'news.any', 'x', { headers: bearer(CHAT_PUB) });
    await publishOk(ctx.h.url, 'news.any', 'y', { headers: bearer(token({ sub: 'no herald claim' })) });
  });
});

// ---------------------------------------------------------------------------

describe('no key configured (default config): tokens are not looked at', () => {
  const ctx = useHerald({});

  test('a garbage bearer token, access_token cookie or query parameter is ignored', async () => {
    await publishOk(ctx.h.url, 'plain', 'a', { headers: { Authorization: 'Bearer x.y.z' } });
    await publishOk(ctx.h.url, 'plain', 'b', { headers: { Cookie: 'access_token=garbage-of-another-service' } });
    await publishOk(ctx.h.url, 'plain', 'c', { query: 'access_token=garbage' });
    // Even a token that would be refused for a reason (expired).
    await publishOk(ctx.h.url, 'plain', 'd', { headers: bearer(token({ exp: 1 })) });
    const res = await publishBatch(ctx.h.url, [{ topic: 'plain', data: 'e' }], { headers: { Authorization: 'Bearer x.y.z' } });
    assert.equal(res.status, 201, res.text);
    const sse = await subscribe(ctx.h.url, '/events?topic=plain', { headers: { Authorization: 'Bearer x.y.z' } });
    sse.close();
    const poll = await request(`${ctx.h.url}/poll?topic=plain&timeout=0`, { headers: { Cookie: 'access_token=garbage' } });
    assert.equal(poll.status, 200, poll.text);
    const info = await request(`${ctx.h.url}/topics/plain`, { headers: { Authorization: 'Bearer x.y.z' } });
    assert.equal(info.status, 200, info.text);
    assert.equal(info.json.history.messages, 5);
    const ws = await openWS(ctx.h.url, '/ws?topic=plain&access_token=garbage');
    try { await ws.assertUsable(); } finally { ws.close(); }
  });
});

// ---------------------------------------------------------------------------

describe('RS256 with auth.jwt_public_key a PEM file', () => {
  const rs = (claims, key = rsa.privateKey) => token(claims, { alg: 'RS256', key });
  const ctx = useHerald({ auth: { jwt_public_key: RSA_FILE, anonymous_publish: false, anonymous_subscribe: false } },
    { bystanderToken: rs(grant({ publish: ['*'], subscribe: ['*'] })) });

  test('a valid RS256 token publishes and subscribes by its patterns', async () => {
    const t = rs(grant({ publish: ['chat.*'], subscribe: ['chat.*'] }));
    const sse = await subscribe(ctx.h.url, `/events?topic=chat.rs&access_token=${t}`);
    try {
      await publishOk(ctx.h.url, 'chat.rs', 'signed by RSA', { headers: bearer(t) });
      assert.equal((await sse.waitEvents(1))[0].data, 'signed by RSA');
      assertForbidden(await publish(ctx.h.url, 'news.rs', 'x', { headers: bearer(t) }), 'news.rs');
    } finally {
      sse.close();
    }
  });

  test('refused: another RSA key (signature), HS256 even keyed with the public key (algorithm), ES256 (algorithm)', async () => {
    const claims = grant({ publish: ['*'] });
    assertUnauthorized(await publish(ctx.h.url, 'chat.rs-bad', 'x', { headers: bearer(rs(claims, rsaOther.privateKey)) }),
      { invalidToken: true, reason: /signature/ });
    // The classic algorithm confusion: HMAC keyed with the public key's PEM.
    assertUnauthorized(await publish(ctx.h.url, 'chat.rs-bad', 'x', { headers: bearer(token(claims, { secret: pemOf(rsa) })) }),
      { invalidToken: true, reason: /algorithm/ });
    assertUnauthorized(await publish(ctx.h.url, 'chat.rs-bad', 'x', { headers: bearer(token(claims)) }),
      { invalidToken: true, reason: /algorithm/ });
    assertUnauthorized(await publish(ctx.h.url, 'chat.rs-bad', 'x', { headers: bearer(token(claims, { alg: 'ES256', key: ec.privateKey })) }),
      { invalidToken: true, reason: /algorithm/ });
    await assertTopicAbsent(ctx.h.url, 'chat.rs-bad', rs(grant({ subscribe: ['*'] })));
  });
});

describe('ES256 with auth.jwt_public_key a PEM file', () => {
  const es = (claims, opts = {}) => token(claims, { alg: 'ES256', key: ec.privateKey, ...opts });
  const ctx = useHerald({ auth: { jwt_public_key: EC_FILE, anonymous_publish: false, anonymous_subscribe: false } },
    { bystanderToken: es(grant({ publish: ['*'], subscribe: ['*'] })) });

  test('a valid ES256 token publishes by its patterns', async () => {
    const t = es(grant({ publish: ['chat.*'] }));
    await publishOk(ctx.h.url, 'chat.es256', 'signed by P-256', { headers: bearer(t) });
    assertForbidden(await publish(ctx.h.url, 'news.es256', 'x', { headers: bearer(t) }), 'news.es256');
  });

  test('refused: another EC key or a DER signature (signature), RS256 with only an EC key (algorithm)', async () => {
    const claims = grant({ publish: ['*'] });
    assertUnauthorized(await publish(ctx.h.url, 'chat.es-bad', 'x', { headers: bearer(es(claims, { key: ecOther.privateKey })) }),
      { invalidToken: true, reason: /signature/ });
    assertUnauthorized(await publish(ctx.h.url, 'chat.es-bad', 'x', { headers: bearer(es(claims, { der: true })) }),
      { invalidToken: true, reason: /signature/ });
    assertUnauthorized(await publish(ctx.h.url, 'chat.es-bad', 'x', { headers: bearer(token(claims, { alg: 'RS256', key: rsa.privateKey })) }),
      { invalidToken: true, reason: /algorithm/ });
    await assertTopicAbsent(ctx.h.url, 'chat.es-bad', es(grant({ subscribe: ['*'] })));
  });
});

describe('ES256 with auth.jwt_public_key as PEM text, next to a jwt_secret', () => {
  const es = (claims) => token(claims, { alg: 'ES256', key: ec.privateKey });
  const ctx = useHerald({ auth: { jwt_secret: SECRET, jwt_public_key: pemOf(ec), anonymous_publish: false, anonymous_subscribe: false } },
    { bystanderToken: es(grant({ publish: ['*'], subscribe: ['*'] })) });

  test('ES256 tokens and HS256 tokens are both accepted', async () => {
    const t = es(grant({ publish: ['chat.*'], subscribe: ['chat.*'] }));
    const sse = await subscribe(ctx.h.url, '/events?topic=chat.pem', { headers: bearer(t) });
    try {
      await publishOk(ctx.h.url, 'chat.pem', 'es', { headers: bearer(t) });
      await publishOk(ctx.h.url, 'chat.pem', 'hs', { headers: bearer(CHAT_PUB) });
      assert.deepEqual((await sse.waitEvents(2)).map((e) => e.data), ['es', 'hs']);
    } finally {
      sse.close();
    }
    assertUnauthorized(await publish(ctx.h.url, 'chat.pem', 'x', { headers: bearer(token(grant({ publish: ['*'] }), { alg: 'ES256', key: ecOther.privateKey })) }),
      { invalidToken: true, reason: /signature/ });
  });
});

// ---------------------------------------------------------------------------

describe('start-up: keys herald cannot use', () => {
  /** Runs herald with the config and asserts exit 2 with one stderr line naming auth.jwt_public_key. */
  async function expectKeyError(auth) {
    const { dir, file } = writeConfig({ auth });
    try {
      const r = await runHerald(['--config', file, '--listen', '127.0.0.1:0']);
      assert.equal(r.code, 2, `exit code: ${r.code}; stderr:\n${r.stderr}`);
      assertSanitizerClean(r.stderr);
      const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
      assert.equal(lines.length, 1, `expected exactly one stderr line, got:\n${r.stderr}`);
      assert.match(lines[0], /auth\.jwt_public_key/);
      assert.doesNotMatch(r.stderr, /listening on/);
      return lines[0];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test('a missing file: exit 2 naming auth.jwt_public_key', async () => {
    const missing = path.join(keyDir, 'no-such-key.pem');
    const line = await expectKeyError({ jwt_public_key: missing });
    assert.ok(line.includes(missing), line);
  });

  test('a file that is not a PEM key: exit 2 naming auth.jwt_public_key', async () => {
    await expectKeyError({ jwt_public_key: keyFile('not-a-key.pem', 'this is not a key\n') });
    // A private key where the public one belongs: a likely slip.
    await expectKeyError({ jwt_public_key: keyFile('private.pem', ec.privateKey.export({ type: 'pkcs8', format: 'pem' })) });
    // PEM text that is not a key.
    await expectKeyError({ jwt_public_key: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' });
  });

  test('a key of the wrong kind: RSA under 2048 bits, an EC key not on P-256', async () => {
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
    await expectKeyError({ jwt_public_key: keyFile('rsa1024.pem', pemOf(small)) });
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    await expectKeyError({ jwt_public_key: pemOf(p384) });
  });

  test('no key but anonymous access denied: starts with a warning, and every token is ignored (401)', async () => {
    const h = await startHerald({ config: { auth: { anonymous_publish: false } } });
    try {
      await h.waitForStderr(/warn.*jwt_secret/);
      assertUnauthorized(await publish(h.url, 'warned', 'x', { headers: bearer(ALL) }));
      // Subscribing is still anonymous.
      const sse = await subscribe(h.url, '/events?topic=warned');
      sse.close();
    } finally {
      await h.stop();
    }
  });
});

// ---------------------------------------------------------------------------

describe('start-up: a short auth.jwt_secret', () => {
  // RFC 7518 §3.2: an HS256 key must be at least 256 bits. herald uses the
  // string's bytes as they are, so a short one is short, whatever it encodes.
  test('under 32 bytes: a warn line naming auth.jwt_secret, its length and 32; herald still runs', async () => {
    const secret = 's'.repeat(31);
    const h = await startHerald({ config: { auth: { jwt_secret: secret, anonymous_publish: false } } });
    try {
      const [line] = await h.waitForStderr(/^.*\bwarn\b.*auth\.jwt_secret.*$/m);
      assert.match(line, /\b31 bytes\b/, line);
      assert.match(line, /\b32\b/, line);
      assert.ok(!line.includes(secret), `the warning must not print the secret: ${line}`);
      await publishOk(h.url, 'short', 'x', { headers: bearer(token(grant({ publish: ['*'] }), { secret })) });
    } finally {
      await h.stop();
    }
  });

  test('32 bytes: no such line; the bytes are the key as written, not base64-decoded', async () => {
    // 32 characters of base64 text (24 bytes once decoded): long enough as written.
    const secret = Buffer.from('herald-test-24-byte-key!').toString('base64');
    assert.equal(secret.length, 32);
    const h = await startHerald({ config: { auth: { jwt_secret: secret, anonymous_publish: false } } });
    try {
      // The warning would come before "listening on", which startHerald waited for.
      assert.doesNotMatch(h.stderr(), /jwt_secret/, h.stderr());
      await publishOk(h.url, 'long', 'x', { headers: bearer(token(grant({ publish: ['*'] }), { secret })) });
      const decoded = token(grant({ publish: ['*'] }), { secret: Buffer.from(secret, 'base64') });
      assertUnauthorized(await publish(h.url, 'long', 'x', { headers: bearer(decoded) }), { invalidToken: true, reason: /signature/ });
    } finally {
      await h.stop();
    }
  });
});

// ---------------------------------------------------------------------------

describe('logs (log_level debug)', () => {
  test('tokens sent in the query string or the Authorization header never reach stderr', async () => {
    const h = await startHerald({ config: { log_level: 'debug', auth: { jwt_secret: SECRET } } });
    try {
      const t = token(grant({ publish: ['chat.*'], subscribe: ['chat.*'] }, { jti: 'log-test-token' }));
      const refused = token(grant({ publish: ['*'] }), { secret: 'other' });
      await publishOk(h.url, 'chat.log', 'h', { headers: bearer(t) });
      await publishOk(h.url, 'chat.log', 'q', { query: `access_token=${t}` });
      assert.equal((await publish(h.url, 'chat.log', 'r', { query: `access_token=${refused}` })).status, 401);
      assert.equal((await publish(h.url, 'chat.log', 'r', { headers: bearer(refused) })).status, 401);
      const sse = await subscribe(h.url, `/events?topic=chat.log&access_token=${t}`);
      sse.close();
      const ws = await openWS(h.url, `/ws?topic=chat.log&access_token=${t}`);
      ws.close();
      // The request lines are logged (so the check below is not vacuous)…
      await until(() => (h.stderr().match(/POST \/topics\/chat\.log$/gm) ?? []).length === 4,
        { what: () => `4 POST request lines; stderr:\n${h.stderr()}` });
      await h.waitForStderr(/GET \/events$/m);
      await h.waitForStderr(/GET \/ws$/m);
      // …without their tokens, whole or in part.
      const stderr = h.stderr();
      for (const secret of [t, t.split('.')[2], refused, refused.split('.')[2], 'access_token']) {
        assert.ok(!stderr.includes(secret), `stderr contains ${secret}:\n${stderr}`);
      }
    } finally {
      await h.stop();
    }
  });
});
