#!/usr/bin/env node
// Builds native/holes.c (the hole map helper, docs/decisions/0024) into build/native/holes.node with the system C
// compiler against Node's own headers. Run by `npm install`/`npm ci` (the package's install script) and by the
// tests' global setup. Optional: when it cannot be built (no compiler, no headers, another OS), it says so in one
// line and exits 0, and vhdsync reads file holes as it did before (src/io/holes.ts). Up to date: does nothing.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'native', 'holes.c');
const out = path.join(root, 'build', 'native', 'holes.node');

const skip = (why) => {
  console.error(`vhdsync: the optional hole map helper was not built (${why}); zero scans will read file holes`);
  process.exit(0);
};

if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) process.exit(0);
if (process.platform !== 'linux' && process.platform !== 'darwin') skip(`not built on ${process.platform}`);

// npm's configured nodedir first (node-gyp's headers), then the headers next to this node binary, then the system's.
const includes = [
  process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
  path.join(path.dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter((d) => d && existsSync(path.join(d, 'node_api.h')));
if (includes.length === 0) skip("Node's headers (node_api.h) not found");

mkdirSync(path.dirname(out), { recursive: true });
const tmp = path.join(path.dirname(out), `holes.${process.pid}.tmp.node`);
const cc = process.env.CC || 'cc';
const linkFlags = process.platform === 'darwin' ? ['-bundle', '-undefined', 'dynamic_lookup'] : ['-shared'];
const r = spawnSync(cc, ['-O2', '-fPIC', '-Wall', '-I', includes[0], ...linkFlags, '-o', tmp, src], { encoding: 'utf8' });
if (r.error || r.status !== 0) {
  rmSync(tmp, { force: true });
  skip(r.error ? `${cc}: ${r.error.message}` : `${cc} failed: ${(r.stderr || '').trim().split('\n')[0]}`);
}
try {
  if (typeof createRequire(import.meta.url)(tmp).nextData !== 'function') throw new Error('no nextData export');
} catch (err) {
  rmSync(tmp, { force: true });
  skip(`it does not load: ${err.message.split('\n')[0]}`);
}
renameSync(tmp, out);
