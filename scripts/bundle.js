#!/usr/bin/env node
// Bundles the CLI that tsc has built (dist/cli/main.js and everything it imports, yargs and the AWS SDK included)
// into ESM chunks under dist/bundle/, which bin/vhdsync.js runs: one file per shared chunk instead of one per module
// and package file, so a command's start-up resolves, reads and links a few dozen files, not several hundred
// (docs/decisions/0033-bundled-cli.md). Code splitting keeps every dynamic import() lazy: each command, the S3 SDK
// and the hashing threads' modules load only when used. The library entry (dist/index.js) stays as tsc built it.
//
// The chunks sit at the depth of dist/*/ files, so `createRequire(import.meta.url)` paths such as
// '../../build/native/holes.node' and '../../package.json' resolve as they do from tsc's output. Native addons
// (xxhash-addon, @node-rs/crc32) stay outside: they are loaded by createRequire at run time, which esbuild leaves alone.
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.join(root, 'dist', 'bundle');

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('bundle: esbuild is not installed (a devDependency: run `npm ci`)');
  process.exit(1);
}

// Old chunks have other hashes in their names: a stale one would never be loaded, but would ship.
rmSync(outdir, { recursive: true, force: true });
await esbuild.build({
  absWorkingDir: root,
  entryPoints: { main: 'dist/cli/main.js' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // The SDK's ES module build (dist-es) over its CommonJS one: no require() shims in an ES module bundle.
  mainFields: ['module', 'main'],
  chunkNames: 'chunk-[hash]',
  logLevel: 'warning',
});
