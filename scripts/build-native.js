#!/usr/bin/env node
// Builds vhdsync's optional Node-API helpers with the system C compiler against Node's own headers:
//   native/holes.c    -> build/native/holes.node    (the hole map helper, docs/decisions/0024)
//   native/memory.c   -> build/native/memory.node   (large buffers as huge pages made present in one call, decision 0036)
//   native/xxh3subs.c -> build/native/xxh3subs.node (second-level sub-digests in one call, docs/decisions/0025),
//                        with xxhash-addon's copy of xxHash (and its runtime SIMD dispatch on x86)
//   native/xxh3blocks.c -> build/native/xxh3blocks.node (XXH128 blocks hashed from mapped files, decision 0027),
//                        with the same xxHash
// Run by `npm install`/`npm ci` (the package's install script) and by the tests' global setup. Optional: a helper
// that cannot be built (no compiler, no headers, another OS) is reported in one line, and vhdsync does without it
// (src/io/holes.ts, src/meta/hash-sync.ts); the script always exits 0. Up to date: does nothing.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

/** xxHash's sources as xxhash-addon ships them, or null when it is not installed. */
const xxhashDir = (() => {
  try {
    const dir = path.join(path.dirname(require.resolve('xxhash-addon/package.json')), 'xxHash');
    return existsSync(path.join(dir, 'xxhash.h')) ? dir : null;
  } catch {
    return null;
  }
})();
const x86 = process.arch === 'x64' || process.arch === 'ia32';

/** What a helper compiled with xxHash needs: its sources, and its runtime SIMD dispatch on x86. */
const withXxhash = {
  needs: xxhashDir ? null : "xxhash-addon's xxHash sources not found",
  sources: xxhashDir ? [path.join(xxhashDir, 'xxhash.c'), ...(x86 ? [path.join(xxhashDir, 'xxh_x86dispatch.c')] : [])] : [],
  flags: xxhashDir ? ['-I', xxhashDir, ...(x86 ? ['-DXXHASH_DISPATCH=1'] : [])] : [],
};

const helpers = [
  { name: 'holes', what: 'hole map helper', fallback: 'zero scans will read file holes', exported: 'nextData', sources: [], flags: [] },
  { name: 'memory', what: 'memory helper', fallback: 'large buffers are faulted in a page at a time', exported: 'populated', sources: [], flags: [] },
  {
    name: 'xxh3subs',
    what: 'sub-digest helper',
    fallback: 'sub-digests are hashed one call each',
    exported: 'xxh3Subs',
    ...withXxhash,
  },
  {
    name: 'xxh3blocks',
    what: 'block hasher',
    fallback: 'XXH128 blocks are read and hashed in JavaScript',
    exported: 'hashBlocks',
    ...withXxhash,
    // The one-pass block and sub-block digests (decision 0037), and its header.
    own: ['xxh3dual.c', 'xxh3dual.h'],
  },
];

// npm's configured nodedir first (node-gyp's headers), then the headers next to this node binary, then the system's.
const includes = [
  process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
  path.join(path.dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter((d) => d && existsSync(path.join(d, 'node_api.h')));

for (const h of helpers) build(h);

/** Builds one helper unless it is up to date; says in one line why not when it cannot. */
function build({ name, what, fallback, exported, needs, sources, flags, own = [] }) {
  const src = path.join(root, 'native', `${name}.c`);
  const out = path.join(root, 'build', 'native', `${name}.node`);
  const skip = (why) => console.error(`vhdsync: the optional ${what} was not built (${why}); ${fallback}`);
  const mine = own.map((f) => path.join(root, 'native', f));
  if (existsSync(out) && [src, ...mine].every((f) => statSync(out).mtimeMs >= statSync(f).mtimeMs)) return;
  if (process.platform !== 'linux' && process.platform !== 'darwin') return skip(`not built on ${process.platform}`);
  if (includes.length === 0) return skip("Node's headers (node_api.h) not found");
  if (needs) return skip(needs);
  mkdirSync(path.dirname(out), { recursive: true });
  const tmp = path.join(path.dirname(out), `${name}.${process.pid}.tmp.node`);
  const cc = process.env.CC || 'cc';
  const linkFlags = process.platform === 'darwin' ? ['-bundle', '-undefined', 'dynamic_lookup'] : ['-shared'];
  const r = spawnSync(cc, ['-O2', '-fPIC', '-Wall', '-I', includes[0], ...flags, ...linkFlags, '-o', tmp, src, ...mine.filter((f) => f.endsWith('.c')), ...sources], {
    encoding: 'utf8',
  });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    return skip(r.error ? `${cc}: ${r.error.message}` : `${cc} failed: ${(r.stderr || '').trim().split('\n')[0]}`);
  }
  try {
    if (typeof require(tmp)[exported] !== 'function') throw new Error(`no ${exported} export`);
  } catch (err) {
    rmSync(tmp, { force: true });
    return skip(`it does not load: ${err.message.split('\n')[0]}`);
  }
  renameSync(tmp, out);
}
