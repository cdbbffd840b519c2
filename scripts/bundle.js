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
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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

// The build goes to a staging folder and is moved in file by file, the entry last: a CLI started while this runs
// (a test beside a rebuild) loads the previous build or this one whole, never an entry whose chunks are missing.
const staging = path.join(root, 'dist', `.bundle-${process.pid}`);
rmSync(staging, { recursive: true, force: true });
try {
  await esbuild.build({
    absWorkingDir: root,
    entryPoints: { main: 'dist/cli/main.js' },
    outdir: staging,
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
} catch (err) {
  rmSync(staging, { recursive: true, force: true });
  throw err;
}

// Chunk names carry their content's hash, so a name already in place holds the same bytes and renaming over it is
// harmless; main.js is replaced last.
const fresh = readdirSync(staging);
mkdirSync(outdir, { recursive: true });
for (const f of fresh.filter((f) => f !== 'main.js')) renameSync(path.join(staging, f), path.join(outdir, f));
renameSync(path.join(staging, 'main.js'), path.join(outdir, 'main.js'));
rmSync(staging, { recursive: true, force: true });

// Chunks of older builds would never be loaded, but would ship. Those of the build just replaced stay until the
// next build: a process started from its entry may still import one lazily (a command, the S3 SDK).
const manifest = path.join(outdir, '.files');
let previous = [];
try {
  previous = readFileSync(manifest, 'utf8').split('\n').filter(Boolean);
} catch {
  // first build into this folder
}
const keep = new Set([...fresh, ...previous, '.files']);
for (const f of readdirSync(outdir)) if (!keep.has(f)) rmSync(path.join(outdir, f), { force: true });
writeFileSync(manifest, fresh.join('\n') + '\n');
