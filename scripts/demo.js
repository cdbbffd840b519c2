#!/usr/bin/env node
// The README's first command: builds small sample images under samples/ and runs the main workflow on them,
// printing each vhdsync command as a user would type it, and its output.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, openSync, writeSync, closeSync, ftruncateSync, existsSync } from 'node:fs';
import { randomBytes, createHash } from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin', 'vhdsync.js');
const dir = path.join(root, 'samples', 'work');
const MiB = 1 << 20;
const SIZE = 64 * MiB;

/** Runs one vhdsync command, echoing it; exits the demo on failure. */
function vhdsync(...args) {
  console.log(`\n$ vhdsync ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}`);
  try {
    const outText = execFileSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    process.stdout.write(outText.replace(/^/gm, '  '));
    return outText;
  } catch (err) {
    console.error(`demo: 'vhdsync ${args.join(' ')}' failed with exit code ${err.status}`);
    process.exit(1);
  }
}

/** Writes a sparse raw image with a few patterned runs of data. */
function makeRaw(file, runs) {
  const fd = openSync(file, 'w');
  ftruncateSync(fd, SIZE);
  for (const [off, len] of runs) writeSync(fd, randomBytes(len), 0, len, off);
  closeSync(fd);
}

function sha256Of(file) {
  return createHash('sha256').update(execFileSync('cat', [file], { maxBuffer: 1 << 30 })).digest('hex').slice(0, 16);
}

if (!existsSync(path.join(root, 'dist', 'cli', 'main.js'))) {
  console.error('demo: dist/ is missing; run `npm ci` (or `npm run build`) first');
  process.exit(1);
}
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
console.log(`vhdsync demo: sample images in ${path.relative(process.cwd(), dir) || dir}`);

/** Overwrites a few runs of an existing raw image with new random data (what a running VM does). */
function changeRaw(file, runs) {
  const fd = openSync(file, 'r+');
  for (const [off, len] of runs) writeSync(fd, randomBytes(len), 0, len, off);
  closeSync(fd);
}

function same(a, b) {
  return sha256Of(path.join(dir, a)) === sha256Of(path.join(dir, b));
}

// 1. A VM disk and its backup copy on "the other server", both VHDX.
makeRaw(path.join(dir, 'vm.raw'), [[0, 4 * MiB], [20 * MiB, 3 * MiB], [63 * MiB, MiB]]);
vhdsync('convert', 'vm.raw', 'source.vhdx');
vhdsync('convert', 'vm.raw', 'target.vhdx');
vhdsync('info', 'target.vhdx');

// 2. Hash both once; they agree.
vhdsync('createmeta', 'source.vhdx', 'target.vhdx');
vhdsync('check', 'source.vhdx', 'target.vhdx');

// 3. The VM runs for a day: a few scattered changes, and a new source image with them.
console.log('\n# the VM changes 3 scattered runs (1.2 MiB) of its 64 MiB disk');
changeRaw(path.join(dir, 'vm.raw'), [[1 * MiB + 4096, 64 * 1024], [30 * MiB, MiB], [50 * MiB + 512, 100 * 1024]]);
rmSync(path.join(dir, 'source.vhdx'));
rmSync(path.join(dir, 'source.vhdx.blocklist.bin'));
vhdsync('convert', 'vm.raw', 'source.vhdx');

// 4. The incremental backup: one pass hashes the source, ships only what changed, then the far side merges.
vhdsync('copy', '--createmeta', 'source.vhdx', 'target.vhdx');
vhdsync('info', 'target_diff.vhdx');
vhdsync('merge', 'target_diff.vhdx');
vhdsync('check', 'source.vhdx', 'target.vhdx');

// 5. Proof: the backup now holds exactly the VM's disk.
vhdsync('convert', 'target.vhdx', 'restored.raw');
const ok = same('vm.raw', 'restored.raw');
console.log(`\nbackup restored to raw equals the VM's disk: ${ok ? 'yes' : 'NO'}`);
if (!ok) process.exit(1);

// The disk-image tools around the workflow.
vhdsync('convert', 'target.vhdx', 'target.vhd');
vhdsync('get', 'target.vhd', 'virtual-size');
console.log('\ndemo finished');
