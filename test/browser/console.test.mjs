// The console at GET / (clients/console/, docs/api.md "The console") in
// headless Chromium against the real binary: its files are served with an
// ETag and a strict Content-Security-Policy; the page loads with no request
// leaving herald and no policy violation; a message published with fetch
// shows up in its live tail with its id; the connection counts move when a
// WebSocket client connects; its publish form reaches a subscriber; under
// auth it asks for a token and then works; ui.enabled false (or
// HERALD_UI_ENABLED=false) answers 404. A screenshot is decoded and checked
// for real content; HERALD_CONSOLE_SCREENSHOT=path keeps it (docs/console.png).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import { startHerald, publishOk, request, openWS, subscribe, until } from '../lib/harness.mjs';
import { launchChromium, mintHs256 } from '../lib/browser.mjs';

const SOURCE = new URL('../../clients/console/', import.meta.url);
const FILES = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/console.js': ['console.js', 'text/javascript; charset=utf-8'],
  '/console.css': ['console.css', 'text/css; charset=utf-8'],
  '/console.svg': ['console.svg', 'image/svg+xml'],
};

let browser;

before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

/**
 * Opens the console of herald at url; records every request the page makes
 * (WebSockets included) and every console message (CSP violations land there).
 */
async function openConsole(url, { colorScheme = 'light' } = {}) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, colorScheme });
  page.setDefaultTimeout(15_000);
  const seen = { requests: [], console: [] };
  page.on('request', (r) => seen.requests.push(r.url()));
  page.on('websocket', (ws) => seen.requests.push(ws.url()));
  page.on('console', (m) => seen.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (err) => seen.console.push(`pageerror: ${err.message}`));
  await page.goto(`${url}/`);
  // The first /metrics sample is in.
  await page.waitForFunction(() => document.getElementById('version').textContent.startsWith('v'));
  return { page, seen };
}

const text = (page, selector) => page.locator(selector).first().textContent();
const count = async (page, transport) => Number((await text(page, `#count-${transport}`)).replace(/,/g, ''));

/** Publishes with the page's form; resolves the id it shows. */
async function publishWithForm(page, topic, event, data) {
  await page.fill('#publish-topic', topic);
  await page.fill('#publish-event', event);
  await page.fill('#publish-data', data);
  await page.evaluate(() => delete document.getElementById('publish-result').dataset.id);
  await page.click('#publish-send');
  await page.waitForFunction(() => document.getElementById('publish-result').dataset.id);
  return page.locator('#publish-result').getAttribute('data-id');
}

async function tailTopic(page, topics) {
  await page.fill('#tail-topics', topics);
  await page.click('#tail-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('tail-state').textContent.startsWith('live'));
}

/**
 * Decodes an 8-bit RGB or RGBA PNG (no interlace), as Chromium writes them,
 * and returns {width, height, colours: Map rgb → pixel count}.
 */
function pngColours(png) {
  assert.deepEqual(png.subarray(0, 8), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  let at = 8;
  let width;
  let height;
  let channels;
  const idat = [];
  while (at < png.length) {
    const len = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.equal(data[8], 8, 'bit depth');
      assert.equal(data[12], 0, 'interlace');
      channels = { 2: 3, 6: 4 }[data[9]];
      assert.ok(channels, `colour type ${data[9]}`);
    } else if (type === 'IDAT') {
      idat.push(data);
    }
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const line = Buffer.alloc(stride);
  const prior = Buffer.alloc(stride);
  const colours = new Map();
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? line[i - channels] : 0;
      const b = prior[i];
      const c = i >= channels ? prior[i - channels] : 0;
      let p;
      if (filter === 0) p = 0;
      else if (filter === 1) p = a;
      else if (filter === 2) p = b;
      else if (filter === 3) p = (a + b) >> 1;
      else {
        const pa = Math.abs(b - c);
        const pb = Math.abs(a - c);
        const pc = Math.abs(a + b - 2 * c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      line[i] = (src[i] + p) & 0xff;
    }
    for (let x = 0; x < stride; x += channels) {
      const rgb = (line[x] << 16) | (line[x + 1] << 8) | line[x + 2];
      colours.set(rgb, (colours.get(rgb) || 0) + 1);
    }
    line.copy(prior);
  }
  return { width, height, colours };
}

describe('GET / and the console files', () => {
  let herald;
  before(async () => { herald = await startHerald(); });
  after(async () => { await herald?.stop(); });

  test('the repository files, with a strong ETag, 304, a strict CSP, HEAD and 405', async () => {
    const etags = new Set();
    for (const [path, [file, type]] of Object.entries(FILES)) {
      const res = await fetch(`${herald.url}${path}`);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('content-type'), type);
      assert.equal(res.headers.get('cache-control'), 'no-cache');
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      const csp = res.headers.get('content-security-policy');
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'self';/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.doesNotMatch(csp, /unsafe|https?:|\*/);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), readFileSync(new URL(file, SOURCE)), path);
      const etag = res.headers.get('etag');
      assert.match(etag, /^"[0-9a-f]{32}"$/);
      etags.add(etag);
      const again = await fetch(`${herald.url}${path}`, { headers: { 'If-None-Match': etag } });
      assert.equal(again.status, 304);
      assert.equal((await again.arrayBuffer()).byteLength, 0);
      const head = await fetch(`${herald.url}${path}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('etag'), etag);
    }
    assert.equal(etags.size, Object.keys(FILES).length);
    // The page loads nothing inline: its script and style are files.
    const html = readFileSync(new URL('index.html', SOURCE), 'utf8');
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=|https?:\/\//i);
    const post = await request(`${herald.url}/`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    // herald.js carries no page policy: other origins' pages import it.
    const js = await fetch(`${herald.url}/herald.js`);
    assert.equal(js.headers.get('content-security-policy'), null);
    await js.arrayBuffer();
    assert.equal((await request(`${herald.url}/index.html`)).status, 404);
    assert.equal((await request(`${herald.url}/console.js/`)).status, 404);
  });
});

describe('the console in Chromium', () => {
  let herald;
  let page;
  let seen;

  before(async () => {
    herald = await startHerald({ config: { heartbeat_s: 2 } });
    for (const [topic, n] of [['orders', 12], ['chat.lobby', 5], ['news', 3]]) {
      for (let i = 0; i < n; i++) await publishOk(herald.url, topic, JSON.stringify({ n: i, topic }), { event: i % 2 ? 'updated' : 'created' });
    }
    ({ page, seen } = await openConsole(herald.url));
  });

  after(async () => {
    await page?.close();
    await herald?.stop();
  });

  test('loads with no request leaving herald and no policy violation', async () => {
    await page.waitForSelector('#topics-body tr[data-topic="orders"]');
    await tailTopic(page, 'orders');
    await page.waitForFunction(() => document.getElementById('stat-publish-rate').textContent !== '–');
    const origin = new URL(herald.url);
    const foreign = seen.requests.filter((u) => new URL(u).host !== origin.host);
    assert.deepEqual(foreign, []);
    for (const path of ['/', '/console.js', '/console.css', '/herald.js', '/metrics']) {
      assert.ok(seen.requests.some((u) => new URL(u).pathname === path), `${path} was requested`);
    }
    assert.ok(seen.requests.some((u) => u.startsWith(`ws://${origin.host}/ws?`)), 'the tail uses a WebSocket');
    assert.deepEqual(seen.console.filter((m) => /error|security policy/i.test(m)), []);
    // The topics table: counts from /topics, bytes from /topics/{topic}.
    const row = page.locator('#topics-body tr[data-topic="orders"]');
    assert.match(await row.textContent(), /orders.*12/);
    assert.match(await row.locator('td').nth(2).textContent(), /12\s*\d+(\.\d)? (B|KB)/);
  });

  test('a message published with fetch shows up in the live tail with its id', async () => {
    await tailTopic(page, 'orders');
    const sent = await publishOk(herald.url, 'orders', '{"sku":"A-17","qty":3}', { event: 'placed' });
    const row = page.locator(`#tail-body tr[data-id="${sent.id}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), new RegExp(`orders${sent.id}placed\\{"sku":"A-17","qty":3\\}`));

    // Paused, rows wait; resumed, they come; cleared, they go.
    await page.click('#tail-pause');
    const held = await publishOk(herald.url, 'orders', 'while paused');
    await page.waitForFunction(() => document.getElementById('tail-pause').textContent === 'Resume (1 new)');
    assert.equal(await page.locator(`#tail-body tr[data-id="${held.id}"]`).count(), 0);
    await page.click('#tail-pause');
    await page.locator(`#tail-body tr[data-id="${held.id}"]`).waitFor();
    await page.click('#tail-clear');
    assert.equal(await page.locator('#tail-body tr').count(), 0);
  });

  test('the connection counts move when a WebSocket client connects', async () => {
    const before = await count(page, 'websocket');
    const clients = [await openWS(herald.url, '/ws?topic=news'), await openWS(herald.url, '/ws?topic=news')];
    try {
      await page.waitForFunction((n) => Number(document.getElementById('count-websocket').textContent) >= n, before + 2);
      await page.waitForFunction(() => document.querySelector('#topics-body tr[data-topic="news"] .by')?.textContent === '2 ws · 0 sse · 0 poll');
    } finally {
      for (const c of clients) c.ws.close();
    }
    await page.waitForFunction((n) => Number(document.getElementById('count-websocket').textContent) === n, before);
  });

  test('the publish form reaches a subscriber', async () => {
    const sub = await subscribe(herald.url, '/events?topic=chat.lobby&format=json');
    try {
      const id = await publishWithForm(page, 'chat.lobby', 'said', 'hello from the console');
      assert.match(await text(page, '#publish-result'), new RegExp(`Published ${id} · 1 subscriber`));
      const [ev] = await sub.waitEvents(1);
      const { type, topic, event, data } = JSON.parse(ev.data);
      assert.equal(ev.id, id);
      assert.deepEqual({ type, topic, event, data }, { type: 'message', topic: 'chat.lobby', event: 'said', data: 'hello from the console' });

      // A refusal is shown, not swallowed.
      await page.fill('#publish-topic', 'no spaces allowed');
      await page.click('#publish-send');
      await page.waitForFunction(() => document.getElementById('publish-result').classList.contains('bad'));
      assert.match(await text(page, '#publish-result'), /^400 invalid_topic: /);
    } finally {
      sub.close();
    }
  });

  test('a screenshot shows a page, not a blank', async () => {
    await tailTopic(page, 'orders, chat.lobby');
    // A steady stream while the page samples, so that the charts and rates have something to show.
    let i = 0;
    let last;
    let running = true;
    const stream = (async () => {
      while (running) {
        const topic = i % 3 ? 'orders' : 'chat.lobby';
        const data = topic === 'orders'
          ? JSON.stringify({ order: 4711 + i, status: i % 2 ? 'shipped' : 'paid', total: Math.round(1990 + 137 * i) / 100 })
          : `user${i % 4} says hi`;
        last = await publishOk(herald.url, topic, data, { event: topic === 'orders' ? (i % 2 ? 'shipped' : 'paid') : 'said' });
        i++;
        await new Promise((resolve) => setTimeout(resolve, 90));
      }
    })();
    try {
      await publishWithForm(page, 'orders', 'refunded', '{"order":4711,"amount":19.9}');
      // Three samples with the stream running.
      for (let n = 0; n < 3; n++) {
        const published = await text(page, '#stat-published');
        await page.waitForFunction((s) => document.getElementById('stat-published').textContent !== s, published);
      }
    } finally {
      running = false;
      await stream;
    }
    await page.locator(`#tail-body tr[data-id="${last.id}"]`).waitFor();
    const png = await page.screenshot({ fullPage: true });
    if (process.env.HERALD_CONSOLE_SCREENSHOT) writeFileSync(process.env.HERALD_CONSOLE_SCREENSHOT, png);
    const { width, height, colours } = pngColours(png);
    assert.ok(width >= 1440 && height >= 1000, `${width}×${height}`);
    const commonest = Math.max(...colours.values());
    // Text, charts and cards: many colours, and no one colour covering nearly everything.
    assert.ok(colours.size > 200, `${colours.size} colours`);
    assert.ok(commonest < 0.8 * width * height, `one colour covers ${commonest} of ${width * height} pixels`);

    // Dark mode is a different page, not the same one.
    const dark = await openConsole(herald.url, { colorScheme: 'dark' });
    try {
      const background = await dark.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      assert.notEqual(background, await page.evaluate(() => getComputedStyle(document.body).backgroundColor));
    } finally {
      await dark.page.close();
    }
  });
});

describe('the console\'s tail across a gap', () => {
  let herald;
  before(async () => { herald = await startHerald({ config: { history: { max_messages: 5 } } }); });
  after(async () => { await herald?.stop(); });

  test('a gap marker where history was exceeded while away, then what history held', async () => {
    const { page } = await openConsole(herald.url);
    try {
      await tailTopic(page, 'g');
      const first = await publishOk(herald.url, 'g', 'before');
      await page.locator(`#tail-body tr[data-id="${first.id}"]`).waitFor();
      await page.context().setOffline(true);
      await page.waitForFunction(() => document.getElementById('tail-state').textContent === 'reconnecting…');
      const away = [];
      for (let n = 0; n < 10; n++) away.push((await publishOk(herald.url, 'g', `away ${n}`)).id);
      await page.context().setOffline(false);
      await page.locator(`#tail-body tr[data-id="${away.at(-1)}"]`).waitFor();
      // Newest first: the five history kept, the gap, the message before it.
      const rows = await page.locator('#tail-body tr').evaluateAll((trs) =>
        trs.map((tr) => (tr.classList.contains('gap') ? `gap ${tr.cells[2].textContent}` : tr.dataset.id)));
      assert.deepEqual(rows, [...away.slice(5).reverse(),
        `gap Gap: messages after ${first.id} up to ${away[4]} were no longer in history and are lost to this tail.`, first.id]);
    } finally {
      await page.close();
    }
  });
});

describe('the console under auth', () => {
  const SECRET = 'console-secret-0123456789abcdef0123456789';
  const mint = (claims) => mintHs256(SECRET, claims);
  const ADMIN = mint({ herald: { subscribe: ['*'], publish: ['*'] } });
  const READER = mint({ herald: { subscribe: ['*'] } });
  let herald;

  before(async () => {
    herald = await startHerald({
      config: { auth: { jwt_secret: SECRET, anonymous_subscribe: false, anonymous_publish: false } },
    });
    await publishOk(herald.url, 'private', 'before the page', { headers: { Authorization: `Bearer ${ADMIN}` } });
  });

  after(async () => { await herald?.stop(); });

  test('asks for a token, keeps it for the tab, and then lists, tails and publishes', async () => {
    const { page, seen } = await openConsole(herald.url);
    try {
      // /metrics is open; /topics is not.
      await page.locator('#auth').waitFor({ state: 'visible' });
      assert.match(await text(page, '#auth-title'), /asks for a token/);
      assert.match(await text(page, '#topics-empty'), /needs a token/);

      // A token that may only read: topics and the tail work, publishing is 403.
      await page.fill('#auth-token', READER);
      await page.click('#auth-form button[type=submit]');
      await page.locator('#topics-body tr[data-topic="private"]').waitFor();
      assert.equal(await page.evaluate(() => sessionStorage.getItem('herald.console.token')), READER);
      await page.click('#topics-body tr[data-topic="private"] button');
      await page.waitForFunction(() => document.getElementById('tail-state').textContent.startsWith('live'));
      const sent = await publishOk(herald.url, 'private', 'for token holders', { headers: { Authorization: `Bearer ${ADMIN}` } });
      await page.locator(`#tail-body tr[data-id="${sent.id}"]`).waitFor();
      assert.equal(await page.inputValue('#publish-topic'), 'private');
      await page.fill('#publish-data', 'refused');
      await page.click('#publish-send');
      await page.waitForFunction(() => document.getElementById('publish-result').classList.contains('bad'));
      assert.match(await text(page, '#publish-result'), /^403 forbidden/);
      assert.match(await text(page, '#auth-title'), /does not allow/);

      // A token that may publish: the form works, and the tail (restarted with it) shows the message.
      await page.fill('#auth-token', ADMIN);
      await page.click('#auth-form button[type=submit]');
      await page.waitForFunction(() => document.getElementById('tail-state').textContent.startsWith('live'));
      const id = await publishWithForm(page, 'private', '', 'from the console');
      await page.locator(`#tail-body tr[data-id="${id}"]`).waitFor();

      // Every data request carried the token (the page's own files need none).
      assert.deepEqual(seen.requests.filter((u) => new URL(u).host !== new URL(herald.url).host), []);
      // A reload in the same tab keeps the token.
      await page.reload();
      await page.locator('#topics-body tr[data-topic="private"]').waitFor();
      assert.equal(await page.locator('#auth').isHidden(), true);
    } finally {
      await page.close();
    }
  });
});

describe('ui.enabled', () => {
  test('false answers the console\'s paths 404 and still serves herald.js', async () => {
    const off = await startHerald({ config: { ui: { enabled: false } } });
    const env = await startHerald({ env: { HERALD_UI_ENABLED: 'false' } });
    try {
      for (const he of [off, env]) {
        for (const path of Object.keys(FILES)) {
          const res = await request(`${he.url}${path}`);
          assert.equal(res.status, 404, path);
          assert.equal(JSON.parse(res.text).error, 'not_found');
        }
        assert.equal((await request(`${he.url}/herald.js`)).status, 200);
      }
    } finally {
      await off.stop();
      await env.stop();
    }
  });

  test('a reload (SIGHUP) turns the console on and off for the next request', async () => {
    const h = await startHerald({ config: { ui: { enabled: false } } });
    const reloads = () => (h.stderr().match(/reload complete/g) || []).length;
    const reload = async (config) => {
      const done = reloads() + 1;
      writeFileSync(h.configFile, JSON.stringify(config));
      h.child.kill('SIGHUP');
      await until(() => reloads() >= done, { what: 'reload complete' });
    };
    try {
      assert.equal((await request(`${h.url}/`)).status, 404);
      await reload({ ui: { enabled: true } });
      const page = await request(`${h.url}/`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-security-policy'), /default-src 'none'/);
      await reload({ ui: { enabled: false } });
      assert.equal((await request(`${h.url}/console.js`)).status, 404);
    } finally {
      await h.stop();
    }
  });
});
