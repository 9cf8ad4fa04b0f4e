// Config ergonomics (issue 15, item 3): HERALD_<KEY> environment overrides, secret files,
// --check-config, and the `herald token` tool round-tripping with a running herald.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { runHerald, startHerald, writeConfig, request, publish, openSSE, until } from '../lib/harness.mjs';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'herald-config-env-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const file = (name, text) => { const p = path.join(tmp, name); writeFileSync(p, text); return p; };

async function checkConfig(config, env) {
  const { dir, file: cfg } = writeConfig(config);
  try {
    return await runHerald(['--check-config', cfg], { env });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function token(args) {
  const r = await runHerald(['token', ...args]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

const bearer = (t) => ({ authorization: `Bearer ${t}` });

describe('--check-config', () => {
  test('a valid file prints ok and exits 0', async () => {
    const r = await checkConfig({ limits: { max_connections: 10 } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ok\n');
    assert.equal(r.stderr, '');
  });

  test('an invalid file exits 2 with the error', async () => {
    const r = await checkConfig({ limits: { max_connections: 0 } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /limits\.max_connections: must be an integer between 1 and 10000000/);
    assert.equal(r.stdout, '');
  });

  test('it loads the keys as a start would: a public key that is not one is an error', async () => {
    const r = await checkConfig({ auth: { jwt_public_key: file('not-a-key.pem', 'hello\n') } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /auth\.jwt_public_key/);
  });
});

describe('environment overrides', () => {
  const cases = [
    [{ HERALD_LIMITS_MAX_CONNECTIONS: 'abc' }, /^herald: HERALD_LIMITS_MAX_CONNECTIONS: must be an integer between 1 and 10000000\n$/],
    [{ HERALD_LIMITS_MAX_CONNECTIONS: '0' }, /^herald: HERALD_LIMITS_MAX_CONNECTIONS: must be an integer between 1 and 10000000\n$/],
    [{ HERALD_LIMITS_MAX_CONNECTIONS: '-5' }, /HERALD_LIMITS_MAX_CONNECTIONS: must be an integer/],
    [{ HERALD_WEBSOCKET_COMPRESSION: 'yes' }, /HERALD_WEBSOCKET_COMPRESSION: expected true or false/],
    [{ HERALD_LOG_LEVEL: 'loud' }, /HERALD_LOG_LEVEL: must be one of debug, info, warn, error/],
    [{ HERALD_LISTEN: '127.0.0.1:1,nowhere' }, /HERALD_LISTEN\[1\]: must be IPV4:PORT/],
    [{ HERALD_LISTEN: '' }, /HERALD_LISTEN: must not be empty/],
    [{ HERALD_LISTEN: '["127.0.0.1:1", 5]' }, /HERALD_LISTEN\[1\]: expected a string/],
    [{ HERALD_LISTEN: '[oops' }, /HERALD_LISTEN: expected comma-separated items or a JSON array/],
    [{ HERALD_CLUSTER_REDIS: 'http://x' }, /HERALD_CLUSTER_REDIS: must be empty or start with 'redis:\/\/'/],
    [{ HERALD_LOG_FORMAT: 'xml' }, /HERALD_LOG_FORMAT: must be text or json/],
  ];
  for (const [env, error] of cases) {
    test(`${JSON.stringify(env)} is refused like the file's value, naming the variable`, async () => {
      const r = await checkConfig({}, env);
      assert.equal(r.code, 2, r.stdout);
      assert.match(r.stderr, error);
    });
  }

  test('valid values pass, lists comma-separated or as JSON; other HERALD_ variables are ignored', async () => {
    for (const env of [
      { HERALD_LISTEN: '127.0.0.1:0, 127.0.0.1:0', HERALD_SOMETHING_ELSE: 'x' },
      { HERALD_LISTEN: '["127.0.0.1:0"]', HERALD_CORS_ALLOW_ORIGINS: '' },
      { HERALD_WEBSOCKET_COMPRESSION: 'false', HERALD_HISTORY_MAX_BYTES: '1099511627776' },
    ]) {
      const r = await checkConfig({}, env);
      assert.equal(r.code, 0, `${JSON.stringify(env)}: ${r.stderr}`);
    }
  });

  test('file < environment < command line, and a reload applies the environment again', async () => {
    const h = await startHerald({
      config: { limits: { max_message_bytes: 1000 }, sse: { retry_ms: 1000 } },
      args: ['--config', '{config}', '--listen', '127.0.0.1:0'],
      // The command line's --listen beats this address, which would not start at all.
      env: { HERALD_LIMITS_MAX_MESSAGE_BYTES: '5', HERALD_LISTEN: '192.0.2.1:1' },
    });
    try {
      assert.equal((await publish(h.url, 'env', '123456')).status, 413);
      assert.equal((await publish(h.url, 'env', '12345')).status, 201);
      writeFileSync(h.configFile, JSON.stringify({ limits: { max_message_bytes: 2000 }, sse: { retry_ms: 1234 } }));
      h.child.kill('SIGHUP');
      // The reload is seen when a new stream gets the new retry; the environment's limit stays.
      await until(async () => {
        const s = await openSSE(h.url, '/events?topic=env');
        s.close();
        return s.stream.retry === 1234;
      }, { what: 'the reload to apply' });
      assert.equal((await publish(h.url, 'env', '123456')).status, 413);
    } finally {
      await h.stop();
    }
  });
});

describe('secret files', () => {
  test('auth.jwt_secret_file: the secret less one trailing newline verifies tokens', async () => {
    const secretFile = file('secret', 'file-secret-0123456789-abcdefghij\n');
    const h = await startHerald({ config: { auth: { jwt_secret_file: secretFile, anonymous_publish: false } } });
    try {
      const t = await token(['--secret-file', secretFile, '--publish', 'x']);
      assert.equal((await publish(h.url, 'x', 'hi', { headers: bearer(t) })).status, 201);
      // Signed with the newline kept: another secret, refused.
      const withNewline = execFileSync('node', ['-e', `
        const c = require('crypto'); const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
        const i = b({alg:'HS256',typ:'JWT'}) + '.' + b({herald:{publish:['x']}});
        process.stdout.write(i + '.' + c.createHmac('sha256', process.argv[1]).update(i).digest('base64url'));`,
      'file-secret-0123456789-abcdefghij\n']).toString();
      assert.equal((await publish(h.url, 'x', 'hi', { headers: bearer(withNewline) })).status, 401);
    } finally {
      await h.stop();
    }
  });

  test('from the environment too: HERALD_AUTH_JWT_SECRET_FILE', async () => {
    const secretFile = file('secret-env', 'env-secret-0123456789-abcdefghij');
    const r = await checkConfig({}, { HERALD_AUTH_JWT_SECRET_FILE: secretFile });
    assert.equal(r.code, 0, r.stderr);
  });

  test('an unreadable or empty file, or both keys set, is a config error naming key and path', async () => {
    let r = await checkConfig({ auth: { jwt_secret_file: path.join(tmp, 'missing') } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /auth\.jwt_secret_file: cannot read '.*missing': No such file or directory/);
    r = await checkConfig({ cluster: { sentinels: ['127.0.0.1:26379'], sentinel_master: 'm', master_password_file: file('empty', '\n') } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cluster\.master_password_file: '.*empty' is empty/);
    r = await checkConfig({ auth: { jwt_secret: 'a', jwt_secret_file: file('s2', 'b') } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /auth\.jwt_secret and auth\.jwt_secret_file: set one or the other/);
    r = await checkConfig({ cluster: { sentinels: ['127.0.0.1:26379'], sentinel_master: 'm', sentinel_password_file: file('sp', 'pw\n'), master_password_file: file('mp', 'pw2') } });
    assert.equal(r.code, 0, r.stderr);
  });
});

describe('herald token', () => {
  test('HS256: grants what it names and nothing else; refused once expired', async () => {
    const secretFile = file('hs', 'token-tool-secret-0123456789abcdef\n');
    const h = await startHerald({
      config: { auth: { jwt_secret_file: secretFile, anonymous_publish: false, anonymous_subscribe: false } },
    });
    try {
      const t = await token(['--secret-file', secretFile, '--publish', 'chat.*', '--subscribe', 'news', '--ttl', '1h', '--sub', 'alice']);
      const claims = JSON.parse(Buffer.from(t.split('.')[1], 'base64url'));
      assert.equal(claims.sub, 'alice');
      assert.deepEqual(claims.herald, { publish: ['chat.*'], subscribe: ['news'] });
      assert.ok(Math.abs(claims.exp - Date.now() / 1000 - 3600) < 5);

      assert.equal((await publish(h.url, 'chat.room1', 'hi', { headers: bearer(t) })).status, 201);
      assert.equal((await publish(h.url, 'news', 'hi', { headers: bearer(t) })).status, 403);
      assert.equal((await request(`${h.url}/poll?topic=news&timeout=0`, { headers: bearer(t) })).status, 200);
      assert.equal((await request(`${h.url}/poll?topic=chat.room1&timeout=0`, { headers: bearer(t) })).status, 403);

      // 3 s, not 1 s: exp is whole seconds, and on a loaded machine starting `herald token`
      // and publishing could pass a 1 s expiry before the first publish.
      const short = await token(['--secret-file', secretFile, '--publish', '*', '--ttl', '3s']);
      const exp = JSON.parse(Buffer.from(short.split('.')[1], 'base64url')).exp;
      assert.equal((await publish(h.url, 'chat.x', 'hi', { headers: bearer(short) })).status, 201);
      // Wait for the clock to pass exp (a known instant), then the same token is refused.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, exp * 1000 - Date.now()) + 20));
      const res = await publish(h.url, 'chat.x', 'hi', { headers: bearer(short) });
      assert.equal(res.status, 401);
      assert.match(res.text, /expired/);
      const metrics = (await request(`${h.url}/metrics`)).text;
      assert.match(metrics, /herald_auth_refusals_total\{reason="expired"\} 1\n/);
      assert.match(metrics, /herald_auth_refusals_total\{reason="forbidden"\} 2\n/);
    } finally {
      await h.stop();
    }
  });

  for (const [alg, genArgs] of [
    ['RS256', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']],
    ['ES256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']],
  ]) {
    test(`${alg} with --private-key: the algorithm follows the key`, async () => {
      const key = path.join(tmp, `${alg}.pem`), pub = path.join(tmp, `${alg}.pub.pem`);
      execFileSync('openssl', ['genpkey', ...genArgs, '-out', key], { stdio: 'ignore' });
      execFileSync('openssl', ['pkey', '-in', key, '-pubout', '-out', pub], { stdio: 'ignore' });
      const h = await startHerald({ config: { auth: { jwt_public_key: pub, anonymous_publish: false } } });
      try {
        const t = await token(['--private-key', key, '--publish', 'a.*']);
        assert.equal(JSON.parse(Buffer.from(t.split('.')[0], 'base64url')).alg, alg);
        assert.equal((await publish(h.url, 'a.b', 'hi', { headers: bearer(t) })).status, 201);
        assert.equal((await publish(h.url, 'b', 'hi', { headers: bearer(t) })).status, 403);
      } finally {
        await h.stop();
      }
    });
  }

  test('bad usage, keys and patterns exit 2 with a clear error', async () => {
    const secretFile = file('hs2', 'x');
    for (const [args, error] of [
      [[], /give --secret-file or --private-key/],
      [['--secret-file', secretFile, '--ttl', '5 minutes'], /--ttl: expected N, Ns, Nm, Nh or Nd/],
      [['--secret-file', path.join(tmp, 'nope')], /--secret-file: cannot read/],
      [['--private-key', secretFile], /--private-key: cannot read a PEM private key/],
      [['--secret-file', secretFile, '--publish', ''], /pattern/],
    ]) {
      const r = await runHerald(['token', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}`);
      assert.match(r.stderr, error);
      assert.equal(r.stdout, '');
    }
  });
});
