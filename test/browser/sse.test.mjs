// A real browser's EventSource against herald: cross-origin (CORS from
// herald's allow-list), a message published over HTTP, then the stream is
// cut from the server side (a TCP proxy the test severs) and the browser
// reconnects on its own with Last-Event-ID and gets what it missed, once.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, publishOk, startProxy, sleep } from '../lib/harness.mjs';
import { launchChromium, startPageServer as startBrowserPages } from '../lib/browser.mjs';

const RETRY_MS = 300;

/** The test page: it connects to the URL given as ?sse= and records everything. */
function renderPage(params) {
  const sse = params.get('sse');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>herald browser test</title></head>
<body>
<script>
  window.received = [];
  window.opens = 0;
  window.errors = 0;
  const es = new EventSource(${JSON.stringify(sse)});
  window.es = es;
  es.onopen = () => { window.opens += 1; };
  es.onerror = () => { window.errors += 1; };
  es.onmessage = (e) => { window.received.push({ data: e.data, id: e.lastEventId, origin: e.origin }); };
</script>
</body></html>`;
}

const startPageServer = () => startBrowserPages(renderPage);

describe('browser EventSource (chromium)', () => {
  let browser;
  let pages;
  let otherPages;
  let herald;
  let proxy;

  before(async () => {
    pages = await startPageServer();
    otherPages = await startPageServer();
    herald = await startHerald({
      config: { sse: { retry_ms: RETRY_MS }, cors: { allow_origins: [pages.origin] } },
    });
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

  async function openPage(origin, topic) {
    const page = await browser.newPage();
    page.setDefaultTimeout(10_000);
    const sse = `${proxy.url}/events?topic=${topic}`;
    await page.goto(`${origin}/?sse=${encodeURIComponent(sse)}`);
    return page;
  }

  test('receives, survives a server-side cut, resumes with Last-Event-ID, nothing lost or repeated', async () => {
    const page = await openPage(pages.origin, 'browser-resume');
    try {
      await page.waitForFunction(() => window.opens >= 1);
      const requestsBefore = proxy.requests.length;
      const first = await publishOk(herald.url, 'browser-resume', 'first 😀\nsecond line');
      await page.waitForFunction(() => window.received.length >= 1);
      let received = await page.evaluate(() => window.received);
      assert.deepEqual(received, [{ data: 'first 😀\nsecond line', id: first.id, origin: proxy.url }]);

      // Cut the stream from the server side and keep the browser away while
      // something is published.
      const accepted = proxy.accepted;
      proxy.hold();
      proxy.sever();
      const missed = await publishOk(herald.url, 'browser-resume', 'while disconnected');
      await proxy.waitAccepted(accepted + 1, { timeout: 10_000 });
      proxy.release();

      await page.waitForFunction(() => window.received.length >= 2);
      await sleep(300);
      received = await page.evaluate(() => window.received);
      assert.deepEqual(received.map((m) => [m.data, m.id]), [
        ['first 😀\nsecond line', first.id],
        ['while disconnected', missed.id],
      ]);

      // The reconnect request carried Last-Event-ID and the page's Origin.
      const gets = proxy.requests.slice(requestsBefore).filter((r) => r.startsWith('GET /events'));
      assert.ok(gets.length >= 1, `no reconnect request seen: ${proxy.requests.join('')}`);
      assert.match(gets[0], new RegExp(`\\r\\nlast-event-id: ${first.id}\\r\\n`, 'i'));
      assert.match(gets[0], new RegExp(`\\r\\norigin: ${pages.origin}\\r\\n`, 'i'));

      // And it is live again.
      const live = await publishOk(herald.url, 'browser-resume', 'live again');
      await page.waitForFunction(() => window.received.length >= 3);
      await sleep(300);
      received = await page.evaluate(() => window.received);
      assert.deepEqual(received.map((m) => m.id), [first.id, missed.id, live.id]);
      assert.equal(await page.evaluate(() => window.es.readyState), 1);
    } finally {
      await page.close();
    }
  });

  test('an origin not in cors.allow_origins cannot read the stream', async () => {
    const page = await openPage(otherPages.origin, 'browser-denied');
    try {
      await page.waitForFunction(() => window.errors >= 1 && window.es.readyState === 2);
      await publishOk(herald.url, 'browser-denied', 'not for you');
      await sleep(300);
      assert.deepEqual(await page.evaluate(() => window.received), []);
      assert.equal(await page.evaluate(() => window.opens), 0);
    } finally {
      await page.close();
    }
  });
});
