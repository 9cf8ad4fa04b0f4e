// herald.js (clients/js/herald.js, docs/api.md "herald.js") in headless
// Chromium against the real binary: served at /herald.js with an ETag; on
// each transport forced in turn it receives, publishes, subscribes and
// unsubscribes; behind a proxy that refuses WebSocket it lands on SSE, behind
// one that buffers streams on long-polling, and back on WebSocket once the
// proxy is fixed; connections cut again and again during a steady stream
// lose and repeat nothing, and a gap is said exactly when history was
// exceeded; a cross-origin page authenticates by cookie only when its
// origin is listed.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startHerald, publishOk, request, until } from '../lib/harness.mjs';
import {
  launchChromium, startPageServer, startSwitchProxy, heraldJsPage, publishStream, mintHs256,
} from '../lib/browser.mjs';

const SOURCE = new URL('../../clients/js/', import.meta.url);
const HERALD_JS = readFileSync(new URL('herald.js', SOURCE));
const HERALD_D_TS = readFileSync(new URL('herald.d.ts', SOURCE));

// herald runs with heartbeat_s 1, so a buffered stream is noticed in 2 × 1 s + 300 ms.
const OPTS = {
  heartbeat: 1, heartbeatMargin: 300, backoff: { base: 50, cap: 300 }, pollTimeout: 2, upgradeAfter: 1000,
};
const TRANSPORTS = ['websocket', 'sse', 'poll'];

let browser;
let pages;
let otherPages;

before(async () => {
  pages = await startPageServer(heraldJsPage);
  // A page of an origin herald does not list cannot load herald's /herald.js: it has its own copy.
  otherPages = await startPageServer(heraldJsPage,
    { '/herald.js': { type: 'text/javascript; charset=utf-8', body: HERALD_JS } });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await pages?.close();
  await otherPages?.close();
});

/** A page of `origin` that imported herald.js from `heraldUrl`. */
async function openPage(heraldUrl, origin = pages.origin) {
  const page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (err) => process.stderr.write(`page error: ${err.stack}\n`));
  await page.goto(`${origin}/?herald=${encodeURIComponent(heraldUrl)}`);
  await page.waitForFunction(() => window.heraldReady === true);
  return page;
}

const make = (page, url, options) => page.evaluate(([u, o]) => window.make(u, o), [url, options]);
const logOf = (page, i) => page.evaluate((n) => window.clients[n].log, i);
const call = (page, i, method, ...args) =>
  page.evaluate(async ([n, m, a]) => {
    try {
      return { value: await window.clients[n].h[m](...a) };
    } catch (err) {
      return { error: err.code };
    }
  }, [i, method, args]);
const transportOf = (page, i) => page.evaluate((n) => window.clients[n].h.transport, i);
const waitOpen = (page, i, transport) =>
  page.waitForFunction(([n, t]) => window.clients[n].h.transport === t, [i, transport]);
const waitMessages = (page, i, count) =>
  page.waitForFunction(([n, c]) => window.clients[n].log.messages.length >= c, [i, count]);
const waitId = (page, i, id) =>
  page.waitForFunction(([n, x]) => window.clients[n].log.messages.some((m) => m.id === x), [i, id]);
const closeClient = (page, i) => page.evaluate((n) => window.clients[n].h.close(), i);

/**
 * Stops a publishStream and checks that client i received every message of
 * it exactly once, in order, with no gap (and, when given, over these
 * transports in turn); then closes the client.
 */
async function assertWholeStream(page, i, stream, transports) {
  stream.stop();
  const ids = await stream.done;
  await waitId(page, i, ids.at(-1));
  const log = await logOf(page, i);
  assert.deepEqual(log.messages.map((m) => m.id), ids);
  assert.deepEqual(log.gaps, []);
  if (transports) assert.deepEqual(log.opens.filter((t, n) => t !== log.opens[n - 1]), transports);
  await closeClient(page, i);
}

describe('GET /herald.js', () => {
  let herald;
  before(async () => { herald = await startHerald(); });
  after(async () => { await herald?.stop(); });

  test('the repository file, with a strong ETag, 304 on If-None-Match, HEAD and 405', async () => {
    const res = await fetch(`${herald.url}/herald.js`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(res.headers.get('cache-control'), 'no-cache');
    const etag = res.headers.get('etag');
    assert.match(etag, /^"[0-9a-f]{32}"$/);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), HERALD_JS);

    for (const match of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const again = await fetch(`${herald.url}/herald.js`, { headers: { 'If-None-Match': match } });
      assert.equal(again.status, 304, match);
      assert.equal(again.headers.get('etag'), etag);
      assert.equal((await again.arrayBuffer()).byteLength, 0);
    }
    for (const match of ['"other"', 'W/', '', ',,', etag.slice(0, -1), `${etag}x`]) {
      const other = await request(`${herald.url}/herald.js`, { headers: { 'If-None-Match': match } });
      assert.equal(other.status, 200, match);
      assert.equal(other.text, HERALD_JS.toString());
    }
    assert.equal((await request(`${herald.url}/herald.js/`)).status, 404);
    assert.equal((await request(`${herald.url}/herald.jsx`)).status, 404);

    const head = await fetch(`${herald.url}/herald.js`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(HERALD_JS.length));
    assert.equal(head.headers.get('etag'), etag);

    const dts = await fetch(`${herald.url}/herald.d.ts`);
    assert.equal(dts.status, 200);
    assert.deepEqual(Buffer.from(await dts.arrayBuffer()), HERALD_D_TS);
    assert.notEqual(dts.headers.get('etag'), etag);

    const post = await request(`${herald.url}/herald.js`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');

    // With "*" (the default) there are no credentials: browsers refuse both together.
    const cors = await fetch(`${herald.url}/herald.js`, { headers: { Origin: 'http://example.com' } });
    assert.equal(cors.headers.get('access-control-allow-origin'), '*');
    assert.equal(cors.headers.get('access-control-allow-credentials'), null);
    assert.match(cors.headers.get('access-control-expose-headers'), /\bRetry-After\b/);
    await cors.arrayBuffer();
  });
});

describe('herald.js in Chromium', () => {
  let herald;
  let proxy;
  let page;

  before(async () => {
    herald = await startHerald({
      config: { heartbeat_s: 1, sse: { retry_ms: 100 }, cors: { allow_origins: [pages.origin] } },
    });
    proxy = await startSwitchProxy(herald.port);
    page = await openPage(herald.url);
  });

  after(async () => {
    await page?.close();
    await proxy?.close();
    await herald?.stop();
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: receives, publishes, subscribes and unsubscribes on the fly`, async () => {
      const a = `a-${transport}`;
      const b = `b-${transport}`;
      const i = await make(page, herald.url, { ...OPTS, topics: [a], transports: [transport] });
      await waitOpen(page, i, transport);

      const first = await publishOk(herald.url, a, 'from node');
      const mine = await call(page, i, 'publish', a, 'from the page', { event: 'note' });
      assert.equal(mine.value.topic, a);
      // A long-poll counts only while a poll waits (none between two polls).
      if (transport !== 'poll') assert.equal(mine.value.subscribers, 1);
      await waitMessages(page, i, 2);
      let log = await logOf(page, i);
      assert.deepEqual(log.messages.map(({ id, topic, event, data }) => ({ id, topic, event, data })), [
        { id: first.id, topic: a, event: undefined, data: 'from node' },
        { id: mine.value.id, topic: a, event: 'note', data: 'from the page' },
      ]);
      assert.equal(typeof log.messages[0].time, 'number');

      // Safe retries and refusals.
      const keyed = await call(page, i, 'publish', a, 'once', { idempotencyKey: `k-${transport}` });
      const again = await call(page, i, 'publish', a, 'once', { idempotencyKey: `k-${transport}` });
      assert.equal(again.value.id, keyed.value.id);
      assert.equal(again.value.duplicate, true);
      assert.deepEqual(await call(page, i, 'publish', 'no spaces', 'x'), { error: 'invalid_topic' });
      await waitMessages(page, i, 3);

      await call(page, i, 'subscribe', [b]);
      const onB = await publishOk(herald.url, b, 'b1');
      await waitId(page, i, onB.id);

      await call(page, i, 'unsubscribe', [a]);
      const dropped = await publishOk(herald.url, a, 'not any more');
      const kept = await publishOk(herald.url, b, 'b2');
      await waitId(page, i, kept.id);
      log = await logOf(page, i);
      assert.deepEqual(log.messages.map((m) => m.id), [first.id, mine.value.id, keyed.value.id, onB.id, kept.id]);
      assert.ok(!log.messages.some((m) => m.id === dropped.id));
      assert.deepEqual(log.gaps, []);
      assert.ok(log.opens.every((t) => t === transport), log.opens.join());
      assert.equal(await transportOf(page, i), transport);
      await closeClient(page, i);
      log = await logOf(page, i);
      assert.equal(log.closes.at(-1).willReconnect, false);
    });
  }

  test('falls back to SSE, then long-polling, and returns to WebSocket; nothing lost or repeated', async () => {
    proxy.setMode('noUpgrade');
    const i = await make(page, proxy.url, { ...OPTS, topics: ['fallback'] });
    await waitOpen(page, i, 'sse');
    assert.ok(proxy.stats.refusedUpgrades >= 1);
    const stream = publishStream(herald.url, 'fallback', { count: 100_000, everyMs: 25 });
    await waitMessages(page, i, 5);

    // A proxy that holds streams back: SSE delivers nothing, long-polling does.
    proxy.setMode('buffer');
    proxy.sever();
    await waitOpen(page, i, 'poll');
    const onPoll = (await logOf(page, i)).messages.length;
    await waitMessages(page, i, onPoll + 5);

    proxy.setMode('pass');
    await waitOpen(page, i, 'websocket');
    const onWs = (await logOf(page, i)).messages.length;
    await waitMessages(page, i, onWs + 5);

    await assertWholeStream(page, i, stream, ['sse', 'poll', 'websocket']);
  });

  test('on long-polling, returns to WebSocket after upgradeAfterPolls polls; nothing lost or repeated', async () => {
    // upgradeAfter is far off: only the count of polls can bring it back.
    proxy.setMode('buffer');
    const i = await make(page, proxy.url, { ...OPTS, topics: ['by-polls'], upgradeAfter: 600_000, upgradeAfterPolls: 8 });
    await waitOpen(page, i, 'poll');
    const stream = publishStream(herald.url, 'by-polls', { count: 100_000, everyMs: 40 });
    await waitMessages(page, i, 3);
    proxy.setMode('pass');
    const fixed = Date.now();
    await waitOpen(page, i, 'websocket');
    // Each poll answers with what the stream published since the last: 8 polls take well under upgradeAfter.
    assert.ok(Date.now() - fixed < 15_000);
    const onWs = (await logOf(page, i)).messages.length;
    await waitMessages(page, i, onWs + 5);
    await assertWholeStream(page, i, stream, ['poll', 'websocket']);
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: connections cut again and again lose and repeat nothing`, async () => {
      const topic = `cut-${transport}`;
      const i = await make(page, proxy.url, { ...OPTS, topics: [topic], transports: [transport] });
      await waitOpen(page, i, transport);
      const stream = publishStream(herald.url, topic, { count: 100_000, everyMs: 15 });
      for (let cut = 0; cut < 6; cut++) {
        const have = (await logOf(page, i)).messages.length;
        proxy.sever();
        await waitMessages(page, i, have + 4);
      }
      await assertWholeStream(page, i, stream);
    });
  }
  test('honours Retry-After on a 503', async () => {
    const i = await make(page, proxy.url, { ...OPTS, topics: ['retry-after'], transports: ['poll'] });
    await waitOpen(page, i, 'poll');
    const from = proxy.stats.acceptTimes.length;
    proxy.setMode('unavailable');
    proxy.sever();
    await until(() => proxy.stats.acceptTimes.length >= from + 3, { timeout: 10_000, what: 'three attempts' });
    proxy.setMode('pass');
    const [, second, third] = proxy.stats.acceptTimes.slice(from);
    // Without Retry-After: 1 the backoff (base 50 ms, cap 300 ms) would come back sooner.
    assert.ok(third - second >= 950, `retried after ${third - second} ms`);
    const sent = await publishOk(herald.url, 'retry-after', 'after the 503s');
    await waitId(page, i, sent.id);
    await closeClient(page, i);
  });

  test('pauses while offline and resumes from its last id', async () => {
    const i = await make(page, herald.url, { ...OPTS, topics: ['offline'] });
    await waitOpen(page, i, 'websocket');
    const first = await publishOk(herald.url, 'offline', 'before');
    await waitId(page, i, first.id);
    await page.context().setOffline(true);
    await page.waitForFunction((n) => window.clients[n].log.closes.some((c) => c.paused === 'offline'), i);
    const missed = [];
    for (let n = 0; n < 3; n++) missed.push((await publishOk(herald.url, 'offline', `away ${n}`)).id);
    await page.context().setOffline(false);
    await waitId(page, i, missed.at(-1));
    const log = await logOf(page, i);
    assert.deepEqual(log.messages.map((m) => m.id), [first.id, ...missed]);
    assert.deepEqual(log.opens, ['websocket', 'websocket']);
    await closeClient(page, i);
  });

  test('pauses while the page is hidden when asked to', async () => {
    const setHidden = (hidden) => page.evaluate((h) => {
      if (h) Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
      else delete document.hidden;
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    const i = await make(page, herald.url, { ...OPTS, topics: ['hidden'], pauseWhenHidden: true });
    await waitOpen(page, i, 'websocket');
    await setHidden(true);
    await page.waitForFunction((n) => window.clients[n].h.transport === null, i);
    const missed = (await publishOk(herald.url, 'hidden', 'while hidden')).id;
    await setHidden(false);
    await waitId(page, i, missed);
    const log = await logOf(page, i);
    assert.deepEqual(log.closes.map((c) => c.paused), ['hidden']);
    await closeClient(page, i);
  });
});

describe('herald.js gaps', () => {
  let herald;
  let proxy;
  let page;

  before(async () => {
    herald = await startHerald({
      config: {
        heartbeat_s: 1, sse: { retry_ms: 1500 }, history: { max_messages: 10 }, cors: { allow_origins: [pages.origin] },
      },
    });
    proxy = await startSwitchProxy(herald.port);
    page = await openPage(herald.url);
  });

  after(async () => {
    await page?.close();
    await proxy?.close();
    await herald?.stop();
  });

  test('a gap exactly when history was exceeded while away, then what history holds', async () => {
    const i = await make(page, proxy.url, { ...OPTS, topics: ['gap'], upgradeAfter: 60_000 });
    await waitOpen(page, i, 'websocket');
    const before = [];
    for (let n = 0; n < 3; n++) before.push((await publishOk(herald.url, 'gap', `b${n}`)).id);
    await waitId(page, i, before.at(-1));

    // Away while 25 are published: history keeps the last 10.
    proxy.hold();
    proxy.sever();
    const away = [];
    for (let n = 0; n < 25; n++) away.push((await publishOk(herald.url, 'gap', `a${n}`)).id);
    proxy.release();
    await waitId(page, i, away.at(-1));
    const after = (await publishOk(herald.url, 'gap', 'live')).id;
    await waitId(page, i, after);

    const log = await logOf(page, i);
    assert.deepEqual(log.gaps, [{ topic: 'gap', from: before.at(-1), to: away[14] }]);
    assert.deepEqual(log.messages.map((m) => m.id), [...before, ...away.slice(15), after]);
    await closeClient(page, i);
  });
  test('waits the SSE retry: value before reconnecting a dropped stream', async () => {
    const i = await make(page, proxy.url, { ...OPTS, topics: ['sse-retry'], transports: ['sse'] });
    await waitOpen(page, i, 'sse');
    const from = proxy.stats.acceptTimes.length;
    const cut = Date.now();
    proxy.sever();
    await page.waitForFunction((n) => window.clients[n].log.opens.length >= 2, i);
    const again = proxy.stats.acceptTimes[from];
    assert.ok(again - cut >= 1400, `reconnected after ${again - cut} ms`);
    await closeClient(page, i);
  });
});

describe('herald.js with a cookie token', () => {
  const SECRET = 'herald-js-cookie-secret-0123456789abcdef';
  const mint = (claims) => mintHs256(SECRET, claims);
  const TOKEN = mint({ herald: { subscribe: ['*'], publish: ['*'] } });
  let herald;

  before(async () => {
    herald = await startHerald({
      config: {
        auth: { jwt_secret: SECRET, anonymous_subscribe: false, anonymous_publish: false },
        cors: { allow_origins: [pages.origin] },
        websocket: { allow_origins: [pages.origin] },
      },
    });
  });

  after(async () => { await herald?.stop(); });

  test('herald allows credentials for a listed origin only', async () => {
    const url = `${herald.url}/poll?topic=secret&timeout=0`;
    const cookie = `access_token=${TOKEN}`;
    const listed = await fetch(url, { headers: { Origin: pages.origin, Cookie: cookie } });
    assert.equal(listed.status, 200);
    assert.equal(listed.headers.get('access-control-allow-origin'), pages.origin);
    assert.equal(listed.headers.get('access-control-allow-credentials'), 'true');
    await listed.arrayBuffer();
    const preflight = await fetch(`${herald.url}/topics/secret`, {
      method: 'OPTIONS',
      headers: { Origin: pages.origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'idempotency-key' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-credentials'), 'true');
    assert.match(preflight.headers.get('access-control-allow-headers'), /\bIdempotency-Key\b/);
    await preflight.arrayBuffer();
    const other = await fetch(url, { headers: { Origin: otherPages.origin, Cookie: cookie } });
    assert.equal(other.status, 401);
    assert.equal(other.headers.get('access-control-allow-credentials'), null);
    await other.arrayBuffer();
  });

  test('a listed origin subscribes by cookie on every transport; another origin is refused', async () => {
    const page = await openPage(herald.url);
    const otherPage = await openPage(otherPages.origin, otherPages.origin);
    try {
      // Cookies are per host, not per port: both pages' requests to herald carry it.
      await page.evaluate((t) => { document.cookie = `access_token=${t}; path=/`; }, TOKEN);
      for (const transport of TRANSPORTS) {
        const topic = `secret-${transport}`;
        const i = await make(page, herald.url,
          { ...OPTS, topics: [topic], transports: [transport], credentials: 'include' });
        await waitOpen(page, i, transport);
        const sent = await publishOk(herald.url, topic, 'for cookie holders', { headers: { Authorization: `Bearer ${TOKEN}` } });
        await waitId(page, i, sent.id);
        await closeClient(page, i);
      }

      const j = await make(otherPage, herald.url,
        { ...OPTS, topics: ['secret-other'], transports: ['poll'], credentials: 'include' });
      await otherPage.waitForFunction((n) => window.clients[n].log.errors.length >= 2, j);
      const log = await logOf(otherPage, j);
      assert.deepEqual(log.opens, []);
      assert.deepEqual(log.messages, []);
      await closeClient(otherPage, j);
    } finally {
      await page.close();
      await otherPage.close();
    }
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: the token callback is asked again when the token expires; nothing lost`, async () => {
      const topic = `expiring-${transport}`;
      const page = await openPage(herald.url);
      try {
        // The first call gets a token that expires in a few seconds, later calls one that does not.
        const short = mint({ exp: Math.floor(Date.now() / 1000) + 3, herald: { subscribe: ['*'] } });
        const i = await page.evaluate(([url, options, first, then]) => {
          window.tokenCalls = 0;
          const token = async () => { window.tokenCalls += 1; return window.tokenCalls === 1 ? first : then; };
          return window.make(url, { ...options, token });
        }, [herald.url, { ...OPTS, topics: [topic], transports: [transport] }, short, TOKEN]);
        await waitOpen(page, i, transport);
        const stream = publishStream(herald.url, topic, { count: 100_000, everyMs: 50, headers: { Authorization: `Bearer ${TOKEN}` } });
        await page.waitForFunction(() => window.tokenCalls >= 2, null, { timeout: 10_000 });
        const have = (await logOf(page, i)).messages.length;
        await waitMessages(page, i, have + 3);
        const { opens } = await logOf(page, i);
        assert.ok(opens.length >= 2, opens.join());
        await assertWholeStream(page, i, stream, [transport]);
      } finally {
        await page.close();
      }
    });
  }
});
