// The package as users get it: `npm pack` gives a tarball that installs
// and loads from both ESM and CommonJS, and the browser bundle stays small.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { REPO } from './support/processes.mjs';

const PACKAGE = join(REPO, 'clients/js');
let scratch;

before(() => {
  scratch = mkdtempSync(join(tmpdir(), 'topicgate-js-pack-'));
});

after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

test('npm pack gives a tarball that installs and loads as ESM and CommonJS', () => {
  // dist/ is already built by `npm test`'s build step.
  const [packed] = JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', scratch], PACKAGE));
  const files = packed.files.map((f) => f.path).sort();
  for (const needed of ['dist/index.mjs', 'dist/index.cjs', 'dist/index.d.ts', 'dist/topicgate-client.min.js', 'package.json']) {
    assert.ok(files.includes(needed), `${needed} in ${files}`);
  }
  assert.ok(!files.some((f) => f.startsWith('src/') || f.startsWith('test/')), `${files}`);
  const manifest = JSON.parse(readFileSync(join(PACKAGE, 'package.json'), 'utf8'));
  assert.equal(manifest.dependencies, undefined, 'no runtime dependencies');

  const app = join(scratch, 'app');
  execFileSync('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), '{"name":"app","private":true}');
  npm(['install', '--no-audit', '--no-fund', '--offline', join(scratch, packed.filename)], app);
  const probe = "typeof m.TopicgateClient + ' ' + typeof m.TopicgateError + ' ' + new m.TopicgateError('forbidden', 'x').code";
  const esm = execFileSync(process.execPath, ['--input-type=module', '-e', `import * as m from 'topicgate-client'; console.log(${probe})`], { cwd: app, encoding: 'utf8' });
  const cjs = execFileSync(process.execPath, ['-e', `const m = require('topicgate-client'); console.log(${probe})`], { cwd: app, encoding: 'utf8' });
  assert.equal(esm.trim(), 'function function forbidden');
  assert.equal(cjs.trim(), 'function function forbidden');
});

test('the minified browser bundle is at most 5 KB gzipped', () => {
  const gzipped = gzipSync(readFileSync(join(PACKAGE, 'dist/topicgate-client.min.js')), { level: 9 }).length;
  assert.ok(gzipped <= 5 * 1024, `${gzipped} bytes`);
});
