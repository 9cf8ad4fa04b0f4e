// Operational endpoints (docs/api.md "Topics and operations"): GET /metrics
// in the Prometheus text format 0.0.4 — parsed properly, every documented
// metric with its type — and its counters moving with real traffic over every
// transport; GET /topics/{topic}; the GET /topics listing with paging.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startHerald, publishOk, request, assertError, subscribe, openWS, RawWS, RawConn, rawRequest,
  wsFrame, until, ID_RE,
} from '../lib/harness.mjs';

let h;

before(async () => {
  h = await startHerald();
});
after(async () => { await h?.stop(); });

// ---------------------------------------------------------------------------
// Prometheus text exposition format 0.0.4

const METRIC_NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const VALUE_RE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(v, where) {
  assert.match(v, VALUE_RE, `bad sample value ${JSON.stringify(v)} (${where})`);
  if (/^[+-]?Inf$/.test(v)) return v.startsWith('-') ? -Infinity : Infinity;
  return Number(v);
}

/** Parses `{a="x",b="y\"z"}` starting at line[i] === '{'; returns {labels, end}. */
function parseLabels(line, i, where) {
  const labels = {};
  assert.equal(line[i], '{');
  i++;
  for (;;) {
    while (line[i] === ' ' || line[i] === '\t') i++;
    if (line[i] === '}') return { labels, end: i + 1 };
    const nameMatch = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
    assert.ok(nameMatch, `label name expected at ${i} (${where})`);
    const name = nameMatch[0];
    i += name.length;
    while (line[i] === ' ' || line[i] === '\t') i++;
    assert.equal(line[i], '=', `"=" expected after label ${name} (${where})`);
    i++;
    while (line[i] === ' ' || line[i] === '\t') i++;
    assert.equal(line[i], '"', `quoted value expected for label ${name} (${where})`);
    i++;
    let value = '';
    for (;;) {
      assert.ok(i < line.length, `unterminated label value (${where})`);
      const c = line[i];
      if (c === '\\') {
        const n = line[i + 1];
        assert.ok(n === '\\' || n === '"' || n === 'n', `bad escape \\${n} in label value (${where})`);
        value += n === 'n' ? '\n' : n;
        i += 2;
      } else if (c === '"') {
        i++;
        break;
      } else {
        value += c;
        i++;
      }
    }
    assert.ok(!(name in labels), `label ${name} twice (${where})`);
    labels[name] = value;
    while (line[i] === ' ' || line[i] === '\t') i++;
    if (line[i] === ',') { i++; continue; }
    assert.equal(line[i], '}', `"," or "}" expected (${where})`);
    return { labels, end: i + 1 };
  }
}

/** The family a sample belongs to, given the TYPE lines seen. */
function familyOf(name, types) {
  if (types.has(name) && (types.get(name) !== 'histogram')) return name;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const t = types.get(base);
    if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return base;
  }
  return types.has(name) ? name : undefined;
}

/**
 * Parses a text exposition strictly: HELP/TYPE comment lines, samples with
 * labels and escapes, optional timestamps; every sample's family has one TYPE
 * line before its first sample, a family's lines form one group, no series
 * twice. Returns {types, helps, samples, get(name, labels), series(name)}.
 */
function parseExposition(text) {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a line feed');
  const types = new Map();
  const helps = new Map();
  const samples = [];
  const seenSeries = new Set();
  const closedFamilies = new Set();
  let current = null; // family of the current group
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, n) => {
    const where = `line ${n + 1}: ${JSON.stringify(line)}`;
    assert.ok(!line.includes('\r'), `no CR (${where})`);
    const enter = (family) => {
      if (family === current) return;
      assert.ok(!closedFamilies.has(family), `the lines of ${family} are not one group (${where})`);
      if (current) closedFamilies.add(current);
      current = family;
    };
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest = ''] = m;
      assert.match(name, METRIC_NAME_RE, `metric name (${where})`);
      enter(name);
      if (kind === 'HELP') {
        assert.ok(!helps.has(name), `HELP for ${name} twice (${where})`);
        assert.ok(!/\\[^\\n]/.test(rest.replace(/\\\\/g, '')), `bad escape in HELP (${where})`);
        helps.set(name, rest.replace(/\\(\\|n)/g, (_, c) => (c === 'n' ? '\n' : '\\')));
      } else {
        assert.ok(TYPES.has(rest.trim()), `unknown type ${JSON.stringify(rest)} (${where})`);
        assert.ok(!types.has(name), `TYPE for ${name} twice (${where})`);
        assert.ok(!samples.some((s) => s.family === name), `TYPE for ${name} after its samples (${where})`);
        types.set(name, rest.trim());
      }
      return;
    }
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    assert.ok(nameMatch, `a sample line starts with a metric name (${where})`);
    const name = nameMatch[0];
    let i = name.length;
    let labels = {};
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i, where));
    const rest = line.slice(i);
    const vm = /^[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$/.exec(rest);
    assert.ok(vm, `value (and optional timestamp) after the name and labels (${where})`);
    const value = parseValue(vm[1], where);
    for (const l of Object.keys(labels)) assert.match(l, LABEL_NAME_RE);
    const family = familyOf(name, types);
    assert.ok(family !== undefined, `sample ${name} has no TYPE line before it (${where})`);
    enter(family);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seenSeries.has(key), `series ${name}${JSON.stringify(labels)} twice (${where})`);
    seenSeries.add(key);
    samples.push({ name, family, labels, value, timestamp: vm[2] });
  });
  const sameLabels = (a, b) => {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
  };
  return {
    text,
    types,
    helps,
    samples,
    /** The value of the series with exactly these labels, or undefined. */
    get(name, labels = {}) { return samples.find((s) => s.name === name && sameLabels(s.labels, labels))?.value; },
    /** get(), with an absent series read as 0 (for deltas of counters that may start absent). */
    val(name, labels = {}) { return this.get(name, labels) ?? 0; },
    series(name) { return samples.filter((s) => s.name === name); },
  };
}

/** GET over a fresh connection (node:http, optionally from another local address). */
function httpGet(base, path, { localAddress, timeout = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(new URL(path, base), { agent: false, localAddress, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
  });
}

/** Scrapes GET /metrics of a server; asserts 200 and the content type; resolves the parsed exposition. */
async function scrape(server, options) {
  const res = await httpGet(server.url, '/metrics', options);
  assert.equal(res.status, 200, `GET /metrics: ${res.status} ${res.text.slice(0, 300)}`);
  return parseExposition(res.text);
}

/** Scrapes until pred(metrics) holds; resolves those metrics. */
async function scrapeUntil(server, pred, what, { timeout = 10_000 } = {}) {
  let last;
  return until(async () => {
    last = await scrape(server);
    return pred(last) ? last : null;
  }, { timeout, interval: 25, what: () => `${what}; last scrape:\n${last?.text.split('\n').filter((l) => l.startsWith('herald_')).join('\n')}` });
}

// docs/api.md's table: name, type, documented label values (null: any value).
const DOCUMENTED = [
  ['herald_connections', 'gauge', { transport: ['http', 'sse', 'websocket', 'poll'] }],
  ['herald_connections_accepted_total', 'counter'],
  ['herald_connections_refused_total', 'counter', { reason: ['max_connections', 'max_connections_per_ip'] }],
  ['herald_subscriptions', 'gauge'],
  ['herald_topics', 'gauge'],
  ['herald_history_messages', 'gauge'],
  ['herald_history_bytes', 'gauge'],
  ['herald_messages_published_total', 'counter'],
  ['herald_history_evicted_total', 'counter'],
  ['herald_deliveries_total', 'counter', { transport: ['sse', 'websocket', 'poll'] }],
  ['herald_http_requests_total', 'counter'],
  ['herald_bytes_read_total', 'counter'],
  ['herald_bytes_written_total', 'counter'],
  ['herald_slow_consumer_disconnects_total', 'counter', { transport: ['sse', 'websocket'] }],
  ['herald_protocol_errors_total', 'counter', { protocol: ['http', 'websocket'] }],
  ['herald_pending_body_bytes', 'gauge'],
  ['herald_pending_body_refusals_total', 'counter', { protocol: ['http', 'websocket'] }],
  ['herald_draining', 'gauge'],
  ['herald_build_info', 'gauge', { version: null }],
  ['process_resident_memory_bytes', 'gauge'],
  ['process_cpu_seconds_total', 'counter'],
  ['process_start_time_seconds', 'gauge'],
];

const sse = { transport: 'sse' };
const wsT = { transport: 'websocket' };
const pollT = { transport: 'poll' };

// ---------------------------------------------------------------------------

describe('GET /metrics: the exposition', () => {
  test('200, text/plain; version=0.0.4, parses as the text format', async () => {
    const res = await httpGet(h.url, '/metrics');
    assert.equal(res.status, 200);
    const ct = res.headers['content-type'] ?? '';
    assert.ok(ct.startsWith('text/plain; version=0.0.4'), `content-type ${ct}`);
    assert.match(ct, /charset=utf-8/i, `content-type ${ct}`);
    const m = parseExposition(res.text);
    assert.ok(m.samples.length > 0);
    // Same through fetch (keep-alive), a real HTTP client
    const again = await request(`${h.url}/metrics`);
    assert.equal(again.status, 200);
    parseExposition(again.text);
  });

  test('every metric of docs/api.md is there with its type; counters end in _total; every sample has a TYPE', async () => {
    const m = await scrape(h);
    for (const [name, type, labels] of DOCUMENTED) {
      assert.equal(m.types.get(name), type, `# TYPE ${name} ${type}`);
      assert.ok(m.helps.has(name) && m.helps.get(name).length > 0, `# HELP ${name} …`);
      const series = m.series(name);
      assert.ok(series.length > 0, `${name} has samples`);
      if (!labels) {
        assert.equal(series.length, 1, `${name}: one series`);
        assert.deepEqual(series[0].labels, {}, `${name} has no labels`);
        continue;
      }
      for (const [label, values] of Object.entries(labels)) {
        for (const s of series) assert.deepEqual(Object.keys(s.labels), [label], `${name} is labelled by ${label} only`);
        if (values === null) continue;
        for (const v of values) {
          assert.ok(m.get(name, { [label]: v }) !== undefined, `${name}{${label}="${v}"} is present from the start`);
        }
      }
    }
    for (const [name, type] of m.types) {
      if (type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} ends in _total`);
    }
    for (const s of m.samples) {
      assert.ok(m.types.has(s.family), `${s.name} has a TYPE line`);
      if (m.types.get(s.family) === 'counter') {
        assert.ok(Number.isFinite(s.value) && s.value >= 0, `counter ${s.name} = ${s.value}`);
      }
      if (s.name.startsWith('herald_') && s.name !== 'herald_build_info') {
        assert.ok(Number.isInteger(s.value) && s.value >= 0, `${s.name}${JSON.stringify(s.labels)} = ${s.value}`);
      }
    }
    // Plausible values
    const info = m.series('herald_build_info');
    assert.equal(info.length, 1);
    assert.equal(info[0].value, 1);
    assert.ok(info[0].labels.version.length > 0, 'build_info version');
    assert.equal(m.get('herald_draining'), 0);
    assert.ok(m.get('process_resident_memory_bytes') > 1024 * 1024, 'resident memory');
    const start = m.get('process_start_time_seconds');
    const now = Date.now() / 1000;
    assert.ok(start > now - 3600 && start <= now + 5, `process_start_time_seconds ${start} vs now ${now}`);
    assert.ok(m.get('process_cpu_seconds_total') >= 0);
    assert.ok(m.get('herald_connections', { transport: 'http' }) >= 1, 'the scrape itself is an http connection');
  });

  test('the parser itself: labels with escapes, timestamps, groups', () => {
    const m = parseExposition([
      '# HELP x_total A \\\\ counter\\nwith escapes',
      '# TYPE x_total counter',
      'x_total{a="q\\"uote",b="back\\\\slash",c="line\\nfeed",} 3 1700000000000',
      'x_total{a="}{,"} 4',
      '# TYPE y gauge',
      'y +Inf',
      'y{z="1"} -1.5e3',
      '',
    ].join('\n'));
    assert.equal(m.get('x_total', { a: 'q"uote', b: 'back\\slash', c: 'line\nfeed' }), 3);
    assert.equal(m.get('x_total', { a: '}{,' }), 4);
    assert.equal(m.helps.get('x_total'), 'A \\ counter\nwith escapes');
    assert.equal(m.get('y'), Infinity);
    assert.equal(m.get('y', { z: '1' }), -1500);
    assert.throws(() => parseExposition('z 1\n'), /no TYPE/);
    assert.throws(() => parseExposition('# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x="1"} 2\n'), /one group/);
    assert.throws(() => parseExposition('# TYPE a gauge\na 1\na 2\n'), /twice/);
  });
});

// ---------------------------------------------------------------------------

describe('GET /metrics: counters move with traffic', () => {
  test('publish to an SSE and a WebSocket subscriber: published, deliveries, bytes, connections, subscriptions, topics, history', async () => {
    const T = 'metrics/flow';
    const N = 7;
    const m0 = await scrapeUntil(h, (m) => m.val('herald_connections', sse) === 0 && m.val('herald_connections', wsT) === 0,
      'no SSE or WebSocket connection before');
    const s = await subscribe(h.url, `/events?topic=${T}`);
    const w = await openWS(h.url, `/ws?topic=${T}`);
    let closed = false;
    try {
      const m1 = await scrapeUntil(h, (m) => m.val('herald_connections', sse) === 1 && m.val('herald_connections', wsT) === 1
        && m.val('herald_subscriptions') === m0.val('herald_subscriptions') + 2,
      'herald_connections sse 1, websocket 1 and two more subscriptions');
      assert.equal(m1.val('herald_topics'), m0.val('herald_topics') + 1, 'a topic held by subscribers only counts');
      assert.ok(m1.val('herald_connections_accepted_total') >= m0.val('herald_connections_accepted_total') + 2, 'accepted');

      let dataBytes = 0;
      for (let i = 0; i < N; i++) {
        const data = `flow ${i} ${'é'.repeat(i * 10)}`;
        dataBytes += Buffer.byteLength(data);
        const r = await publishOk(h.url, T, data);
        assert.equal(r.subscribers, 2);
      }
      await s.waitEvents(N);
      await w.waitEnvelopes(N);
      const m2 = await scrapeUntil(h, (m) => m.val('herald_deliveries_total', wsT) >= m0.val('herald_deliveries_total', wsT) + N
        && m.val('herald_deliveries_total', sse) >= m0.val('herald_deliveries_total', sse) + N, `${N} deliveries each`);
      const d = (name, labels) => m2.val(name, labels) - m0.val(name, labels);
      assert.equal(d('herald_messages_published_total'), N, 'published');
      assert.equal(d('herald_deliveries_total', sse), N, 'SSE deliveries');
      assert.equal(d('herald_deliveries_total', wsT), N, 'WebSocket deliveries');
      assert.equal(d('herald_deliveries_total', pollT), 0, 'no poll deliveries');
      assert.equal(d('herald_history_messages'), N, 'history messages');
      assert.ok(d('herald_history_bytes') >= dataBytes, `history bytes grew by ${d('herald_history_bytes')} >= ${dataBytes}`);
      assert.equal(d('herald_history_evicted_total'), 0);
      const sseBytes = Buffer.byteLength(s.stream.raw);
      const wsBytes = w.messages.reduce((n, x) => n + x.data.length, 0);
      assert.ok(d('herald_bytes_written_total') >= sseBytes + wsBytes,
        `bytes written grew by ${d('herald_bytes_written_total')} >= ${sseBytes} + ${wsBytes}`);
      assert.ok(d('herald_bytes_read_total') >= dataBytes, `bytes read grew by ${d('herald_bytes_read_total')} >= ${dataBytes}`);
      assert.ok(d('herald_http_requests_total') >= N, `http requests grew by ${d('herald_http_requests_total')}`);
      assert.equal(m2.val('herald_connections', sse), 1);
      assert.equal(m2.val('herald_connections', wsT), 1);
      assert.equal(m2.val('herald_subscriptions'), m0.val('herald_subscriptions') + 2);
      assert.equal(m2.val('herald_topics'), m0.val('herald_topics') + 1);

      s.close();
      w.close();
      closed = true;
      const m3 = await scrapeUntil(h, (m) => m.val('herald_connections', sse) === 0 && m.val('herald_connections', wsT) === 0
        && m.val('herald_subscriptions') === m0.val('herald_subscriptions'), 'connections back to 0 after the close');
      assert.equal(m3.val('herald_topics'), m0.val('herald_topics') + 1, 'the topic stays (it has history)');
      assert.equal(m3.val('herald_history_messages'), m0.val('herald_history_messages') + N);
    } finally {
      if (!closed) { s.close(); w.close(); }
    }
  });

  test('a waiting /poll counts as a poll connection; its message as a poll delivery', async () => {
    const T = 'metrics/poll';
    const m0 = await scrape(h);
    assert.equal(m0.val('herald_connections', pollT), 0);
    const waiting = request(`${h.url}/poll?topic=${T}&timeout=30`, { timeout: 40_000 });
    waiting.catch(() => {});
    await scrapeUntil(h, (m) => m.val('herald_connections', pollT) === 1, 'herald_connections{transport="poll"} 1');
    const pub = await publishOk(h.url, T, 'wake up');
    assert.equal(pub.subscribers, 1, 'the waiting poll is a subscriber');
    const res = await waiting;
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json.messages.map((e) => [e.id, e.data]), [[pub.id, 'wake up']]);
    const m1 = await scrapeUntil(h, (m) => m.val('herald_connections', pollT) === 0, 'no waiting poll after the answer');
    assert.equal(m1.val('herald_deliveries_total', pollT) - m0.val('herald_deliveries_total', pollT), 1, 'one poll delivery');
    assert.equal(m1.val('herald_deliveries_total', sse) - m0.val('herald_deliveries_total', sse), 0);
    assert.equal(m1.val('herald_messages_published_total') - m0.val('herald_messages_published_total'), 1);
  });

  test('a malformed HTTP request counts as an http protocol error', async () => {
    const m0 = await scrape(h);
    const r = await rawRequest(h.host, h.port, 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n');
    assert.equal(r.responses[0]?.status, 400, r.text);
    const m1 = await scrapeUntil(h, (m) => m.val('herald_protocol_errors_total', { protocol: 'http' })
      > m0.val('herald_protocol_errors_total', { protocol: 'http' }), 'protocol_errors_total{protocol="http"} to grow');
    assert.equal(m1.val('herald_protocol_errors_total', { protocol: 'http' }) - m0.val('herald_protocol_errors_total', { protocol: 'http' }), 1);
    assert.equal(m1.val('herald_protocol_errors_total', { protocol: 'websocket' }) - m0.val('herald_protocol_errors_total', { protocol: 'websocket' }), 0);
  });

  test('a WebSocket protocol violation (unmasked frame) counts as a websocket protocol error', async () => {
    const m0 = await scrape(h);
    const raw = await RawWS.connect(h.host, h.port);
    try {
      await raw.write(wsFrame({ payload: '{"op":"ping"}', mask: false }));
      await raw.expectClose(1002);
    } finally {
      raw.destroy();
    }
    const m1 = await scrapeUntil(h, (m) => m.val('herald_protocol_errors_total', { protocol: 'websocket' })
      > m0.val('herald_protocol_errors_total', { protocol: 'websocket' }), 'protocol_errors_total{protocol="websocket"} to grow');
    assert.equal(m1.val('herald_protocol_errors_total', { protocol: 'websocket' }) - m0.val('herald_protocol_errors_total', { protocol: 'websocket' }), 1);
    assert.equal(m1.val('herald_protocol_errors_total', { protocol: 'http' }) - m0.val('herald_protocol_errors_total', { protocol: 'http' }), 0);
  });

  test('a connection over max_connections_per_ip counts as refused (reason max_connections_per_ip)', async () => {
    const hl = await startHerald({ config: { limits: { max_connections_per_ip: 2 } } });
    const subs = [];
    try {
      const m0 = await scrape(hl, { localAddress: '127.0.0.2' });
      subs.push(await subscribe(hl.url, '/events?topic=ip'));
      subs.push(await subscribe(hl.url, '/events?topic=ip'));
      const r = await rawRequest(hl.host, hl.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', { timeout: 5000 });
      assert.equal(r.responses[0]?.status, 503, r.text);
      assert.equal(r.responses[0].json?.error, 'too_many_connections');
      assert.ok(r.closed, 'the refused connection is closed');
      // Scrape from another address: 127.0.0.1 has no slot left.
      const m1 = await scrape(hl, { localAddress: '127.0.0.2' });
      const d = (labels) => m1.val('herald_connections_refused_total', labels) - m0.val('herald_connections_refused_total', labels);
      assert.equal(d({ reason: 'max_connections_per_ip' }), 1);
      assert.equal(d({ reason: 'max_connections' }), 0);
      assert.equal(m1.val('herald_connections', sse), 2);
    } finally {
      for (const s of subs) s.close();
      await hl.stop();
    }
  });

  test('slow consumers (max_outbound_bytes 65536, never reading) count per transport', async () => {
    const hs = await startHerald({ config: { limits: { max_outbound_bytes: 65536 } } });
    let slowSse;
    let slowWs;
    try {
      slowSse = await RawConn.connect(hs.host, hs.port);
      await slowSse.write('GET /events?topic=slow HTTP/1.1\r\nHost: x\r\n\r\n');
      await slowSse.waitFor((c) => /\r\n\r\nretry: \d+\n/.test(c.text), { what: 'the SSE preamble' });
      slowWs = await RawWS.connect(hs.host, hs.port, { path: '/ws?topic=slow' });
      await slowWs.assertUsable();
      slowSse.socket.pause(); // never read again (until the end)
      slowWs.socket.pause();
      const m0 = await scrape(hs);
      assert.equal(m0.val('herald_slow_consumer_disconnects_total', sse), 0);

      // Kernel socket buffers absorb a few MB first: publish until both are dropped.
      const chunk = 's'.repeat(60_000);
      const started = Date.now();
      let published = 0;
      for (let subscribers = 2; subscribers > 0; published++) {
        assert.ok(published < 2000 && Date.now() - started < 120_000,
          `the non-reading subscribers were not disconnected after ${published} messages of 60 kB`);
        subscribers = (await publishOk(hs.url, 'slow', `${published}:${chunk}`)).subscribers;
      }
      assert.ok(published * 60_000 >= 65536, 'more than max_outbound_bytes was published');
      const m1 = await scrapeUntil(hs, (m) => m.val('herald_slow_consumer_disconnects_total', sse) >= 1
        && m.val('herald_slow_consumer_disconnects_total', wsT) >= 1, 'a slow consumer disconnect of each transport');
      assert.equal(m1.val('herald_slow_consumer_disconnects_total', sse), 1);
      assert.equal(m1.val('herald_slow_consumer_disconnects_total', wsT), 1);
      assert.equal(m1.val('herald_connections', sse), 0);
      assert.equal(m1.val('herald_connections', wsT), 0);
      assert.equal(m1.val('herald_deliveries_total', sse) - m0.val('herald_deliveries_total', sse) <= published, true);

      // Both streams were ended: draining the sockets reaches EOF.
      slowSse.socket.resume();
      slowWs.socket.resume();
      await slowSse.waitClose({ timeout: 30_000 });
      await slowWs.conn.waitClose({ timeout: 30_000 });
    } finally {
      slowSse?.destroy();
      slowWs?.destroy();
      await hs.stop();
    }
  });

  test('history eviction (history.max_messages 3, publish 10) counts 7 evictions', async () => {
    const he = await startHerald({ config: { history: { max_messages: 3 } } });
    try {
      const m0 = await scrape(he);
      const ids = [];
      for (let i = 0; i < 10; i++) ids.push((await publishOk(he.url, 'evict', `e${i}`)).id);
      const m1 = await scrape(he);
      assert.equal(m1.val('herald_history_evicted_total') - m0.val('herald_history_evicted_total'), 7);
      assert.equal(m1.val('herald_messages_published_total') - m0.val('herald_messages_published_total'), 10);
      assert.equal(m1.val('herald_history_messages'), 3);
      assert.equal(m1.val('herald_topics'), 1);
      const info = await request(`${he.url}/topics/evict`);
      assert.equal(info.status, 200, info.text);
      assert.equal(info.json.history.messages, 3);
      assert.equal(info.json.last_id, ids.at(-1));
    } finally {
      await he.stop();
    }
  });
});

// ---------------------------------------------------------------------------

describe('GET /topics/{topic}', () => {
  const KEYS = ['history', 'last_id', 'subscribers', 'subscribers_by_transport', 'topic'];

  function assertShape(json) {
    for (const k of KEYS) assert.ok(k in json, `"${k}" in ${JSON.stringify(json)}`);
    assert.deepEqual(Object.keys(json.subscribers_by_transport).sort(), ['poll', 'sse', 'websocket']);
    assert.deepEqual(Object.keys(json.history).sort(), ['bytes', 'messages']);
    for (const v of [json.subscribers, ...Object.values(json.subscribers_by_transport), json.history.messages, json.history.bytes]) {
      assert.ok(Number.isInteger(v) && v >= 0, `a count: ${JSON.stringify(json)}`);
    }
  }

  test('subscribers by transport, last_id null before any publish, then history and last_id', async () => {
    const T = 'info/t';
    const s1 = await subscribe(h.url, `/events?topic=${T}`);
    const s2 = await subscribe(h.url, `/events?topic=${T}&topic=info/other`);
    const w = await openWS(h.url, '/ws');
    let waiting;
    try {
      await w.ok({ op: 'subscribe', topics: [T] });
      waiting = request(`${h.url}/poll?topic=${T}&timeout=30`, { timeout: 40_000 });
      waiting.catch(() => {});
      const initial = await until(async () => {
        const r = await request(`${h.url}/topics/${T}`);
        return r.status === 200 && r.json?.subscribers_by_transport?.poll === 1 ? r : null;
      }, { timeout: 10_000, interval: 25, what: 'the waiting poll to show in /topics' });
      assert.match(initial.headers.get('content-type') ?? '', /^application\/json/);
      assertShape(initial.json);
      assert.equal(initial.json.topic, T);
      assert.deepEqual(initial.json.subscribers_by_transport, { sse: 2, websocket: 1, poll: 1 });
      assert.equal(initial.json.subscribers, 4);
      assert.deepEqual(initial.json.history, { messages: 0, bytes: 0 });
      assert.equal(initial.json.last_id, null, 'last_id is null before any publish');

      const a = await publishOk(h.url, T, 'hello');
      assert.equal(a.subscribers, 4);
      const polled = await waiting;
      assert.equal(polled.status, 200);
      const b = await publishOk(h.url, T, 'wörld 🎉');
      const after1 = await until(async () => {
        const r = await request(`${h.url}/topics/${T}`);
        return r.json?.subscribers_by_transport?.poll === 0 ? r : null;
      }, { timeout: 10_000, interval: 25, what: 'the answered poll to leave' });
      assertShape(after1.json);
      assert.deepEqual(after1.json.subscribers_by_transport, { sse: 2, websocket: 1, poll: 0 });
      assert.equal(after1.json.subscribers, 3);
      assert.equal(after1.json.history.messages, 2);
      assert.ok(after1.json.history.bytes >= Buffer.byteLength('hello') + Buffer.byteLength('wörld 🎉'),
        `history bytes ${after1.json.history.bytes}`);
      assert.equal(after1.json.last_id, b.id);
      assert.match(after1.json.last_id, ID_RE);
      assert.notEqual(a.id, b.id);

      // The other topic of the two-topic SSE stream: one sse subscriber, nothing published.
      const other = await request(`${h.url}/topics/info/other`);
      assert.equal(other.status, 200, other.text);
      assert.deepEqual(other.json.subscribers_by_transport, { sse: 1, websocket: 0, poll: 0 });
      assert.equal(other.json.last_id, null);
    } finally {
      s1.close();
      s2.close();
      w.close();
    }
    // With history, the topic outlives its subscribers.
    const left = await until(async () => {
      const r = await request(`${h.url}/topics/${T}`);
      return r.json?.subscribers === 0 ? r : null;
    }, { timeout: 10_000, interval: 25, what: 'the subscribers to leave' });
    assert.deepEqual(left.json.subscribers_by_transport, { sse: 0, websocket: 0, poll: 0 });
    assert.equal(left.json.history.messages, 2);
  });

  test('a topic held only by a subscriber is 200 with last_id null, and 404 once it leaves', async () => {
    const w = await openWS(h.url, '/ws?topic=info/ephemeral');
    try {
      const r = await request(`${h.url}/topics/info/ephemeral`);
      assert.equal(r.status, 200, r.text);
      assertShape(r.json);
      assert.deepEqual(r.json.subscribers_by_transport, { sse: 0, websocket: 1, poll: 0 });
      assert.equal(r.json.last_id, null);
      assert.deepEqual(r.json.history, { messages: 0, bytes: 0 });
    } finally {
      w.close();
    }
    const gone = await until(async () => {
      const r = await request(`${h.url}/topics/info/ephemeral`);
      return r.status === 404 ? r : null;
    }, { timeout: 10_000, interval: 25, what: 'the freed topic to be 404' });
    assertError(gone, 404, 'not_found');
  });

  test('unknown topic → 404 not_found; bad names → 400 invalid_topic', async () => {
    assertError(await request(`${h.url}/topics/never-published-here`), 404, 'not_found');
    assertError(await request(`${h.url}/topics/bad%20name`), 400, 'invalid_topic');
    assertError(await request(`${h.url}/topics/bad!name`), 400, 'invalid_topic');
    assertError(await request(`${h.url}/topics/${'x'.repeat(201)}`), 400, 'invalid_topic');
    const ok200 = 'y'.repeat(200);
    assertError(await request(`${h.url}/topics/${ok200}`), 404, 'not_found');
  });
});

// ---------------------------------------------------------------------------

describe('GET /topics listing', () => {
  const NAMES = [
    'a/1', 'a/2', 'a/10', 'a/20', 'a/3', 'a/B', 'a/b', 'a/b/c', 'a-1', 'a.1', 'a_1', 'a~1', 'a:1', 'a@1',
    'A/1', 'Z', 'b/1', 'b/2', 'b/10', 'c', 'c/1', '0', '9/x', '~x', 'aa',
  ];
  const SUB_ONLY = 'a/sub-only';
  const byteOrder = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));
  let hl;
  let holder;
  const lastIds = new Map();

  before(async () => {
    hl = await startHerald();
    for (const name of NAMES) lastIds.set(name, (await publishOk(hl.url, name, `first message of ${name}`)).id);
    holder = await subscribe(hl.url, `/events?topic=${SUB_ONLY}`);
  });
  after(async () => {
    holder?.close();
    await hl?.stop();
  });

  const list = async (query) => {
    const r = await request(`${hl.url}/topics${query ? `?${query}` : ''}`);
    assert.equal(r.status, 200, `GET /topics?${query}: ${r.status} ${r.text}`);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
    assert.ok(Array.isArray(r.json.topics), r.text);
    assert.ok('next' in r.json, `"next" in ${r.text}`);
    return r.json;
  };

  /** Follows next from page to page; resolves [{topic…}] and the page sizes. */
  const listAll = async (params) => {
    const got = [];
    const sizes = [];
    let from = null;
    for (let page = 0; ; page++) {
      assert.ok(page < 100, 'next never became null');
      const q = new URLSearchParams(params);
      if (from !== null) q.set('after', from);
      const json = await list(q.toString());
      sizes.push(json.topics.length);
      got.push(...json.topics);
      if (json.next === null) break;
      assert.equal(typeof json.next, 'string');
      assert.ok(json.topics.length > 0, 'a page with a next is not empty');
      from = json.next;
    }
    return { got, sizes };
  };

  const everything = () => [...NAMES, SUB_ONLY].sort(byteOrder);

  test('limit=10 pages through every topic once, in byte order', async () => {
    const { got, sizes } = await listAll({ limit: '10' });
    assert.deepEqual(got.map((t) => t.topic), everything());
    assert.deepEqual(sizes.slice(0, 2), [10, 10]);
    assert.ok(sizes.every((n) => n <= 10), `page sizes ${sizes}`);
    for (const t of got) {
      assert.deepEqual(Object.keys(t).sort(), ['history_messages', 'last_id', 'subscribers', 'topic']);
      if (t.topic === SUB_ONLY) {
        assert.deepEqual(t, { topic: SUB_ONLY, subscribers: 1, history_messages: 0, last_id: null });
      } else {
        assert.deepEqual(t, { topic: t.topic, subscribers: 0, history_messages: 1, last_id: lastIds.get(t.topic) });
      }
    }
  });

  test('default limit and limit=1000 answer everything in one page, next null', async () => {
    for (const q of ['', 'limit=1000', 'limit=26']) {
      const json = await list(q);
      assert.deepEqual(json.topics.map((t) => t.topic), everything(), q);
      if (q !== 'limit=26') assert.equal(json.next, null, q);
    }
    const one = await list('limit=1');
    assert.deepEqual(one.topics.map((t) => t.topic), [everything()[0]]);
    assert.equal(typeof one.next, 'string');
  });

  test('prefix= filters (also percent-encoded), with paging', async () => {
    const want = everything().filter((n) => n.startsWith('a/'));
    assert.deepEqual((await list('prefix=a/')).topics.map((t) => t.topic), want);
    assert.deepEqual((await list('prefix=a%2F')).topics.map((t) => t.topic), want);
    const { got } = await listAll({ prefix: 'a/', limit: '3' });
    assert.deepEqual(got.map((t) => t.topic), want);
    assert.deepEqual((await list('prefix=b/1')).topics.map((t) => t.topic), ['b/1', 'b/10']);
    assert.deepEqual((await list('prefix=nothing')).topics, []);
    assert.equal((await list('prefix=nothing')).next, null);
  });

  test('after= starts strictly after the name (listed or not)', async () => {
    const all = everything();
    const afterOf = (name) => all.filter((n) => byteOrder(n, name) > 0);
    for (const name of ['a/2', 'a/15', 'Z', '', '~x', '~~']) {
      const json = await list(`after=${encodeURIComponent(name)}`);
      assert.deepEqual(json.topics.map((t) => t.topic), afterOf(name), `after=${name}`);
    }
    assert.deepEqual((await list('prefix=a/&after=a/2')).topics.map((t) => t.topic),
      afterOf('a/2').filter((n) => n.startsWith('a/')));
  });

  test('bad limit → 400 invalid_parameter; POST /topics → 405', async () => {
    for (const limit of ['0', '1001', 'x', '-1', '1.5', '10abc']) {
      assertError(await request(`${hl.url}/topics?limit=${limit}`), 400, 'invalid_parameter');
    }
    const res = await request(`${hl.url}/topics`, { method: 'POST', body: 'x', headers: { 'Content-Type': 'text/plain' } });
    assertError(res, 405, 'method_not_allowed');
    assert.match(res.headers.get('allow') ?? '', /\bGET\b/, `Allow: ${res.headers.get('allow')}`);
  });
});
