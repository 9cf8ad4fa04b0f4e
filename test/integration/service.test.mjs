// systemd's notify protocol (docs/api.md "Running as a service"): herald
// started with $NOTIFY_SOCKET, as a Type=notify unit starts it, sends
// READY=1 once every listener is bound, RELOADING=1 then READY=1 around a
// SIGHUP reload, STOPPING=1 when the drain begins, and WATCHDOG=1 at half of
// $WATCHDOG_USEC when that is meant for its pid. Each test plays systemd's
// part with its own unix datagram socket (python3: node has no unix
// datagram sockets).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import {
  HERALD_BIN, startHerald, runHerald, request, subscribe, sleep, until, withTimeout,
  assertSanitizerClean,
} from '../lib/harness.mjs';

// Binds a datagram socket at argv[1], says "bound", then prints each datagram as a JSON string.
const RECEIVER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    print(json.dumps(s.recv(4096).decode()), flush=True)
`;

/** A NOTIFY_SOCKET receiver: {path, messages, next(), expectNoMore(ms), close()}. */
async function notifySocket(t) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-notify-'));
  const socketPath = path.join(dir, 'notify');
  const child = spawn('python3', ['-c', RECEIVER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages = [];
  const waiters = new Set();
  let bound;
  const isBound = new Promise((resolve) => { bound = resolve; });
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === 'bound') { bound(); return; }
    messages.push(JSON.parse(line));
    for (const w of waiters) w();
  });
  await withTimeout(isBound, 5000, 'the python3 datagram receiver to bind');
  let taken = 0;
  const receiver = {
    path: socketPath,
    messages,
    /** The next message not yet taken, waiting for it. */
    next(what = 'a notify message', timeout = 5000) {
      return withTimeout(new Promise((resolve) => {
        const check = () => {
          if (taken < messages.length) { waiters.delete(check); resolve(messages[taken++]); }
        };
        waiters.add(check);
        check();
      }), timeout, what);
    },
    async expectNoMore(ms = 300) {
      await sleep(ms);
      assert.deepEqual(messages.slice(taken), [], 'no further notify message');
    },
    close() {
      child.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  t.after(() => receiver.close());
  return receiver;
}

test('READY=1 comes once every listener is bound, and no other message before it', async (t) => {
  const notify = await notifySocket(t);
  const h = await startHerald({
    config: { workers: 2 },
    args: ['--config', '{config}', '--listen', '127.0.0.1:0'],
    env: { NOTIFY_SOCKET: notify.path },
  });
  assert.equal(await notify.next('READY=1'), 'READY=1');
  // Ready means accepting: the port answers without a retry.
  const res = await request(`${h.url}/healthz`);
  assert.equal(res.status, 200);
  await notify.expectNoMore(200);
  await h.stop();
});

test('an address herald cannot bind exits 2 without READY=1', async (t) => {
  const notify = await notifySocket(t);
  const other = await startHerald();
  const res = await runHerald(['--listen', `127.0.0.1:${other.port}`], {
    env: { NOTIFY_SOCKET: notify.path },
  });
  assert.equal(res.code, 2, res.stderr);
  assert.match(res.stderr, /address already in use|EADDRINUSE/i);
  await notify.expectNoMore(200);
  await other.stop();
});

test('SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1, whether the file is applied or refused', async (t) => {
  const notify = await notifySocket(t);
  const h = await startHerald({ config: { workers: 2 }, env: { NOTIFY_SOCKET: notify.path } });
  assert.equal(await notify.next('READY=1 at start'), 'READY=1');

  writeFileSync(h.configFile, JSON.stringify({ workers: 2, heartbeat_s: 30 }));
  const before = process.hrtime.bigint() / 1000n;
  h.child.kill('SIGHUP');
  const reloading = await notify.next('RELOADING=1');
  const m = reloading.match(/^RELOADING=1\nMONOTONIC_USEC=(\d+)$/);
  assert.ok(m, `RELOADING=1 with MONOTONIC_USEC, got ${JSON.stringify(reloading)}`);
  // CLOCK_MONOTONIC, as node's hrtime: taken after the signal was sent.
  assert.ok(BigInt(m[1]) >= before, `MONOTONIC_USEC ${m[1]} is not before the SIGHUP (${before})`);
  assert.equal(await notify.next('READY=1 after the reload'), 'READY=1');
  await h.waitForStderr(/reload complete/);

  // A refused file ends the reload too: the running configuration stays, and herald is ready.
  writeFileSync(h.configFile, '{"heartbeat_s": "often"}');
  h.child.kill('SIGHUP');
  assert.match(await notify.next('RELOADING=1 again'), /^RELOADING=1\n/);
  assert.equal(await notify.next('READY=1 after the refusal'), 'READY=1');
  await h.waitForStderr(/reload refused/);
  assert.equal((await request(`${h.url}/healthz`)).status, 200);
  await notify.expectNoMore(200);
  await h.stop();
});

test('SIGTERM: STOPPING=1 as the drain begins, and nothing after', async (t) => {
  const notify = await notifySocket(t);
  const h = await startHerald({ config: { shutdown_grace_s: 5 }, env: { NOTIFY_SOCKET: notify.path } });
  assert.equal(await notify.next('READY=1'), 'READY=1');
  const sse = await subscribe(h.url, '/events?topic=orders');
  const stopped = h.stop();
  assert.equal(await notify.next('STOPPING=1'), 'STOPPING=1');
  await stopped;
  await sse.waitEnd();
  assert.deepEqual(notify.messages, ['READY=1', 'STOPPING=1']);
});

/**
 * Starts herald through sh, so that $WATCHDOG_PID can name herald's own pid (sh execs it);
 * env.WATCHDOG_PID = 'self' means that pid. Resolves {child, stop()}.
 */
async function startWithWatchdog(env) {
  const script = env.WATCHDOG_PID === 'self' ? 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"' : 'exec "$0" "$@"';
  const childEnv = { ...process.env, ...env };
  if (env.WATCHDOG_PID === 'self') delete childEnv.WATCHDOG_PID;
  const child = spawn('sh', ['-c', script, HERALD_BIN, '--listen', '127.0.0.1:0'], {
    env: childEnv, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  await until(() => /listening on/.test(stderr), { what: 'herald to listen' });
  return {
    child,
    async stop() {
      child.kill('SIGTERM');
      const info = await withTimeout(exited, 10_000, 'herald to exit');
      assert.deepEqual(info, { code: 0, signal: null }, stderr);
      assertSanitizerClean(stderr);
    },
  };
}

test('WATCHDOG_USEC for this pid: WATCHDOG=1 at about half the interval', async (t) => {
  const notify = await notifySocket(t);
  const h = await startWithWatchdog({ NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '200000', WATCHDOG_PID: 'self' });
  assert.equal(await notify.next('READY=1'), 'READY=1');
  const start = Date.now();
  for (let i = 0; i < 4; i++) assert.equal(await notify.next(`WATCHDOG=1 #${i + 1}`, 2000), 'WATCHDOG=1');
  // Four pings every 100 ms: well within two intervals of 200 ms, each.
  assert.ok(Date.now() - start < 1000, `4 pings took ${Date.now() - start} ms`);
  await h.stop();
  await until(() => notify.messages.includes('STOPPING=1'), { what: 'STOPPING=1' });
  // The timer is closed with the drain: no ping follows STOPPING=1.
  const stoppingAt = notify.messages.indexOf('STOPPING=1');
  await sleep(250);
  assert.deepEqual(notify.messages.slice(stoppingAt + 1), []);
});

test('WATCHDOG_USEC meant for another pid (WATCHDOG_PID) sends no pings', async (t) => {
  const notify = await notifySocket(t);
  const h = await startWithWatchdog({ NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '100000', WATCHDOG_PID: '1' });
  assert.equal(await notify.next('READY=1'), 'READY=1');
  await notify.expectNoMore(400);
  await h.stop();
});
