// examples/typescript/subscribe.ts: it type-checks against the package's
// declarations, and, bundled, runs against the real gateway and Redis.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { build } from 'esbuild';
import { Queue, within } from './support/queue.mjs';
import { Gateway, REPO, RedisServer, signToken } from './support/processes.mjs';

const PACKAGE = join(REPO, 'clients/js');
const EXAMPLE = join(REPO, 'examples/typescript/subscribe.ts');
let scratch;

before(() => {
  scratch = mkdtempSync(join(tmpdir(), 'topicgate-js-example-'));
});

after(() => {
  rmSync(scratch, { recursive: true, force: true });
});

test('the TypeScript example type-checks against the published declarations', () => {
  const config = join(scratch, 'tsconfig.json');
  writeFileSync(
    config,
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'ES2022',
        moduleResolution: 'bundler',
        strict: true,
        noEmit: true,
        types: ['node'],
        typeRoots: [join(PACKAGE, 'node_modules/@types')],
        paths: {
          'topicgate-client': [join(PACKAGE, 'dist/index.d.ts')],
          ws: [join(PACKAGE, 'node_modules/@types/ws/index.d.ts')],
        },
      },
      files: [EXAMPLE],
    }),
  );
  execFileSync(process.execPath, [join(PACKAGE, 'node_modules/typescript/bin/tsc'), '-p', config], {
    stdio: 'pipe',
  });
});

test('the TypeScript example prints what Redis publishes', async (t) => {
  const redis = await RedisServer.start();
  t.after(() => redis.stop());
  const gateway = await Gateway.start(redis, '[[acl.rules]]\ntopics = ["chat-*"]\neffect = "allow"\n');
  t.after(() => gateway.cleanup());
  // Bundled inside the package's node_modules, so `ws` resolves from there.
  const bundle = join(PACKAGE, 'node_modules/.cache/topicgate-example/subscribe.mjs');
  await build({
    entryPoints: [EXAMPLE],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['ws'],
    alias: { 'topicgate-client': join(PACKAGE, 'dist/index.mjs') },
    outfile: bundle,
    logLevel: 'warning',
  });
  const child = spawn(process.execPath, [bundle, 'chat-example'], {
    env: { ...process.env, TOPICGATE_URL: gateway.url, TOPICGATE_TOKEN: signToken({ sub: 'example' }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  t.after(() => child.kill('SIGKILL'));
  const stdout = new Queue();
  const stderr = new Queue();
  createInterface({ input: child.stdout }).on('line', (line) => stdout.push(line));
  createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line));
  const log = [];
  for (;;) {
    const line = await stderr.next('the example to subscribe');
    log.push(line);
    if (line === 'subscribed: chat-example') break;
  }
  assert.deepEqual(log, ['state: connecting', 'state: connected', 'subscribed: chat-example']);
  await redis.command('PUBLISH', 'chat-example', '{"n":1}');
  assert.deepEqual(JSON.parse(await stdout.next('the printed message')), { topic: 'chat-example', data: { n: 1 } });
  child.kill('SIGINT');
  assert.equal(await within(exited, 'the example to exit'), 0);
});
