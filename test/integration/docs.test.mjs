// The documentation stands on its own and its examples work: README.md and
// docs/*.md link only to files and headings of this repository, the usage
// the README shows is exactly `herald --help`, and the README's shell,
// WebSocket and TLS examples run as written against the real binary (only
// the address is swapped for the test server's).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { readFileSync, readdirSync, existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runHerald, startHerald, publishOk, withTimeout, ID_RE } from '../lib/harness.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const DOCS = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const DEFAULT_ADDRESS = '127.0.0.1:8080';

const withoutCode = (markdown) => markdown.replace(/^```[\s\S]*?^```/gm, '');

/** GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes. */
function slug(heading) {
  return heading.trim().toLowerCase().replace(/`/g, '').replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
}

function anchorsOf(file) {
  const text = withoutCode(readFileSync(path.join(ROOT, file), 'utf8'));
  return new Set([...text.matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1])));
}

/** The body of the first fenced block of `lang` after `marker` in the README. */
function blockAfter(marker, lang) {
  const at = README.indexOf(marker);
  assert.ok(at >= 0, `README should contain ${JSON.stringify(marker)}`);
  const m = new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```', 'm').exec(README.slice(at));
  assert.ok(m, `a ${lang} block after ${JSON.stringify(marker)}`);
  return m[1];
}

function bash(script, { cwd } = {}) {
  return new Promise((resolve, reject) => {
    execFile('bash', ['-c', script], { cwd, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') reject(err);
      else resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

describe('documentation', () => {
  test('links stay inside the repository and reach existing files and headings', () => {
    for (const file of DOCS) {
      const text = readFileSync(path.join(ROOT, file), 'utf8');
      assert.doesNotMatch(text, /\.\.\/shared|SPEC\.md/, `${file} points outside the repository`);
      for (const [, target] of withoutCode(text).matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target)) continue;
        const [name, anchor] = target.split('#');
        const linked = name === '' ? file : path.normalize(path.join(path.dirname(file), name));
        assert.ok(existsSync(path.join(ROOT, linked)), `${file}: link to missing ${target}`);
        if (anchor !== undefined)
          assert.ok(anchorsOf(linked).has(anchor), `${file}: no heading for #${anchor} in ${linked}`);
      }
    }
  });

  test('the usage in the README is exactly what --help prints', async () => {
    const r = await runHerald(['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(README.includes('```\n' + r.stdout.trimEnd() + '\n```'),
      `README should show --help verbatim:\n${r.stdout}`);
  });

  test('the shell example publishes, polls after the id it got and resumes SSE from it', async () => {
    const h = await startHerald();
    try {
      const script = blockAfter('Publish and resume in another', 'sh')
        .replaceAll(`http://${DEFAULT_ADDRESS}`, h.url)
        .replaceAll('curl -N', 'curl -N --max-time 1'); // the stream would never end on its own
      const { stdout, stderr } = await bash(script);
      const lines = stdout.split('\n');
      assert.match(lines[0], ID_RE, `echo "$ID" should print an id:\n${stdout}\n${stderr}`);
      const poll = JSON.parse(lines.find((l) => l.startsWith('{"messages"')));
      assert.deepEqual(poll.messages.map((m) => m.data), ['second']);
      assert.equal(poll.gap, false);
      const replay = stdout.slice(stdout.indexOf('retry:'));
      assert.match(replay, /^data: second$/m, `SSE resumed after $ID:\n${stdout}`);
      assert.doesNotMatch(replay, /^data: hello$/m);
    } finally {
      await h.stop();
    }
  });

  test('the WebSocket snippet runs on Node as written and resumes after the id given', async () => {
    const h = await startHerald();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-docs-'));
    let child;
    try {
      symlinkSync(path.join(ROOT, 'test', 'node_modules'), path.join(dir, 'node_modules'));
      const snippet = blockAfter('WebSocket, with any client', 'js')
        .replaceAll(`ws://${DEFAULT_ADDRESS}`, h.url.replace('http:', 'ws:'));
      writeFileSync(path.join(dir, 'subscribe.mjs'), snippet);
      const first = await publishOk(h.url, 'orders', 'before');
      await publishOk(h.url, 'orders', 'missed');
      child = spawn(process.execPath, ['subscribe.mjs', first.id], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const seen = (re) => withTimeout(new Promise((resolve) => {
        const check = () => { if (re.test(out)) resolve(); };
        child.stdout.setEncoding('utf8').on('data', (d) => { out += d; check(); });
        check();
      }), 5000, `${re} from the snippet; output so far:\n${out}`);
      await seen(/type: 'ack'[\s\S]*data: 'missed'/);
      assert.doesNotMatch(out, /data: 'before'/);
      await publishOk(h.url, 'orders', 'live');
      await seen(/data: 'live'/);
    } finally {
      child?.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
      await h.stop();
    }
  });

  test('the TLS example makes a certificate and config whose port the curl line uses', async () => {
    const block = blockAfter('self-signed certificate for 127.0.0.1', 'sh');
    const [setup, rest] = block.split(/^\.\/build\/herald .*$/m);
    const curlLine = rest.split('\n').find((l) => l.startsWith('curl '));
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-docs-'));
    let h;
    try {
      const made = await bash(setup, { cwd: dir });
      assert.equal(made.code, 0, made.stderr);
      const config = JSON.parse(readFileSync(path.join(dir, 'tls.json'), 'utf8'));
      const port = /:(\d+)$/.exec(config.listen[0])[1];
      assert.match(curlLine, new RegExp(`https://127\\.0\\.0\\.1:${port}/`), 'the curl line uses the configured port');
      config.tls.cert = path.join(dir, config.tls.cert);
      config.tls.key = path.join(dir, config.tls.key);
      h = await startHerald({ config });
      const r = await bash(curlLine.replace(`:${port}/`, `:${h.port}/`), { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'ok\n');
    } finally {
      await h?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
