// Metrics with the real thing (issue 15, item 6): `promtool check metrics` on the exposition,
// and a Prometheus server (Debian's prometheus package) that scrapes herald while it works.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startHerald, request, publish, openSSE, until, withTimeout } from '../lib/harness.mjs';

async function exercise(h) {
  assert.equal((await publish(h.url, 'm', 'one')).status, 201);
  assert.equal((await request(`${h.url}/nothing`)).status, 404);
}

test('promtool check metrics accepts the exposition, with the new families in it', async () => {
  const h = await startHerald();
  try {
    const sse = await openSSE(h.url, '/events?topic=m');
    await exercise(h);
    await sse.stream.waitEvents?.(1);
    const text = (await request(`${h.url}/metrics`)).text;
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(r.status, 0, `promtool: ${r.stdout}${r.stderr}`);
    for (const family of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_virtual_memory_bytes',
      'process_open_fds', 'process_max_fds', 'process_start_time_seconds'])
      assert.match(text, new RegExp(`^${family} \\d`, 'm'));
    assert.match(text, /^herald_http_responses_total\{code="201"\} 1$/m);
    assert.match(text, /^herald_http_responses_total\{code="404"\} 1$/m);
    assert.match(text, /^herald_http_responses_total\{code="200"\} 1$/m); // the SSE stream
    assert.match(text, /^herald_auth_refusals_total\{reason="no_token"\} 0$/m);
    assert.match(text, /^herald_publish_to_flush_seconds_bucket\{le="\+Inf"\} \d+$/m);
    assert.match(text, /^herald_connections_refused_total\{reason="max_connections"\} 0$/m);
    sse.close();
  } finally {
    await h.stop();
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

async function getJson(url) {
  try {
    const res = await request(url, { timeout: 2000 });
    return res.status === 200 ? JSON.parse(res.text) : null;
  } catch { return null; }
}

test('a Prometheus server scrapes herald: rates and the new families move', { timeout: 90_000 }, async () => {
  const h = await startHerald();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-prometheus-'));
  const port = await freePort();
  writeFileSync(path.join(dir, 'prometheus.yml'), [
    'global:', '  scrape_interval: 1s', '  evaluation_interval: 1s',
    'scrape_configs:', '  - job_name: herald', '    static_configs:', `      - targets: ['${h.host}:${h.port}']`, '',
  ].join('\n'));
  const prom = spawn('prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  let promLog = '';
  prom.stderr.setEncoding('utf8').on('data', (d) => { promLog += d; });
  const promExited = new Promise((resolve) => prom.on('close', resolve));
  const api = `http://127.0.0.1:${port}`;
  const query = async (q) => (await getJson(`${api}/api/v1/query?query=${encodeURIComponent(q)}`))?.data?.result ?? [];
  let publishing = true;
  const sse = await openSSE(h.url, '/events?topic=scraped');
  try {
    await until(async () => (await request(`${api}/-/ready`).catch(() => ({}))).status === 200,
      { timeout: 30_000, interval: 100, what: `Prometheus to be ready; its log:\n${promLog}` });
    await until(async () => (await getJson(`${api}/api/v1/targets`))?.data?.activeTargets?.some((t) => t.health === 'up'),
      { timeout: 30_000, interval: 200, what: 'the herald target to be up' });
    // Publish steadily while Prometheus scrapes, until the rate it computes is positive.
    const publisher = (async () => {
      while (publishing) {
        await publish(h.url, 'scraped', 'tick');
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await until(async () => Number((await query('rate(herald_messages_published_total[5s])'))[0]?.value?.[1] ?? 0) > 0,
      { timeout: 30_000, interval: 250, what: 'rate(herald_messages_published_total[5s]) > 0' });
    await until(async () => Number((await query('rate(herald_http_responses_total{code="201"}[5s])'))[0]?.value?.[1] ?? 0) > 0,
      { timeout: 15_000, interval: 250, what: 'herald_http_responses_total{code="201"} to move' });
    await until(async () => Number((await query('rate(herald_publish_to_flush_seconds_count[5s])'))[0]?.value?.[1] ?? 0) > 0,
      { timeout: 15_000, interval: 250, what: 'herald_publish_to_flush_seconds to observe deliveries' });
    publishing = false;
    await publisher;
    const fds = await query('process_open_fds');
    assert.ok(Number(fds[0]?.value?.[1]) > 0, JSON.stringify(fds));
    const maxFds = await query('process_max_fds');
    assert.ok(Number(maxFds[0]?.value?.[1]) >= Number(fds[0].value[1]), JSON.stringify(maxFds));
    assert.equal((await query('herald_build_info')).length, 1);
  } finally {
    publishing = false;
    sse.close();
    prom.kill('SIGTERM');
    await withTimeout(promExited, 15_000, 'Prometheus to stop').catch(() => prom.kill('SIGKILL'));
    rmSync(dir, { recursive: true, force: true });
    await h.stop();
  }
});
