#!/usr/bin/env node
// Drives the VHDX crash test's writer (test/crash/vhdx-writer.mjs) through many SIGKILLs and counts torn sectors:
// 512-byte sectors of the write in flight that are neither entirely old nor entirely new. The jest test stops at the
// first one; this loop keeps going, so a rare failure gets a rate.
//
//   npm run build && node scripts/vhdx-crash-loop.mjs [--kills 500] [--dist dist] [--qemu] [--seed 1]
//
// --qemu also runs `qemu-img check` and compares qemu's reading of a copy after each kill (slower).
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { applyWrite, runWriter, tornSectors } from '../test/crash/vhdx-writer-run.mjs';

const { values: opt } = parseArgs({
  options: {
    kills: { type: 'string', default: '500' },
    dist: { type: 'string', default: 'dist' },
    qemu: { type: 'boolean', default: false },
    seed: { type: 'string', default: '1' },
  },
});
const KILLS = Number(opt.kills);
const dist = path.resolve(opt.dist);
const { openDisk, createDisk } = await import(pathToFileURL(path.join(dist, 'formats/index.js')).href);

const MiB = 1 << 20;
const SIZE = 16 * MiB;
let s = Number(opt.seed) >>> 0;
const rand = () => {
  s = (s * 1664525 + 1013904223) >>> 0;
  return s / 2 ** 32;
};

const tmp = mkdtempSync(path.join(tmpdir(), 'vhdx-crash-loop-'));
const image = path.join(tmp, 'crash.vhdx');
const stats = { kills: 0, inFlight: 0, dirty: 0, tornSectors: 0, tornKills: 0, lost: 0, qemuBad: 0 };
const tornAt = [];
try {
  let model = Buffer.alloc(SIZE);
  let next = 0;
  for (let k = 0; k < KILLS; k++) {
    // A fresh image now and then, so kills also land in the first allocations of an empty image.
    if (k % 50 === 0) {
      rmSync(image, { force: true });
      await (await createDisk(image, { format: 'vhdx', type: 'dynamic', virtualSize: SIZE, blockSize: MiB })).close();
      model = Buffer.alloc(SIZE);
    }
    const res = await runWriter(dist, image, next, 1000 + k, Math.floor(rand() * 60), rand() < 0.75);
    stats.kills++;
    const disk = await openDisk(image);
    if (String((await disk.info()).logState).startsWith('replayed')) stats.dirty++;
    const content = await disk.read(0, SIZE);
    await disk.close();
    const expected = Buffer.from(model);
    for (const w of res.done) applyWrite(expected, w);
    const newer = Buffer.from(expected);
    if (res.inFlight) {
      stats.inFlight++;
      applyWrite(newer, res.inFlight);
    }
    const bad = tornSectors(content, expected, newer);
    // A bad sector outside the write in flight is not torn but a lost or misplaced write.
    const f = res.inFlight;
    const lost = bad.filter((p) => !f || p < f.off - 511 || p >= f.off + f.len).length;
    const torn = bad.length - lost;
    stats.lost += lost;
    if (torn) {
      stats.tornKills++;
      stats.tornSectors += torn;
      tornAt.push(`kill ${k}: ${torn} sector(s), in flight: ${f ? `${f.zero ? 'zero' : 'data'} ${f.off}+${f.len}` : 'none'}`);
    }
    if (opt.qemu) {
      const copy = path.join(tmp, 'copy.vhdx');
      copyFileSync(image, copy);
      const check = spawnSync('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', copy], { encoding: 'utf8' });
      const conv = check.status === 0 && spawnSync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', copy, copy + '.raw']).status === 0;
      if (!conv || !readFileSync(copy + '.raw').equals(content)) stats.qemuBad++;
      rmSync(copy + '.raw', { force: true });
    }
    model = content;
    next += res.done.length + (res.inFlight ? 1 : 0);
    if ((k + 1) % 50 === 0) console.error(`${k + 1} kills: ${JSON.stringify(stats)}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
for (const t of tornAt) console.log(t);
console.log(JSON.stringify(stats));
process.exitCode = stats.tornSectors || stats.lost || stats.qemuBad ? 1 : 0;
