// Builds dist/: ESM and CommonJS bundles, a minified ESM bundle for
// browsers (examples/browser/index.html loads it), and the .d.ts files.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

rmSync('dist', { recursive: true, force: true });
const common = { entryPoints: ['src/index.ts'], bundle: true, target: 'es2020', logLevel: 'warning' };
await Promise.all([
  build({ ...common, format: 'esm', outfile: 'dist/index.mjs' }),
  build({ ...common, format: 'cjs', platform: 'node', outfile: 'dist/index.cjs' }),
  build({ ...common, format: 'esm', minify: true, outfile: 'dist/topicgate-client.min.js' }),
]);
// Type-checks the sources and writes the declarations.
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], {
  stdio: 'inherit',
});
const min = readFileSync('dist/topicgate-client.min.js');
const gzipped = gzipSync(min, { level: 9 }).length;
console.log(`dist/topicgate-client.min.js: ${min.length} bytes, ${gzipped} bytes gzipped`);
