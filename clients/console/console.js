// The herald console (GET /): a page that watches and drives the hub through
// its public API only. Every 2 s it reads /metrics (connections by transport,
// publish and delivery rates, drawn on <canvas>) and every 4 s /topics; it
// tails topics through herald.js and publishes with POST /topics/{topic}.
// When herald answers 401 or 403 it asks for a token, keeps it in
// sessionStorage and sends it as Authorization: Bearer (and to herald.js).
// Every URL is relative to the page, so a herald behind a proxy under a path
// works as well. docs/api.md ("The console") has the decisions.

import { Herald } from './herald.js';

const SAMPLE_MS = 2000;
const TOPICS_MS = 4000;
const WINDOW = 150; // samples kept: 5 minutes at 2 s
const MAX_ROWS = 500; // rows of the live tail
const MAX_TOPICS = 50; // topics listed (with details) per refresh
const TOKEN_KEY = 'herald.console.token';

const $ = (id) => document.getElementById(id);
const base = new URL('.', location.href);
const url = (path) => new URL(path, base).href;

// ---------------------------------------------------------------- formatting

const nf = new Intl.NumberFormat('en');
const num = (n) => (Number.isFinite(n) ? nf.format(Math.round(n)) : '–');
const rate = (n) => (!Number.isFinite(n) ? '–' : n === 0 ? '0' : n >= 100 ? nf.format(Math.round(n)) : n.toFixed(n >= 10 ? 1 : 2));

function bytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`;
}

function duration(s) {
  if (!Number.isFinite(s) || s < 0) return '';
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return m ? `${m}m ${Math.floor(s % 60)}s` : `${Math.floor(s)}s`;
}

function clock(ms) {
  const t = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(t.getHours())}:${p(t.getMinutes())}:${p(t.getSeconds())}.${p(t.getMilliseconds(), 3)}`;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setPill(node, text, tone) {
  node.textContent = text;
  node.className = `pill${tone ? ` ${tone}` : ''}`;
}

// ---------------------------------------------------------------- auth

const auth = {
  token: sessionStorage.getItem(TOKEN_KEY) || null,
  // Bumped whenever the token changes, so that the tail restarts with it.
  version: 0,
};

function authHeaders() {
  return auth.token ? { Authorization: `Bearer ${auth.token}` } : {};
}

function askToken(status, detail) {
  $('auth').hidden = false;
  if (!status) {
    $('auth-title').textContent = auth.token ? 'A token is in use.' : 'No token is in use.';
    $('auth-detail').textContent = 'Paste a JWT whose herald claim grants subscribe (and publish) rights. It is kept in this tab only (sessionStorage).';
  } else if (status === 403) {
    $('auth-title').textContent = 'This token does not allow that.';
    $('auth-detail').textContent = detail || 'herald answered 403: the token\'s herald claim does not name the topics. Use a token with wider rights.';
  } else {
    $('auth-title').textContent = auth.token ? 'herald refused this token.' : 'This herald asks for a token.';
    $('auth-detail').textContent = `${detail ? `${detail} ` : ''}Paste a JWT whose herald claim grants subscribe (and publish) rights. It is kept in this tab only (sessionStorage).`;
  }
}

function setToken(token) {
  auth.token = token || null;
  if (auth.token) sessionStorage.setItem(TOKEN_KEY, auth.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  auth.version++;
  $('auth').hidden = true;
  $('auth-token').value = '';
  refreshTopics();
  tail.restart();
}

/**
 * fetch with the token; resolves {status, ok, body} (body parsed as JSON
 * when it is JSON, else text). A 401 or 403 opens the token form.
 */
async function api(path, init = {}) {
  let res;
  try {
    res = await fetch(url(path), { ...init, headers: { ...authHeaders(), ...init.headers }, cache: 'no-store' });
  } catch (err) {
    return { status: 0, ok: false, body: { error: 'network', message: err.message } };
  }
  const type = res.headers.get('content-type') || '';
  const body = type.includes('json') ? await res.json().catch(() => ({})) : await res.text();
  if (res.status === 401 || res.status === 403) askToken(res.status, typeof body === 'object' ? body.message : '');
  return { status: res.status, ok: res.ok, body };
}

// ---------------------------------------------------------------- metrics

/** Prometheus text format → Map name → [{labels, value}]. */
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: Number(m[3]) });
  }
  return out;
}

function metric(map, name, label, value) {
  const rows = map.get(name);
  if (!rows) return NaN;
  if (label === undefined) return rows.reduce((sum, r) => sum + r.value, 0);
  const row = rows.find((r) => r.labels[label] === value);
  return row ? row.value : NaN;
}

const samples = []; // {t, ws, sse, poll, pub, del}
let previous = null; // the last reading: {t, published, delivered}

async function sampleMetrics() {
  const res = await api('metrics');
  if (!res.ok) {
    setPill($('node-state'), res.status ? `metrics: ${res.status}` : 'unreachable', 'bad');
    return;
  }
  const m = parseMetrics(res.body);
  const t = Date.now();
  const ws = metric(m, 'herald_connections', 'transport', 'websocket');
  const sse = metric(m, 'herald_connections', 'transport', 'sse');
  const poll = metric(m, 'herald_connections', 'transport', 'poll');
  const published = metric(m, 'herald_messages_published_total');
  const delivered = metric(m, 'herald_deliveries_total');
  let pub = NaN;
  let del = NaN;
  if (previous) {
    const dt = (t - previous.t) / 1000;
    // A counter that went down is a restarted herald: no rate for that step.
    pub = published >= previous.published ? (published - previous.published) / dt : 0;
    del = delivered >= previous.delivered ? (delivered - previous.delivered) / dt : 0;
  }
  previous = { t, published, delivered };
  samples.push({ t, ws, sse, poll, pub, del });
  if (samples.length > WINDOW) samples.shift();

  const version = m.get('herald_build_info')?.[0]?.labels.version;
  $('version').textContent = version ? `v${version}` : '';
  $('stat-connections').textContent = num(ws + sse + poll);
  $('count-websocket').textContent = num(ws);
  $('count-sse').textContent = num(sse);
  $('count-poll').textContent = num(poll);
  $('stat-publish-rate').textContent = rate(pub);
  $('stat-published').textContent = `${num(published)} in all`;
  $('stat-delivery-rate').textContent = rate(del);
  $('stat-delivered').textContent = `${num(delivered)} in all`;
  $('stat-topics').textContent = num(metric(m, 'herald_topics'));
  const subscriptions = metric(m, 'herald_subscriptions');
  $('stat-subscriptions').textContent = `${num(subscriptions)} subscription${subscriptions === 1 ? '' : 's'}`;
  $('stat-history').textContent = num(metric(m, 'herald_history_messages'));
  $('stat-history-bytes').textContent = `messages · ${bytes(metric(m, 'herald_history_bytes'))}`;
  $('stat-memory').textContent = bytes(metric(m, 'process_resident_memory_bytes'));
  $('stat-fds').textContent = `${num(metric(m, 'process_open_fds'))} open files`;
  const started = metric(m, 'process_start_time_seconds');
  $('uptime').textContent = Number.isFinite(started) ? `up ${duration(t / 1000 - started)}` : '';

  if (m.has('herald_cluster_up')) {
    const state = ['up', 'connecting', 'down'].find((s) => metric(m, 'herald_cluster_state', 'state', s) === 1) || 'down';
    setPill($('engine-state'), `Redis cluster ${state}`, state === 'up' ? 'ok' : state === 'connecting' ? 'warn' : 'bad');
  } else {
    setPill($('engine-state'), 'memory engine', 'ok');
  }
  if (metric(m, 'herald_draining') === 1) setPill($('node-state'), 'draining', 'warn');
  else await checkHealth();
  drawCharts();
}

async function checkHealth() {
  const res = await api('healthz');
  if (res.ok) setPill($('node-state'), 'ready', 'ok');
  else setPill($('node-state'), res.body?.error === 'draining' ? 'draining' : 'not ready', res.status ? 'warn' : 'bad');
}

// ---------------------------------------------------------------- charts

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** A #rrggbb colour with an alpha, for canvas gradients. */
function alpha(hex, a) {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return m ? `rgba(${parseInt(m[1], 16)}, ${parseInt(m[2], 16)}, ${parseInt(m[3], 16)}, ${a})` : hex;
}

/** A tidy upper bound for the y axis: 1, 2 or 5 × 10^n, at least min. */
function niceMax(v, min) {
  const target = Math.max(v, min);
  const p = 10 ** Math.floor(Math.log10(target));
  for (const f of [1, 2, 5, 10]) if (f * p >= target) return f * p;
  return 10 * p;
}

/** Draws series [{key, color}] of the samples (at most WINDOW: 5 minutes). */
function drawChart(canvas, series, { min = 1, format = (v) => (v % 1 ? v.toFixed(1) : num(v)) } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const font = getComputedStyle(document.body).fontFamily;
  const muted = cssVar('--muted');
  const grid = cssVar('--grid');
  let top = 0;
  for (const s of samples) for (const { key } of series) if (Number.isFinite(s[key])) top = Math.max(top, s[key]);
  const max = niceMax(top, min);
  const left = 8 + Math.max(...[0, max / 2, max].map((v) => {
    g.font = `11px ${font}`;
    return g.measureText(format(v)).width;
  }));
  const right = w - 6;
  const bottom = h - 20;
  // Until the window is full the chart spans what there is (at least a minute), so lines are readable at once.
  const span = Math.max(samples.length, 30);
  const y = (v) => bottom - (v / max) * (bottom - 8);
  const x = (i) => left + 6 + (i / (span - 1)) * (right - left - 6);

  g.font = `11px ${font}`;
  g.textBaseline = 'middle';
  g.lineWidth = 1;
  for (const v of [0, max / 2, max]) {
    g.strokeStyle = grid;
    g.beginPath();
    g.moveTo(left + 6, Math.round(y(v)) + 0.5);
    g.lineTo(right, Math.round(y(v)) + 0.5);
    g.stroke();
    g.fillStyle = muted;
    g.textAlign = 'right';
    g.fillText(format(v), left, y(v));
  }
  g.textAlign = 'left';
  g.textBaseline = 'alphabetic';
  const seconds = Math.round(((span - 1) * SAMPLE_MS) / 1000);
  g.fillText(seconds >= 120 ? `${Math.round(seconds / 60)} min ago` : `${seconds} s ago`, left + 6, h - 4);
  g.textAlign = 'right';
  g.fillText('now', right, h - 4);

  const offset = span - samples.length;
  for (const { key, color } of series) {
    const pts = [];
    samples.forEach((s, i) => {
      if (Number.isFinite(s[key])) pts.push([x(offset + i), y(s[key])]);
    });
    if (!pts.length) continue;
    const c = cssVar(color);
    g.beginPath();
    pts.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
    g.lineTo(pts.at(-1)[0], bottom);
    g.lineTo(pts[0][0], bottom);
    g.closePath();
    const fill = g.createLinearGradient(0, 8, 0, bottom);
    fill.addColorStop(0, alpha(c, 0.22));
    fill.addColorStop(1, alpha(c, 0.02));
    g.fillStyle = fill;
    g.fill();
    g.beginPath();
    pts.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
    g.strokeStyle = c;
    g.lineWidth = 2;
    g.lineJoin = 'round';
    g.stroke();
    const [lx, ly] = pts.at(-1);
    g.fillStyle = c;
    g.beginPath();
    g.arc(lx, ly, 3, 0, Math.PI * 2);
    g.fill();
  }
}

function drawCharts() {
  drawChart($('chart-connections'), [
    { key: 'poll', color: '--poll' }, { key: 'sse', color: '--sse' }, { key: 'ws', color: '--ws' },
  ], { min: 4 });
  drawChart($('chart-rates'), [{ key: 'del', color: '--del' }, { key: 'pub', color: '--pub' }], { min: 1 });
}

// ---------------------------------------------------------------- topics

let topicsBusy = false;

async function refreshTopics() {
  if (topicsBusy) return;
  topicsBusy = true;
  try {
    const prefix = $('topic-filter').value.trim();
    const q = new URLSearchParams({ limit: String(MAX_TOPICS) });
    if (prefix) q.set('prefix', prefix);
    const res = await api(`topics?${q}`);
    if (!res.ok) {
      $('topics-body').replaceChildren();
      $('topics-empty').hidden = false;
      $('topics-empty').textContent = res.status === 401 || res.status === 403
        ? 'Listing topics needs a token with subscribe rights to them.'
        : `Could not list topics: ${res.body?.message || res.status}`;
      return;
    }
    const list = res.body.topics || [];
    // Details bring history bytes and subscribers by transport (the list has counts only).
    const details = await Promise.all(list.map((t) => api(`topics/${encodeURIComponent(t.topic)}`)));
    renderTopics(list, details.map((d) => (d.ok ? d.body : null)));
    $('topics-more').hidden = !res.body.next;
    $('topics-more').textContent = `Showing the first ${list.length}; narrow them with a prefix.`;
  } finally {
    topicsBusy = false;
  }
}

function renderTopics(list, details) {
  const body = $('topics-body');
  const tailed = new Set(tail.topics);
  body.replaceChildren(...list.map((t, i) => {
    const d = details[i];
    const tr = el('tr');
    tr.dataset.topic = t.topic;
    if (tailed.has(t.topic)) tr.classList.add('selected');
    tr.append(el('td', 'topic-name', t.topic));
    const subs = el('td', 'num', num(t.subscribers));
    const by = d?.subscribers_by_transport;
    if (by && t.subscribers) subs.append(el('span', 'by', `${by.websocket} ws · ${by.sse} sse · ${by.poll} poll`));
    tr.append(subs);
    const hist = el('td', 'num', num(d ? d.history.messages : t.history_messages));
    if (d) hist.append(el('span', 'by', bytes(d.history.bytes)));
    tr.append(hist);
    tr.append(el('td', 'mono', t.last_id || '—'));
    const act = el('td', 'num');
    const button = el('button', 'ghost small', 'Tail');
    button.type = 'button';
    act.append(button);
    tr.append(act);
    return tr;
  }));
  $('topics-empty').hidden = list.length > 0;
  $('topics-empty').textContent = $('topic-filter').value.trim()
    ? 'No topic starts with this prefix.'
    : 'No topics yet. Publish a message to create one.';
}

$('topics-body').addEventListener('click', (e) => {
  const tr = e.target.closest('tr');
  if (!tr) return;
  const topic = tr.dataset.topic;
  $('publish-topic').value = topic;
  if (e.target.closest('button')) {
    $('tail-topics').value = topic;
    tail.start([topic], $('tail-history').checked);
  }
});
$('topic-filter').addEventListener('input', () => refreshTopics());

// ---------------------------------------------------------------- live tail

const tail = {
  herald: null,
  topics: [],
  history: false,
  paused: false,
  held: [], // rows that came while paused
  authVersion: 0,

  start(topics, history) {
    this.stop();
    this.topics = topics;
    this.history = history;
    this.authVersion = auth.version;
    if (!topics.length) return;
    setPill($('tail-state'), 'connecting…', 'warn');
    $('tail-pause').disabled = false;
    const h = new Herald(base.href, {
      topics,
      since: history ? 'earliest' : undefined,
      token: async () => auth.token,
    });
    this.herald = h;
    h.on('open', ({ transport }) => setPill($('tail-state'), `live · ${transport}`, 'ok'));
    h.on('close', ({ willReconnect }) => {
      if (this.herald === h) setPill($('tail-state'), willReconnect ? 'reconnecting…' : 'stopped', willReconnect ? 'warn' : '');
    });
    h.on('message', (m) => this.add(messageRow(m)));
    h.on('gap', (g) => this.add(gapRow(g)));
    h.on('error', (err) => {
      if (this.herald !== h) return;
      if (err.status === 401 || err.status === 403) askToken(err.status, err.message);
      if (err.topics) setPill($('tail-state'), `refused: ${err.code}`, 'bad');
    });
    refreshTopicSelection();
  },

  restart() {
    if (this.topics.length && this.authVersion !== auth.version) this.start(this.topics, this.history);
  },

  stop() {
    this.herald?.close();
    this.herald = null;
    setPill($('tail-state'), 'idle', '');
  },

  add(row) {
    if (this.paused) {
      this.held.push(row);
      if (this.held.length > MAX_ROWS) this.held.shift();
      $('tail-pause').textContent = `Resume (${this.held.length} new)`;
      return;
    }
    show([row]);
  },

  togglePause() {
    this.paused = !this.paused;
    $('tail-pause').textContent = this.paused ? 'Resume' : 'Pause';
    if (!this.paused) show(this.held.splice(0));
  },
};

/** Newest first; at most MAX_ROWS rows stay. */
function show(rows) {
  if (!rows.length) return;
  const body = $('tail-body');
  for (const r of rows) {
    body.prepend(r);
  }
  while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
  $('tail-empty').hidden = true;
}

function messageRow(m) {
  const tr = el('tr');
  tr.dataset.id = m.id;
  tr.append(el('td', 'time', clock(m.time || Date.now())));
  tr.append(el('td', 'topic-name', m.topic));
  tr.append(el('td', 'id mono', m.id));
  const ev = el('td');
  if (m.event) ev.append(el('span', 'event', m.event));
  tr.append(ev);
  const data = el('td', 'data', m.data);
  data.title = m.data;
  tr.append(data);
  return tr;
}

function gapRow(g) {
  const tr = el('tr', 'gap');
  tr.append(el('td', 'time', clock(Date.now())));
  tr.append(el('td', 'topic-name', g.topic));
  const td = el('td', '', `Gap: messages after ${g.from || 'the start'} up to ${g.to} were no longer in history and are lost to this tail.`);
  td.colSpan = 3;
  tr.append(td);
  return tr;
}

function refreshTopicSelection() {
  const tailed = new Set(tail.topics);
  for (const tr of $('topics-body').children) tr.classList.toggle('selected', tailed.has(tr.dataset.topic));
}

$('tail-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const topics = $('tail-topics').value.split(/[\s,]+/).filter(Boolean);
  tail.start(topics, $('tail-history').checked);
  if (topics.length === 1 && !$('publish-topic').value) $('publish-topic').value = topics[0];
});
$('tail-pause').addEventListener('click', () => tail.togglePause());
$('tail-clear').addEventListener('click', () => {
  $('tail-body').replaceChildren();
  tail.held = [];
  if (tail.paused) $('tail-pause').textContent = 'Resume';
  $('tail-empty').hidden = false;
});

// ---------------------------------------------------------------- publish

$('publish-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const topic = $('publish-topic').value.trim();
  const event = $('publish-event').value.trim();
  const result = $('publish-result');
  const q = event ? `?${new URLSearchParams({ event })}` : '';
  $('publish-send').disabled = true;
  result.className = 'result';
  result.textContent = 'Publishing…';
  const res = await api(`topics/${encodeURIComponent(topic)}${q}`, {
    method: 'POST',
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
    body: $('publish-data').value,
  });
  $('publish-send').disabled = false;
  if (res.ok) {
    result.className = 'result ok';
    const who = res.body.subscribers === 1 ? '1 subscriber' : `${num(res.body.subscribers)} subscribers`;
    result.textContent = `${res.body.duplicate ? 'Already published' : 'Published'} ${res.body.id} · ${who}`;
    result.dataset.id = res.body.id;
    refreshTopics();
  } else {
    result.className = 'result bad';
    const b = typeof res.body === 'object' ? res.body : {};
    result.textContent = `${res.status || 'network'} ${b.error || ''}: ${b.message || 'herald refused the message.'}`;
    delete result.dataset.id;
  }
});

// ---------------------------------------------------------------- start

$('auth-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('auth-token').value.trim();
  if (token) setToken(token);
});
$('auth-forget').addEventListener('click', () => setToken(null));
$('token-button').addEventListener('click', () => {
  $('auth').hidden = !$('auth').hidden;
  if (!$('auth').hidden) askToken(0, '');
});
window.addEventListener('resize', drawCharts);
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', drawCharts);

// A tail named in the address (#tail=a,b) starts at once: a link to share.
const wanted = new URLSearchParams(location.hash.slice(1)).get('tail');
if (wanted) {
  $('tail-topics').value = wanted;
  tail.start(wanted.split(',').filter(Boolean), false);
}

async function every(ms, fn) {
  for (;;) {
    try {
      await fn();
    } catch (err) {
      console.error(err);
    }
    await new Promise((resolve) => setTimeout(resolve, ms));
  }
}
every(SAMPLE_MS, sampleMetrics);
every(TOPICS_MS, refreshTopics);
