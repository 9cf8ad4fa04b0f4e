// herald.js when Redis refuses a read (cluster mode, docs/api.md "Reads"):
// a resume refused (SSE `herald-unavailable`, WebSocket 1013) is an `error`
// event and a reconnect from the cursor; a subscribe op refused
// `unavailable` keeps its topics and is sent again. Once Redis is repaired
// the page follows every topic, with nothing lost or repeated.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { refuseReads } from '../lib/cluster.mjs';
import { publishOk, request, until } from '../lib/harness.mjs';
import { startClusterPage } from '../lib/browser.mjs';

const OPTS = { heartbeat: 1, heartbeatMargin: 300, backoff: { base: 50, cap: 300 } };

describe('herald.js and reads Redis refuses', () => {
  let fixture;
  let redis;
  let cluster;
  let proxy;
  let page;

  before(async () => {
    fixture = await startClusterPage();
    ({ redis, cluster, proxy, page } = fixture);
  });

  after(() => fixture?.close());

  const log = (i) => page.evaluate((n) => window.clients[n].log, i);
  const waitIds = (i, ids) => page.waitForFunction(([n, want]) => {
    const have = new Set(window.clients[n].log.messages.map((m) => m.id));
    return want.every((id) => have.has(id));
  }, [i, ids]);

  for (const transport of ['websocket', 'sse']) {
    test(`${transport}: a resume Redis refuses is an error and a reconnect; repaired, the page keeps its topics and misses nothing`, async () => {
      const good = `good-${transport}`;
      const bad = `bad-${transport}`;
      const i = await page.evaluate(([u, o]) => window.make(u, o),
        [proxy.url, { ...OPTS, topics: [good, bad], transports: [transport] }]);
      await page.waitForFunction(([n, t]) => window.clients[n].h.transport === t, [i, transport]);
      const b1 = await publishOk(cluster.A.url, bad, 'b1');
      const g1 = await publishOk(cluster.A.url, good, 'g1');
      await waitIds(i, [b1.id, g1.id]);
      // The connection drops and resumes on B, which has to read the topics from Redis (A could
      // answer from its own history): Redis refuses that read (-OOM: memory full, and the read
      // would have to write the hub afresh). A key of another type would not do: one topic Redis
      // cannot read is a gap, not a refusal.
      await refuseReads(redis, async () => {
        proxy.setTarget(cluster.B.port);
        proxy.sever();
        await page.waitForFunction((n) => window.clients[n].log.errors.some((e) => e.code === 'unavailable'), i);
      });
      const g2 = await publishOk(cluster.A.url, good, 'g2');
      const b2 = await publishOk(cluster.A.url, bad, 'b2');
      const g3 = await publishOk(cluster.A.url, good, 'g3');
      const want = [b1.id, g1.id, g2.id, b2.id, g3.id];
      await waitIds(i, want);
      const got = await log(i);
      assert.deepEqual(got.messages.map((m) => m.id), want, 'nothing lost or repeated');
      assert.deepEqual(got.gaps, []);
      assert.deepEqual(await page.evaluate((n) => window.clients[n].h.topics, i), [good, bad]);
      await page.evaluate((n) => window.clients[n].h.close(), i);
      proxy.setTarget(cluster.A.port);
    });
  }

  test('websocket: a subscribe op refused unavailable keeps its topic and is sent again once Redis answers', async () => {
    const kept = 'sync-kept';
    const added = 'sync-added';
    const i = await page.evaluate(([u, o]) => window.make(u, o),
      [proxy.url, { ...OPTS, topics: [kept], transports: ['websocket'] }]);
    await page.waitForFunction((n) => window.clients[n].h.transport === 'websocket', i);
    let subscribed;
    await refuseReads(redis, async () => {
      subscribed = page.evaluate(([n, t]) => window.clients[n].h.subscribe(t), [i, added]);
      await page.waitForFunction((n) => window.clients[n].log.errors.some((e) => e.code === 'unavailable'), i);
    });
    await subscribed;
    const error = (await log(i)).errors.find((e) => e.code === 'unavailable');
    assert.deepEqual([error.retrying, error.topics], [true, [added]], JSON.stringify(error));
    assert.deepEqual(await page.evaluate((n) => window.clients[n].h.topics, i), [kept, added]);
    // Sent again after its backoff: acked, the topic is delivered.
    await until(async () => {
      const r = await request(`${cluster.A.url}/topics/${added}`);
      return r.status === 200 && r.json.subscribers === 1;
    }, { timeout: 10_000, what: 'the op sent again to be acked' });
    const a1 = await publishOk(cluster.A.url, added, 'a1');
    const k1 = await publishOk(cluster.A.url, kept, 'k1');
    await waitIds(i, [a1.id, k1.id]);
    assert.equal((await log(i)).closes.length, 0, 'the connection stayed');
    await page.evaluate((n) => window.clients[n].h.close(), i);
  });
});
