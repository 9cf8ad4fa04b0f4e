// Idempotent publish on one node (SPEC §5, docs/api.md): a publish that
// repeats an Idempotency-Key (header of POST /topics/{t}, per-item
// "idempotency_key" of POST /publish, "idempotency_key" of the WebSocket
// publish op) for the same topic within publish.idempotency_ttl_s is not
// published again: it answers 200 with the first id and "duplicate": true.
// Malformed keys are 400 invalid_idempotency_key (an error frame on /ws),
// and a bystander subscriber is never disturbed. Concurrent publishes of one
// key over several connections and workers publish exactly one message.
// The cluster's side is in cluster-idempotency.test.mjs.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startHerald, publish, publishOk, publishBatch, subscribe, openWS, assertError, rawRequest, until,
} from '../lib/harness.mjs';

let h;
let bystander;
let bystanderCount = 0;

/** Publishes to the bystander's topic and waits for it: nobody else was disturbed. */
async function bystanderAlive() {
  const n = bystander.events.length;
  const data = `still here ${++bystanderCount}`;
  await publishOk(h.url, 'bystander', data);
  await bystander.waitEvents(n + 1, { timeout: 5000 });
  assert.equal(bystander.events[n].data, data);
}

before(async () => {
  h = await startHerald({ config: { workers: 2 } });
  bystander = await subscribe(h.url, '/events?topic=bystander');
});

after(async () => {
  bystander?.close();
  await h?.stop();
});

function keyed(key) {
  return { headers: { 'Idempotency-Key': key } };
}

describe('POST /topics/{topic} with Idempotency-Key', () => {
  test('the same key twice publishes once; the repeat answers 200 with the first id', async () => {
    const sse = await subscribe(h.url, '/events?topic=idem-one');
    try {
      const first = await publish(h.url, 'idem-one', 'first', keyed('order-17'));
      assert.equal(first.status, 201, first.text);
      assert.deepEqual(Object.keys(first.json).sort(), ['id', 'subscribers', 'topic']);
      const again = await publish(h.url, 'idem-one', 'retry', keyed('order-17'));
      assert.equal(again.status, 200, again.text);
      assert.match(again.headers.get('content-type'), /^application\/json/);
      assert.deepEqual(again.json, { id: first.json.id, topic: 'idem-one', subscribers: 1, duplicate: true });
      // A later publish without the key is new and comes right after the first: nothing in between.
      const next = await publishOk(h.url, 'idem-one', 'next');
      const events = await sse.waitEvents(2);
      assert.deepEqual(events.map((e) => [e.id, e.data]), [[first.json.id, 'first'], [next.id, 'next']]);
      await sse.expectNoMore(100);
    } finally {
      sse.close();
    }
  });

  test('the same key on another topic is another publish', async () => {
    const a = await publish(h.url, 'idem-ta', 'a', keyed('shared'));
    const b = await publish(h.url, 'idem-tb', 'b', keyed('shared'));
    assert.equal(a.status, 201, a.text);
    assert.equal(b.status, 201, b.text);
    assert.notEqual(a.json.id, b.json.id);
  });

  test('keys are compared exactly: case and spaces count', async () => {
    const ids = new Set();
    for (const key of ['K', 'k', 'a b', 'a  b']) {
      const res = await publish(h.url, 'idem-exact', key, keyed(key));
      assert.equal(res.status, 201, `${key}: ${res.text}`);
      ids.add(res.json.id);
    }
    assert.equal(ids.size, 4);
    const res = await publish(h.url, 'idem-exact', 'again', keyed('a  b'));
    assert.equal(res.status, 200, res.text);
  });

  test('a key of 128 printable bytes is taken', async () => {
    const key = `${'~'.repeat(64)} !"#$%&'()*+,-./0123456789:;<=>?@[\\]^_\`{|}`.slice(0, 128).padEnd(128, 'z');
    assert.equal(key.length, 128);
    const first = await publish(h.url, 'idem-long', 'x', keyed(key));
    assert.equal(first.status, 201, first.text);
    const again = await publish(h.url, 'idem-long', 'x', keyed(key));
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.id, first.json.id);
  });

  test('malformed keys are 400 invalid_idempotency_key and publish nothing', async () => {
    const sse = await subscribe(h.url, '/events?topic=idem-bad');
    try {
      // Through fetch: empty (after the header's whitespace is trimmed), too long.
      for (const key of ['', '   ', 'k'.repeat(129)]) {
        assertError(await publish(h.url, 'idem-bad', 'x', keyed(key)), 400, 'invalid_idempotency_key');
      }
      // Raw bytes: a tab inside, bytes beyond ASCII (UTF-8 é, 0xff).
      for (const key of ['a\tb', 'caf\xc3\xa9', 'a\xffb']) {
        const body = 'x';
        const head = `POST /topics/idem-bad HTTP/1.1\r\nHost: t\r\nIdempotency-Key: ${key}\r\n` +
          `Content-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
        const { text } = await rawRequest(h.host, h.port, Buffer.from(head + body, 'latin1'));
        assert.match(text, /^HTTP\/1\.1 400 /, JSON.stringify(key));
        assert.match(text, /"error":"invalid_idempotency_key"/, JSON.stringify(key));
      }
      await sse.expectNoMore(100, { from: 0 });
      await bystanderAlive();
    } finally {
      sse.close();
    }
  });
});

describe('POST /publish with per-item idempotency_key', () => {
  test('a batch mixing repeats and new items answers 201; repeats carry their first id', async () => {
    const sse = await subscribe(h.url, '/events?topic=idem-batch');
    try {
      const first = await publish(h.url, 'idem-batch', 'one', keyed('b1'));
      assert.equal(first.status, 201);
      const res = await publishBatch(h.url, [
        { topic: 'idem-batch', data: 'one again', idempotency_key: 'b1' },
        { topic: 'idem-batch', data: 'two', idempotency_key: 'b2' },
        { topic: 'idem-batch', data: 'two again', idempotency_key: 'b2' },
        { topic: 'idem-batch', data: 'three' },
      ]);
      assert.equal(res.status, 201, res.text);
      const m = res.json.messages;
      assert.equal(m.length, 4);
      assert.deepEqual(m[0], { id: first.json.id, topic: 'idem-batch', subscribers: 1, duplicate: true });
      assert.equal(m[1].duplicate, undefined);
      assert.deepEqual(m[2], { ...m[1], duplicate: true });
      assert.equal(m[3].duplicate, undefined);
      const events = await sse.waitEvents(3);
      assert.deepEqual(events.map((e) => [e.id, e.data]),
        [[first.json.id, 'one'], [m[1].id, 'two'], [m[3].id, 'three']]);

      // Every item a repeat: 200, nothing published.
      const all = await publishBatch(h.url, [
        { topic: 'idem-batch', data: 'x', idempotency_key: 'b2' },
        { topic: 'idem-batch', data: 'y', idempotency_key: 'b1' },
      ]);
      assert.equal(all.status, 200, all.text);
      assert.deepEqual(all.json.messages.map((x) => [x.id, x.duplicate]), [[m[1].id, true], [first.json.id, true]]);
      await sse.expectNoMore(100, { from: 3 });
    } finally {
      sse.close();
    }
  });

  test('a batch with one malformed key is refused whole', async () => {
    const sse = await subscribe(h.url, '/events?topic=idem-batch-bad');
    try {
      for (const bad of ['', 'k'.repeat(129), 'a\u0001b', 'caf\u00e9', 'a\tb']) {
        const res = await publishBatch(h.url, [
          { topic: 'idem-batch-bad', data: 'fine', idempotency_key: 'ok' },
          { topic: 'idem-batch-bad', data: 'bad', idempotency_key: bad },
        ]);
        const err = assertError(res, 400, 'invalid_idempotency_key');
        assert.match(err.message, /^Item 1: /);
      }
      assertError(await publishBatch(h.url, [{ topic: 'idem-batch-bad', data: 'x', idempotency_key: 5 }]),
        400, 'invalid_json');
      // Nothing was published: the good key of those batches is still new.
      const res = await publish(h.url, 'idem-batch-bad', 'now', keyed('ok'));
      assert.equal(res.status, 201, res.text);
      const [ev] = await sse.waitEvents(1);
      assert.equal(ev.data, 'now');
      await bystanderAlive();
    } finally {
      sse.close();
    }
  });
});

describe('WebSocket publish op with idempotency_key', () => {
  test('a repeat is acked with the first id and duplicate: true; a bad key is an error frame', async () => {
    const ws = await openWS(h.url, '/ws');
    const sub = await openWS(h.url, '/ws');
    try {
      await sub.ok({ op: 'subscribe', topics: ['idem-ws'] });
      const first = await ws.ok({ op: 'publish', topic: 'idem-ws', data: 'one', idempotency_key: 'w1' });
      assert.equal(first.duplicate, undefined);
      const again = await ws.ok({ op: 'publish', topic: 'idem-ws', data: 'retry', idempotency_key: 'w1' });
      assert.equal(again.id, first.id);
      assert.equal(again.duplicate, true);
      // Over HTTP the same key is the same publish.
      const http = await publish(h.url, 'idem-ws', 'http', keyed('w1'));
      assert.equal(http.status, 200, http.text);
      assert.equal(http.json.id, first.id);

      for (const bad of ['', 'k'.repeat(129), 'a\nb', 'caf\u00e9']) {
        const reply = await ws.call({ op: 'publish', topic: 'idem-ws', data: 'bad', idempotency_key: bad });
        assert.equal(reply.type, 'error', JSON.stringify(reply));
        assert.equal(reply.error, 'invalid_idempotency_key', JSON.stringify(reply));
      }
      await ws.assertUsable();
      const envelopes = await sub.waitEnvelopes(1, { topic: 'idem-ws' });
      assert.equal(envelopes[0].id, first.id);
      await sub.expectNoMore(100, { pred: (j) => j.type === 'message' });
      await bystanderAlive();
    } finally {
      ws.close();
      sub.close();
    }
  });
});

test('concurrent publishes of one key over many connections and two workers publish one message', async () => {
  const sse = await subscribe(h.url, '/events?topic=idem-race');
  try {
    for (let round = 0; round < 3; round++) {
      const key = `race-${round}`;
      // Half over HTTP (fetch opens a connection per request under way), half over WebSockets.
      const sockets = await Promise.all(Array.from({ length: 10 }, () => openWS(h.url, '/ws')));
      try {
        const answers = await Promise.all([
          ...Array.from({ length: 10 }, (_, i) => publish(h.url, 'idem-race', `http ${i}`, keyed(key))
            .then((r) => ({ created: r.status === 201, ok: r.status === 201 || r.status === 200, id: r.json?.id }))),
          ...sockets.map((ws, i) => ws.call({ op: 'publish', topic: 'idem-race', data: `ws ${i}`, idempotency_key: key })
            .then((r) => ({ created: r.type === 'ack' && !r.duplicate, ok: r.type === 'ack', id: r.id }))),
        ]);
        assert.ok(answers.every((a) => a.ok), JSON.stringify(answers));
        assert.equal(answers.filter((a) => a.created).length, 1, JSON.stringify(answers));
        assert.equal(new Set(answers.map((a) => a.id)).size, 1, JSON.stringify(answers));
        await sse.waitEvents(round + 1);
        assert.equal(sse.events[round].id, answers[0].id);
      } finally {
        for (const ws of sockets) ws.close();
      }
    }
    await sse.expectNoMore(150, { from: 3 });
  } finally {
    sse.close();
  }
});

describe('publish.idempotency_ttl_s and limits.max_idempotency_keys', () => {
  test('a key is forgotten after the TTL: the same key publishes again', async () => {
    const short = await startHerald({ config: { publish: { idempotency_ttl_s: 1 } } });
    const sse = await subscribe(short.url, '/events?topic=idem-ttl');
    try {
      const started = Date.now();
      const first = await publish(short.url, 'idem-ttl', 'one', keyed('t1'));
      assert.equal(first.status, 201, first.text);
      let last;
      await until(async () => {
        last = await publish(short.url, 'idem-ttl', 'two', keyed('t1'));
        if (last.status === 200) assert.equal(last.json.id, first.json.id);
        return last.status === 201;
      }, { timeout: 5000, interval: 50, what: 'the key to expire' });
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 900, `the key expired after ${elapsed} ms, before the 1 s TTL`);
      assert.notEqual(last.json.id, first.json.id);
      const events = await sse.waitEvents(2);
      assert.deepEqual(events.map((e) => e.data), ['one', 'two']);
      await sse.expectNoMore(100, { from: 2 });
    } finally {
      sse.close();
      await short.stop();
    }
  });

  test('a TTL of 0 remembers no key; a full key store forgets the oldest key, never refuses', async () => {
    const off = await startHerald({ config: { publish: { idempotency_ttl_s: 0 } } });
    try {
      assert.equal((await publish(off.url, 't', 'a', keyed('k'))).status, 201);
      assert.equal((await publish(off.url, 't', 'a', keyed('k'))).status, 201);
      assertError(await publish(off.url, 't', 'a', keyed('')), 400, 'invalid_idempotency_key');
    } finally {
      await off.stop();
    }
    const small = await startHerald({ config: { limits: { max_idempotency_keys: 2 } } });
    try {
      for (const k of ['a', 'b', 'c']) assert.equal((await publish(small.url, 't', k, keyed(k))).status, 201);
      assert.equal((await publish(small.url, 't', 'c', keyed('c'))).status, 200);
      assert.equal((await publish(small.url, 't', 'b', keyed('b'))).status, 200);
      assert.equal((await publish(small.url, 't', 'a', keyed('a'))).status, 201); // forgotten early
    } finally {
      await small.stop();
    }
  });
});
