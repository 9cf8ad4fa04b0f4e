// The cluster tests' own harness (test/lib/cluster.mjs), checked without
// herald: a real redis-server started, restarted and killed; the fault proxy
// pausing, resuming and cutting real Redis connections, and telling the
// pub/sub connection apart; assertSequence catching what it must catch.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startRedis, startProxy, redisCommand, parseReply, assertSequence, gapCovers, shapeOf, assertGapsFrom } from '../lib/cluster.mjs';
import { withTimeout, sleep } from '../lib/harness.mjs';

let redis;
let proxy;
after(async () => {
  await proxy?.close();
  await redis?.stop();
});

/** A raw client connection that collects RESP replies. */
async function rawClient(port) {
  const sock = net.connect({ host: '127.0.0.1', port });
  await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
  const c = { sock, buf: Buffer.alloc(0), closed: false, waiters: new Set() };
  const notify = () => { for (const w of c.waiters) w(); };
  sock.on('data', (d) => { c.buf = Buffer.concat([c.buf, d]); notify(); });
  sock.on('close', () => { c.closed = true; notify(); });
  sock.on('error', () => {});
  c.send = (...args) => sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
  c.replies = () => {
    const out = [];
    let off = 0;
    for (;;) {
      const r = parseReply(c.buf, off);
      if (!r) return out;
      out.push(r.value);
      off = r.end;
    }
  };
  c.waitReplies = (n, timeout = 3000) => withTimeout(new Promise((resolve, reject) => {
    const check = () => {
      const r = c.replies();
      if (r.length >= n) { c.waiters.delete(check); resolve(r); } else if (c.closed) { c.waiters.delete(check); reject(new Error('closed')); }
    };
    c.waiters.add(check);
    check();
  }), timeout, `${n} replies`);
  c.waitClose = (timeout = 3000) => withTimeout(new Promise((resolve) => {
    const check = () => { if (c.closed) { c.waiters.delete(check); resolve(); } };
    c.waiters.add(check);
    check();
  }), timeout, 'the connection to close');
  return c;
}

test('startRedis: a real, empty, non-persistent Redis that can be restarted and killed', async () => {
  redis = await startRedis();
  assert.equal(await redis.cli('SET', 'k', 'v'), 'OK');
  assert.equal(await redis.cli('GET', 'k'), 'v');
  assert.deepEqual(await redis.cli('CONFIG', 'GET', 'appendonly'), ['appendonly', 'no']);
  assert.deepEqual(await redis.cli('CONFIG', 'GET', 'save'), ['save', '']);
  await assert.rejects(redis.cli('NOSUCHCOMMAND'), /ERR unknown command/);
  const runId = (await redis.cli('INFO', 'server')).match(/run_id:(\w+)/)[1];
  await redis.restart();
  assert.equal(await redis.cli('GET', 'k'), null, 'a restart loses everything (no persistence)');
  assert.notEqual((await redis.cli('INFO', 'server')).match(/run_id:(\w+)/)[1], runId);
  await redis.kill('SIGKILL');
  assert.equal(redis.running, false);
  await assert.rejects(redisCommand(redis.port, ['PING']), /ECONNREFUSED/);
  await redis.restart();
  assert.equal(await redis.cli('PING'), 'PONG');
});

test('startProxy: forwards, stalls without closing, resumes, cuts; finds the pub/sub connection', async () => {
  proxy = await startProxy(redis.port);
  const cmd = await rawClient(proxy.port);
  const sub = await rawClient(proxy.port);
  cmd.send('PING');
  assert.deepEqual(await cmd.waitReplies(1), ['PONG']);
  sub.send('SUBSCRIBE', 'ch');
  assert.deepEqual(await sub.waitReplies(1), [['subscribe', 'ch', 1]]);
  await proxy.waitFor((p) => p.connections.filter((c) => c.pubsub).length === 1, { what: 'the pub/sub connection' });

  // Wedge only what Redis sends on the pub/sub connection.
  proxy.pause({ filter: (c) => c.pubsub, direction: 'down' });
  cmd.send('PUBLISH', 'ch', 'm1');
  assert.deepEqual((await cmd.waitReplies(2))[1], 1, 'the command connection still answers');
  await sleep(200); // proving a negative: the message is held
  assert.equal(sub.replies().length, 1, 'nothing reaches the wedged subscriber');
  proxy.resume();
  assert.deepEqual((await sub.waitReplies(2))[1], ['message', 'ch', 'm1'], 'held bytes arrive on resume');

  // Pause everything: existing and new connections stop answering but stay open.
  proxy.pause();
  cmd.send('PING');
  const late = await rawClient(proxy.port);
  late.send('PING');
  await sleep(200);
  assert.equal(cmd.replies().length, 2);
  assert.equal(late.replies().length, 0);
  assert.equal(cmd.closed || late.closed, false);
  proxy.resume();
  assert.deepEqual((await cmd.waitReplies(3))[2], 'PONG');
  assert.deepEqual(await late.waitReplies(1), ['PONG']);

  // Cut the pub/sub connection only.
  proxy.cut({ filter: (c) => c.pubsub });
  await sub.waitClose();
  assert.equal(cmd.closed, false);
  cmd.send('PING');
  assert.equal((await cmd.waitReplies(4))[3], 'PONG');
  proxy.cut({ reset: true });
  await cmd.waitClose();
  await late.waitClose();
  await proxy.waitFor((p) => p.connections.length === 0, { what: 'no connections' });
});

test('assertSequence: accepts a clean sequence, catches duplicates, disorder, silent epoch changes and losses', () => {
  const m = (id, topic = 't') => ({ type: 'message', id, topic });
  const g = (from, to, topic = 't') => ({ type: 'gap', topic, from, to });
  const ok = assertSequence([m('0000000a-1'), m('0000000a-3'), g('0000000a-3', '0000000b-2'), m('0000000b-3')],
    { acked: ['0000000a-1', '0000000a-3', '0000000a-4', '0000000b-1', '0000000b-3'] });
  assert.deepEqual(ok.epochs, ['0000000a', '0000000b']);
  assert.equal(ok.gaps.length, 1);
  assert.throws(() => assertSequence([m('0000000a-1'), m('0000000a-1')]), /duplicate id/);
  assert.throws(() => assertSequence([m('0000000a-2'), m('0000000a-1')]), /out of order/);
  assert.throws(() => assertSequence([m('0000000a-2'), m('0000000b-1')]), /without a gap/);
  assert.throws(() => assertSequence([m('0000000a-2'), g('0000000a-2', '0000000b-0'), m('0000000b-1'),
    g('0000000b-1', '0000000a-3'), m('0000000a-3')]), /came back/);
  assert.throws(() => assertSequence([m('0000000a-1'), m('0000000a-3')], { acked: ['0000000a-2'] }), /neither delivered nor reported/);
  assert.throws(() => assertSequence([m('0000000a-1')], { only: ['0000000a-2'] }), /nobody published/);
  assert.throws(() => assertSequence([m('0000000a-1'), g('0000000a-1', '0000000a-5', 'u')], { acked: [{ id: '0000000a-2', topic: 't' }] }),
    /neither delivered/, 'a gap of another topic covers nothing of this one');
  assert.equal(gapCovers(g('0000000a-3', '0000000a-5'), '0000000a-3'), false, 'from itself was received');
  assert.equal(gapCovers(g('0000000a-3', '0000000a-5'), '0000000a-5'), true);
  assert.equal(gapCovers(g('0000000a-3', '0000000a-5'), '0000000a-6'), false);
  assert.equal(gapCovers(g('0000000a-3', '0000000b-0'), '0000000a-900'), true, 'into a new epoch: the rest of the old is lost');
  const twice = [m('0000000a-1'), g('0000000a-1', '0000000b-0'), g('0000000a-1', '0000000b-2'), m('0000000b-3')];
  assert.deepEqual(shapeOf(twice), ['message', 'gap', 'message'], 'a gap reported again counts once');
  assertGapsFrom(twice, '0000000a-1');
  assert.throws(() => assertGapsFrom(twice, '0000000a-2'), /starts at the last id/);
});
