// Browser plumbing shared by test/browser/*: headless Debian Chromium driven
// by playwright-core, and a tiny page server on its own origin (so that
// herald's CORS and Origin allow-lists are exercised for real).

import { createHmac } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { startRedis, startCluster } from './cluster.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** Launches Chromium with the flags this closed-network machine needs. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Serves one HTML page at / on 127.0.0.1:0: render(searchParams) returns its
 * body; files maps other paths to {type, body}. Resolves {origin, close()}.
 */
export async function startPageServer(render, files = {}) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const file = files[url.pathname];
    if (file) {
      res.writeHead(200, { 'Content-Type': file.type, 'Cache-Control': 'no-store' });
      res.end(file.body);
      return;
    }
    if (url.pathname !== '/') {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(render(url.searchParams));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }) };
}

/**
 * A TCP proxy in front of herald whose behaviour the test switches, for
 * herald.js's transport fallback (each connection keeps the mode it was
 * accepted in):
 *   'pass'      forwards everything;
 *   'noUpgrade' answers a WebSocket upgrade 502 and closes (a proxy that does
 *               not speak WebSocket), forwards other requests;
 *   'buffer'    as 'noUpgrade', and holds each response back until it is
 *               complete: a Content-Length answer passes whole, a stream
 *               (SSE: no length, ends with the connection) only at its end;
 *   'unavailable' answers every request 503 with Retry-After: 1 (and the CORS
 *               headers herald would send), as an overloaded node would.
 * stats.acceptTimes holds when each connection was accepted (ms).
 * setTarget(port) sends new connections to another herald; sever() cuts the
 * forwarded ones; hold()/release() keep new connections waiting.
 * Resolves {url, port, accepted, upgrades, setMode, setTarget, sever, hold, release, close}.
 */
export async function startSwitchProxy(targetPort, { host = '127.0.0.1' } = {}) {
  let mode = 'pass';
  let target = targetPort;
  let holding = false;
  const held = [];
  const conns = new Set();
  const stats = { accepted: 0, refusedUpgrades: 0, acceptTimes: [] };

  const start = (client, connMode, connTarget) => {
    const upstream = net.connect({ host, port: connTarget });
    const pair = { client, upstream };
    conns.add(pair);
    const drop = () => {
      conns.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', drop);
      s.on('close', drop);
    }
    let head = Buffer.alloc(0);
    let checked = connMode === 'pass';
    client.on('data', (d) => {
      if (checked) {
        upstream.write(d);
        return;
      }
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      checked = true;
      if (/\r\nupgrade:\s*websocket/i.test(head.subarray(0, end).toString('latin1'))) {
        stats.refusedUpgrades += 1;
        client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        upstream.destroy();
        return;
      }
      upstream.write(head);
    });
    if (connMode !== 'buffer') {
      upstream.on('data', (d) => client.write(d));
      upstream.on('end', () => client.end());
      return;
    }
    // Pass complete responses only.
    let out = Buffer.alloc(0);
    const flush = () => {
      for (;;) {
        const end = out.indexOf('\r\n\r\n');
        if (end < 0) return;
        const headText = out.subarray(0, end).toString('latin1');
        const status = Number(headText.split(' ')[1]);
        const m = /\r\ncontent-length:\s*(\d+)/i.exec(headText);
        const bodyless = status === 304 || status === 204 || (status >= 100 && status < 200);
        if (!m && !bodyless) return; // a stream: held until the connection ends
        const total = end + 4 + (bodyless ? 0 : Number(m[1]));
        if (out.length < total) return;
        client.write(out.subarray(0, total));
        out = out.subarray(total);
      }
    };
    upstream.on('data', (d) => {
      out = Buffer.concat([out, d]);
      flush();
    });
    upstream.on('end', () => client.end(out));
  };

  const server = net.createServer((client) => {
    stats.accepted += 1;
    stats.acceptTimes.push(Date.now());
    client.on('error', () => {});
    if (mode === 'unavailable') {
      const body = '{"error":"unavailable","message":"Try again later."}';
      client.once('data', () => client.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n'
        + 'Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: Content-Type, WWW-Authenticate, Retry-After\r\n'
        + `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`));
      return;
    }
    if (holding) held.push(client);
    else start(client, mode, target);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stats,
    setMode(m) { mode = m; },
    setTarget(p) { target = p; },
    sever() {
      for (const { client, upstream } of conns) { client.destroy(); upstream.destroy(); }
      conns.clear();
    },
    hold() { holding = true; },
    release() {
      holding = false;
      for (const c of held.splice(0)) if (!c.destroyed) start(c, mode, target);
    },
    async close() {
      for (const c of held.splice(0)) c.destroy();
      for (const { client, upstream } of conns) { client.destroy(); upstream.destroy(); }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * The page herald.js tests drive: it imports herald.js from `herald` (so
 * from another origin, as a module script needs CORS) and offers
 * window.make(url, options) → index of a client in window.clients, each
 * recording {messages, gaps, opens, closes, errors}.
 */
export function heraldJsPage(params) {
  const herald = params.get('herald');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>herald.js test</title></head>
<body>
<script type="module">
  import { Herald } from ${JSON.stringify(`${herald}/herald.js`)};
  window.clients = [];
  window.make = (url, options) => {
    const h = new Herald(url, options);
    const log = { messages: [], gaps: [], opens: [], closes: [], errors: [] };
    h.on('message', (m) => log.messages.push(m));
    h.on('gap', (g) => log.gaps.push(g));
    h.on('open', (o) => log.opens.push(o.transport));
    h.on('close', (c) => log.closes.push(c));
    h.on('error', (e) => log.errors.push({ code: e.code, message: e.message, status: e.status, topics: e.topics, retrying: e.retrying }));
    window.clients.push({ h, log });
    return window.clients.length - 1;
  };
  window.heraldReady = true;
</script>
</body></html>`;
}

/**
 * Publishes `count` messages to topic one after the other (every `everyMs`),
 * round robin over url (one or several nodes); `done` resolves the ids.
 */
export function publishStream(url, topic, { count, everyMs = 20, prefix = 'm', headers = {} }) {
  const urls = [].concat(url);
  let stopped = false;
  const ids = [];
  const done = (async () => {
    for (let i = 0; i < count && !stopped; i++) {
      const res = await fetch(`${urls[i % urls.length]}/topics/${topic}`, { method: 'POST', body: `${prefix}${i}`, headers });
      if (res.status !== 201) throw new Error(`publish answered ${res.status}: ${await res.text()}`);
      ids.push((await res.json()).id);
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
    return ids;
  })();
  return { ids, done, stop() { stopped = true; } };
}

/** An HS256 JWT of claims signed with secret, as herald's auth.jwt_secret checks. */
export function mintHs256(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/**
 * Two herald nodes A and B on a fresh Redis, a switch proxy in front of A,
 * and a Chromium page serving heraldJsPage, ready (window.heraldReady).
 * Returns {redis, cluster, proxy, page, close()}; close() stops all of it.
 */
export async function startClusterPage() {
  const parts = {};
  parts.pages = await startPageServer(heraldJsPage);
  parts.redis = await startRedis();
  parts.cluster = await startCluster(2, {
    redis: parts.redis,
    config: { heartbeat_s: 1, sse: { retry_ms: 100 }, cors: { allow_origins: [parts.pages.origin] } },
  });
  parts.proxy = await startSwitchProxy(parts.cluster.A.port);
  parts.browser = await launchChromium();
  parts.page = await parts.browser.newPage();
  parts.page.setDefaultTimeout(15_000);
  await parts.page.goto(`${parts.pages.origin}/?herald=${encodeURIComponent(parts.cluster.A.url)}`);
  await parts.page.waitForFunction(() => window.heraldReady === true);
  return {
    ...parts,
    async close() {
      await parts.browser?.close();
      await parts.proxy?.close();
      await parts.cluster?.stop();
      await parts.redis?.stop();
      await parts.pages?.close();
    },
  };
}
