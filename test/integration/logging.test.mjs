// Logs (README, docs/api.md Auth): at log_level debug herald logs one line per request,
// with the path only, so tokens in query strings never reach a log.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, request } from '../lib/harness.mjs';

test('debug request lines carry the path, never the query string', async () => {
  const h = await startHerald({ config: { log_level: 'debug' } });
  try {
    const res = await request(`${h.url}/healthz?access_token=s3cr3t-token`);
    assert.equal(res.status, 200);
    await h.waitForStderr(/debug \S+ GET \/healthz$/m);
    assert.doesNotMatch(h.stderr(), /s3cr3t-token/);
  } finally {
    await h.stop();
  }
});

test('with access_log false, requests are not logged at info', async () => {
  const h = await startHerald({ config: { access_log: false } });
  try {
    await request(`${h.url}/healthz`);
    await request(`${h.url}/nothing-here`);
    assert.doesNotMatch(h.stderr(), /GET \//);
  } finally {
    await h.stop();
  }
});
