// herald.js across nodes: two herald nodes on one Redis behind a proxy (a
// load balancer), a steady stream published round robin on both, and the
// page's connection moved from one node to the other: on every transport,
// nothing is lost or repeated and no gap is reported (the nodes share one
// epoch and one history).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startClusterPage, publishStream } from '../lib/browser.mjs';

const OPTS = { heartbeat: 1, heartbeatMargin: 300, backoff: { base: 50, cap: 300 }, pollTimeout: 2 };

describe('herald.js across two nodes', () => {
  let fixture;
  let cluster;
  let proxy;
  let page;

  before(async () => {
    fixture = await startClusterPage();
    ({ cluster, proxy, page } = fixture);
  });

  after(() => fixture?.close());

  for (const transport of ['websocket', 'sse', 'poll']) {
    test(`${transport}: moved from node to node, nothing lost or repeated`, async () => {
      const topic = `nodes-${transport}`;
      const i = await page.evaluate(([u, o]) => window.make(u, o),
        [proxy.url, { ...OPTS, topics: [topic], transports: [transport] }]);
      await page.waitForFunction(([n, t]) => window.clients[n].h.transport === t, [i, transport]);
      const count = () => page.evaluate((n) => window.clients[n].log.messages.length, i);
      const stream = publishStream([cluster.A.url, cluster.B.url], topic, { count: 100_000, everyMs: 15 });
      for (const node of [cluster.B, cluster.A, cluster.B]) {
        const have = await count();
        proxy.setTarget(node.port);
        proxy.sever();
        await page.waitForFunction(([n, c]) => window.clients[n].log.messages.length >= c, [i, have + 5]);
      }
      if (transport !== 'poll') {
        // Subscriber counts are each node's own: the page is on B now, not on A.
        const subscribers = async (node) => (await (await fetch(`${node.url}/topics/${topic}`)).json()).subscribers;
        assert.equal(await subscribers(cluster.B), 1);
        assert.equal(await subscribers(cluster.A), 0);
      }
      stream.stop();
      const ids = await stream.done;
      await page.waitForFunction(([n, x]) => window.clients[n].log.messages.some((m) => m.id === x), [i, ids.at(-1)]);
      const log = await page.evaluate((n) => window.clients[n].log, i);
      assert.deepEqual(log.messages.map((m) => m.id), ids);
      assert.deepEqual(log.gaps, []);
      await page.evaluate((n) => window.clients[n].h.close(), i);
    });
  }
});
