// Command line and configuration: --help, --version, strict config validation
// (exit 2 with one stderr line naming the problem), signals.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runHerald, startHerald, writeConfig, request, publishOk, subscribe, assertSanitizerClean } from '../lib/harness.mjs';

const VERSION = /project\(herald VERSION ([0-9.]+)/.exec(
  readFileSync(new URL('../../CMakeLists.txt', import.meta.url), 'utf8'))[1];

/** Runs herald with a config (object or raw text) and asserts exit 2 + one stderr line. */
async function expectConfigError(config, { raw, mentions = [] } = {}) {
  const { dir, file } = writeConfig(config, { raw });
  try {
    const r = await runHerald(['--config', file, '--listen', '127.0.0.1:0']);
    assert.equal(r.code, 2, `exit code for config ${raw ?? JSON.stringify(config)}: ${r.code}; stderr:\n${r.stderr}`);
    assertSanitizerClean(r.stderr);
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    assert.equal(lines.length, 1, `expected exactly one stderr line, got:\n${r.stderr}`);
    for (const m of mentions) {
      assert.ok(lines[0].includes(m.replaceAll('{file}', file)),
        `stderr line should name ${JSON.stringify(m)}: ${lines[0]}`);
    }
    assert.doesNotMatch(r.stderr, /listening on/);
    return lines[0];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('command line', () => {
  test('--help exits 0 and prints usage with the options', async () => {
    const r = await runHerald(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /--config/);
    assert.match(r.stdout, /--listen/);
    assert.match(r.stdout, /--version/);
  });

  test('--version exits 0 and prints the version', async () => {
    const r = await runHerald(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.includes(VERSION), `stdout should contain ${VERSION}: ${JSON.stringify(r.stdout)}`);
  });

  test('an unknown option exits 2 naming it', async () => {
    const r = await runHerald(['--no-such-option']);
    assert.equal(r.code, 2, `stdout: ${r.stdout} stderr: ${r.stderr}`);
    assert.match(r.stderr, /--no-such-option/);
  });

  test('an option missing its value exits 2', async () => {
    const r = await runHerald(['--config']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /config/);
  });

  test('a malformed --listen address exits 2', async () => {
    const r = await runHerald(['--listen', 'not-an-address']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /not-an-address|listen/);
  });

  test('runs on the embedded defaults without --config', async () => {
    const h = await startHerald({ args: ['--listen', '127.0.0.1:0'] });
    try {
      const res = await request(`${h.url}/healthz`);
      assert.equal(res.status, 200);
      assert.equal(res.text.trim(), 'ok');
    } finally {
      await h.stop();
    }
  });

  test('logs go to stderr, one line per event; stdout stays empty when serving', async () => {
    const h = await startHerald();
    await h.stop();
    assert.equal(h.stdout(), '');
    assert.match(h.stderr(), /listening on 127\.0\.0\.1:\d+/);
  });
});

describe('bad configuration exits 2 with one line naming the problem', () => {
  test('unknown top-level key', async () => {
    await expectConfigError({ no_such_key: 1 }, { mentions: ['no_such_key'] });
  });

  test('unknown nested key', async () => {
    await expectConfigError({ limits: { max_bogus: 1 } }, { mentions: ['limits.max_bogus'] });
  });

  test('wrong type: string for an integer', async () => {
    await expectConfigError({ heartbeat_s: '15' }, { mentions: ['heartbeat_s'] });
  });

  test('wrong type: object expected', async () => {
    await expectConfigError({ limits: 5 }, { mentions: ['limits'] });
  });

  test('wrong type: array of strings expected', async () => {
    await expectConfigError({ cors: { allow_origins: 'http://a.example' } }, { mentions: ['cors.allow_origins'] });
  });

  test('wrong type: boolean expected', async () => {
    await expectConfigError({ websocket: { compression: 'yes' } }, { mentions: ['websocket.compression'] });
  });

  test('out of range: zero message size', async () => {
    await expectConfigError({ limits: { max_message_bytes: 0 } }, { mentions: ['limits.max_message_bytes'] });
  });

  test('out of range: negative value', async () => {
    await expectConfigError({ heartbeat_s: -1 }, { mentions: ['heartbeat_s'] });
  });

  test('out of range: non-integer number', async () => {
    await expectConfigError({ history: { max_messages: 1.5 } }, { mentions: ['history.max_messages'] });
  });

  test('invalid log level', async () => {
    await expectConfigError({ log_level: 'loud' }, { mentions: ['log_level'] });
  });

  test('the same listen address twice, however spelled', async () => {
    await expectConfigError({ listen: ['127.0.0.1:18080', '127.0.0.1:18080'] },
      { mentions: ['listen[1]', 'duplicate of listen[0]', '127.0.0.1:18080'] });
    await expectConfigError({ listen: ['[::1]:8080', 'localhost:8080', '127.0.0.1:08080'] },
      { mentions: ['listen[2]', 'duplicate of listen[1]', "'127.0.0.1:08080'", "'localhost:8080'"] });
  });

  // cluster.redis must be a URL herald can use; keys of cluster features
  // not built yet (Sentinel) are unknown keys.
  test('an unusable cluster.redis is refused at start', async () => {
    await expectConfigError({ cluster: { redis: 'rediss://127.0.0.1:6379' } }, { mentions: ['cluster.redis'] });
    await expectConfigError({ cluster: { redis: 'redis://127.0.0.1:99999' } }, { mentions: ['cluster.redis'] });
    await expectConfigError({ cluster: { redis: 'redis://h', sentinels: ['a:1'] } }, { mentions: ['cluster.sentinels'] });
    await expectConfigError({ cluster: { redis: 'redis://h', trust_redis_persistence: 'yes' } },
      { mentions: ['cluster.trust_redis_persistence'] });
  });

  test('invalid JSON names the file', async () => {
    await expectConfigError(null, { raw: '{"heartbeat_s": 15,', mentions: ['{file}'] });
  });

  test('a UTF-8 byte order mark is accepted (Windows editors write one); elsewhere it is invalid JSON', async () => {
    const { dir, file } = writeConfig(null, { raw: '\ufeff{\r\n  "heartbeat_s": 20\r\n}\r\n' });
    try {
      const h = await startHerald({ args: ['--config', file, '--listen', '127.0.0.1:0'] });
      assert.equal((await request(`${h.url}/healthz`)).status, 200);
      await h.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await expectConfigError(null, { raw: '{"heartbeat_s": \ufeff20}', mentions: ['{file}', 'line 1, column 17'] });
  });

  test('a JSON document that is not an object', async () => {
    await expectConfigError(null, { raw: '[1, 2, 3]' });
  });

  test('unreadable file: missing', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-test-'));
    const file = path.join(dir, 'does-not-exist.json');
    try {
      const r = await runHerald(['--config', file, '--listen', '127.0.0.1:0']);
      assert.equal(r.code, 2, r.stderr);
      const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
      assert.equal(lines.length, 1, r.stderr);
      assert.ok(lines[0].includes(file), lines[0]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('unreadable file: a directory', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-test-'));
    try {
      const r = await runHerald(['--config', dir, '--listen', '127.0.0.1:0']);
      assert.equal(r.code, 2, r.stderr);
      const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
      assert.equal(lines.length, 1, r.stderr);
      assert.ok(lines[0].includes(dir), lines[0]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('unreadable file: no permission', { skip: process.getuid?.() === 0 ? 'root reads any file' : false }, async () => {
    const { dir, file } = writeConfig({});
    chmodSync(file, 0o000);
    try {
      const r = await runHerald(['--config', file, '--listen', '127.0.0.1:0']);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(r.stderr.includes(file), r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('signals', () => {
  test('SIGINT exits 0 like SIGTERM', async () => {
    const h = await startHerald();
    await publishOk(h.url, 'cli-sigint', 'x');
    await h.stop({ signal: 'SIGINT' });
  });

  test('SIGTERM with an open SSE stream: the stream ends and herald exits 0', async () => {
    const h = await startHerald({ config: { shutdown_grace_s: 2 } });
    const sse = await subscribe(h.url, '/events?topic=cli-term');
    const stopped = h.stop();
    await sse.waitEnd({ timeout: 5000 });
    await stopped;
  });

  test('a config accepted in full: every documented key', async () => {
    const h = await startHerald({
      config: {
        listen: ['127.0.0.1:0'],
        log_level: 'info',
        heartbeat_s: 15,
        shutdown_grace_s: 5,
        history: { max_messages: 1000, max_bytes: 4194304, ttl_s: 0 },
        limits: {
          max_connections: 100000,
          max_connections_per_ip: 0,
          max_message_bytes: 65536,
          max_topics_per_subscription: 64,
          max_outbound_bytes: 1048576,
          max_header_bytes: 16384,
          header_timeout_s: 10,
          request_timeout_s: 30,
          poll_timeout_max_s: 120,
        },
        cors: { allow_origins: ['*'] },
        websocket: { allow_origins: ['*'], compression: true },
        tls: { cert: '', key: '' },
        auth: { jwt_secret: '', jwt_public_key: '', anonymous_subscribe: true, anonymous_publish: true },
        cluster: { redis: '' },
      },
    });
    try {
      assert.equal((await request(`${h.url}/healthz`)).status, 200);
    } finally {
      await h.stop();
    }
  });
});

describe('a second herald on an address already in use', () => {
  // With several workers herald used to listen with SO_REUSEPORT, which let a
  // second instance join silently: the kernel then split clients between two
  // unrelated hubs. The one listening socket now makes the kernel refuse it.
  test('exits 2 naming the address, whatever its workers; the first keeps serving', async () => {
    const first = await startHerald({ config: { workers: 2 } });
    const address = `127.0.0.1:${first.port}`;
    const sse = await subscribe(first.url, '/events?topic=cli-second');
    try {
      for (const workers of [1, 2]) {
        const { dir, file } = writeConfig({ workers });
        try {
          // Short timeout: a second herald that started would run until killed.
          const r = await runHerald(['--config', file, '--listen', address], { timeout: 4000 });
          assert.equal(r.code, 2, `workers ${workers}: ${r.stderr}`);
          assertSanitizerClean(r.stderr);
          assert.match(r.stderr, new RegExp(`cannot listen on ${address}: address already in use`));
          assert.doesNotMatch(r.stderr, /listening on/);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
      // Every new connection still reaches the first, and its subscriber gets what is published.
      for (let i = 0; i < 10; i++) await publishOk(first.url, 'cli-second', `m${i}`);
      const events = await sse.waitEvents(10);
      assert.deepEqual(events.map((e) => e.data), Array.from({ length: 10 }, (_, i) => `m${i}`));
    } finally {
      sse.close();
      await first.stop();
    }
  });
});

describe('listen entries of one configuration that overlap', () => {
  // 0.0.0.0:P and 127.0.0.1:P are not duplicates, but the wildcard holds the
  // port for every address: the error names the entry, not another herald.
  test('exits 2 naming the earlier wildcard entry', async () => {
    const probe = await startHerald({});
    const port = probe.port; // a port known free once the probe stops
    await probe.stop();
    const { dir, file } = writeConfig({ listen: [`0.0.0.0:${port}`, `127.0.0.1:${port}`] });
    try {
      const r = await runHerald(['--config', file], { timeout: 4000 });
      assert.equal(r.code, 2, r.stderr);
      assertSanitizerClean(r.stderr);
      assert.match(r.stderr, new RegExp(
        `cannot listen on 127\\.0\\.0\\.1:${port}: address already in use, by listen\\[0\\] '0\\.0\\.0\\.0:${port}'`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
