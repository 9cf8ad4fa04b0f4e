// A real browser's WebSocket against herald: a page from another origin
// opens ws://…/ws, subscribes with the control protocol, and receives what
// the test publishes over HTTP. Chromium offers permessage-deflate by
// default, so this also runs herald's deflate against a real browser, in
// both directions (the page publishes too). Then an origin outside
// websocket.allow_origins is refused.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, publishOk, startProxy, sleep } from '../lib/harness.mjs';
import { launchChromium, startPageServer as startBrowserPages } from '../lib/browser.mjs';


/** The test page: it connects to the URL given as ?ws= and records everything. */
function renderPage(params) {
  const ws = params.get('ws');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>herald WebSocket browser test</title></head>
<body>
<script>
  window.received = [];
  window.opened = false;
  window.errors = 0;
  window.closeInfo = null;
  const ws = new WebSocket(${JSON.stringify(ws)});
  window.ws = ws;
  ws.onopen = () => {
    window.opened = true;
    ws.send(JSON.stringify({ op: 'subscribe', topics: ['news'], ref: 1 }));
  };
  ws.onerror = () => { window.errors += 1; };
  ws.onclose = (e) => { window.closeInfo = { code: e.code, wasClean: e.wasClean }; };
  ws.onmessage = (e) => { window.received.push(typeof e.data === 'string' ? JSON.parse(e.data) : { binary: true }); };
</script>
</body></html>`;
}

const startPageServer = () => startBrowserPages(renderPage);

describe('browser WebSocket (chromium)', () => {
  let browser;
  let pages;
  let otherPages;
  let herald;
  let proxy;

  before(async () => {
    pages = await startPageServer();
    otherPages = await startPageServer();
    herald = await startHerald({ config: { websocket: { allow_origins: [pages.origin] } } });
    // A pass-through proxy, only to see the browser's handshake request.
    proxy = await startProxy(herald.host, herald.port);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await proxy?.close();
    await pages?.close();
    await otherPages?.close();
    await herald?.stop();
  });

  async function openPage(origin) {
    const page = await browser.newPage();
    page.setDefaultTimeout(10_000);
    await page.goto(`${origin}/?ws=${encodeURIComponent(`ws://127.0.0.1:${proxy.port}/ws`)}`);
    return page;
  }

  test('subscribes, receives HTTP-published envelopes and publishes itself, over permessage-deflate', async () => {
    const page = await openPage(pages.origin);
    try {
      await page.waitForFunction(() => window.received.some((m) => m.type === 'ack' && m.ref === 1));
      assert.deepEqual(await page.evaluate(() => window.received), [{ type: 'ack', ref: 1 }]);

      // The browser offered permessage-deflate and herald accepted it.
      const handshake = proxy.requests.find((r) => r.startsWith('GET /ws'));
      assert.match(handshake, /\r\nsec-websocket-extensions: [^\r]*permessage-deflate/i);
      assert.match(handshake, new RegExp(`\\r\\norigin: ${pages.origin}\\r\\n`, 'i'));
      assert.match(await page.evaluate(() => window.ws.extensions), /^permessage-deflate\b/);

      const t0 = Date.now();
      const a = await publishOk(herald.url, 'news', 'first 😀\nsecond line', { event: 'headline' });
      const big = 'compress me '.repeat(4000);
      const b = await publishOk(herald.url, 'news', big);
      const t1 = Date.now();
      await page.waitForFunction(() => window.received.filter((m) => m.type === 'message').length >= 2);
      const envs = (await page.evaluate(() => window.received)).filter((m) => m.type === 'message');
      for (const e of envs) assert.ok(Number.isInteger(e.time) && e.time >= t0 - 1000 && e.time <= t1 + 1000, `time ${e.time}`);
      assert.deepEqual(envs.map((e) => ({ ...e, time: 0 })), [
        { type: 'message', topic: 'news', id: a.id, event: 'headline', data: 'first 😀\nsecond line', time: 0 },
        { type: 'message', topic: 'news', id: b.id, data: big, time: 0 },
      ]);

      // The page publishes (Chromium compresses what it sends); it is subscribed, so it gets it back too.
      await page.evaluate((data) => window.ws.send(JSON.stringify({ op: 'publish', topic: 'news', data, ref: 'from-page' })), big);
      await page.waitForFunction(() => window.received.some((m) => m.ref === 'from-page'));
      const ack = (await page.evaluate(() => window.received)).find((m) => m.ref === 'from-page');
      assert.equal(ack.type, 'ack', JSON.stringify(ack));
      assert.equal(ack.topic, 'news');
      assert.equal(ack.subscribers, 1);
      await page.waitForFunction((id) => window.received.some((m) => m.type === 'message' && m.id === id), ack.id);
      const own = (await page.evaluate(() => window.received)).find((m) => m.type === 'message' && m.id === ack.id);
      assert.equal(own.data, big);

      await sleep(200);
      const state = await page.evaluate(() => ({ errors: window.errors, closed: window.closeInfo, readyState: window.ws.readyState }));
      assert.deepEqual(state, { errors: 0, closed: null, readyState: 1 });

      // A clean close from the page.
      await page.evaluate(() => window.ws.close(1000));
      await page.waitForFunction(() => window.closeInfo !== null);
      assert.deepEqual(await page.evaluate(() => window.closeInfo), { code: 1000, wasClean: true });
    } finally {
      await page.close();
    }
  });

  test('an origin not in websocket.allow_origins cannot connect', async () => {
    const page = await openPage(otherPages.origin);
    try {
      await page.waitForFunction(() => window.closeInfo !== null);
      const state = await page.evaluate(() => ({ opened: window.opened, errors: window.errors, closed: window.closeInfo, received: window.received }));
      assert.equal(state.opened, false);
      assert.ok(state.errors >= 1);
      assert.equal(state.closed.code, 1006);
      assert.deepEqual(state.received, []);
    } finally {
      await page.close();
    }
  });
});
