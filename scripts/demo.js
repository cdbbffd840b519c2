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

makeRaw(path.join(dir, 'disk.raw'), [[0, 4 * MiB], [20 * MiB, 3 * MiB], [63 * MiB, MiB]]);
vhdsync('info', 'disk.raw');
vhdsync('convert', 'disk.raw', 'disk.vhd');
vhdsync('convert', 'disk.raw', 'disk.vhdx');
vhdsync('info', 'disk.vhdx');
vhdsync('get', 'disk.vhd', 'virtual-size');
vhdsync('convert', 'disk.vhdx', 'roundtrip.raw');
const same = sha256Of(path.join(dir, 'disk.raw')) === sha256Of(path.join(dir, 'roundtrip.raw'));
console.log(`\nraw -> VHDX -> raw round trip: ${same ? 'identical' : 'DIFFERENT'}`);
if (!same) process.exit(1);
console.log('\ndemo finished');
