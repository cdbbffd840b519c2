/** Random writes into dynamic and differencing VHDX against an in-memory model, across flushes and reopens. */
import { jest } from '@jest/globals';
import fc from 'fast-check';
import * as path from 'node:path';
import { openDisk, createDisk } from '../../../src/formats/index.js';
import type { Disk, Extent } from '../../../src/formats/disk.js';
import { pushExtent } from '../../../src/formats/ranges.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;
const tmp = makeTempDir('vhdx-prop-');
afterAll(() => tmp.cleanup());
let n = 0;

type Op = { kind: 'write'; off: number; len: number; seed: number } | { kind: 'zero'; off: number; len: number } | { kind: 'flush' } | { kind: 'reopen' };

const opArb = (size: number): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('write' as const), off: fc.integer({ min: 0, max: size - 1 }), len: fc.oneof(fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 2 * MiB + 700 })), seed: fc.integer({ min: 1, max: 250 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), off: fc.integer({ min: 0, max: size - 1 }), len: fc.integer({ min: 1, max: 3 * MiB }) }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  );

function data(seed: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (seed + i * 13 + (i >> 8)) & 255;
  return b;
}

/** Applies ops to the disk and the model, reopening when asked; returns the disk (maybe reopened). */
async function run(disk: Disk, file: string, model: Buffer, ops: Op[]): Promise<Disk> {
  for (const op of ops) {
    if (op.kind === 'flush') await disk.flush();
    else if (op.kind === 'reopen') {
      await disk.close();
      disk = await openDisk(file, { writable: true });
    } else {
      const len = Math.min(op.len, model.length - op.off);
      if (op.kind === 'write') {
        const d = data(op.seed, len);
        await disk.write(op.off, d);
        d.copy(model, op.off);
      } else {
        await disk.writeZeroes(op.off, len);
        model.fill(0, op.off, op.off + len);
      }
    }
  }
  return disk;
}

/** Content equals the model, and status never calls a non-zero range zero or unallocated. */
async function check(disk: Disk, model: Buffer): Promise<void> {
  expect((await disk.read(0, disk.virtualSize)).equals(model)).toBe(true);
  const st = await disk.status(0, disk.virtualSize);
  expect(st.reduce((a, e) => a + e.length, 0)).toBe(disk.virtualSize);
  for (const e of st) {
    if (e.state !== 'data') expect(model.subarray(e.offset, e.offset + e.length).every((b) => b === 0)).toBe(true);
  }
}

/**
 * A child's status, whole and in a window: what it leaves to its parent is exactly the parent's own status one level
 * deeper, and the window's answer is the whole answer cut to the window (the child asks its parent once per run).
 */
async function checkLayers(child: Disk, parentFile: string, window: [number, number]): Promise<void> {
  const whole = await child.status(0, child.virtualSize);
  const parent = await openDisk(parentFile);
  try {
    for (const e of whole.filter((x) => x.depth > 0)) {
      expect(await parent.status(e.offset, e.length)).toEqual([{ offset: e.offset, length: e.length, state: e.state, depth: e.depth - 1 }]);
    }
  } finally {
    await parent.close();
  }
  const from = Math.min(window[0], window[1]);
  const to = Math.max(window[0], window[1]) + 1;
  const cut: Extent[] = [];
  for (const e of whole) {
    const a = Math.max(from, e.offset);
    const b = Math.min(to, e.offset + e.length);
    if (b > a) cut.push({ ...e, offset: a, length: b - a });
  }
  expect(await child.status(from, to - from)).toEqual(cut);
  // ownOnly (merge): depth 0 as in the full answer, each run left to the parent one depth-1 placeholder, and the
  // parent never asked.
  const asked = jest.spyOn(child.parent!, 'status');
  try {
    expect(await child.status(0, child.virtualSize, { ownOnly: true })).toEqual(ownView(whole));
    expect(await child.status(from, to - from, { ownOnly: true })).toEqual(ownView(cut));
    expect(asked).not.toHaveBeenCalled();
  } finally {
    asked.mockRestore();
  }
}

/** A full status answer as an ownOnly one reads: what lies deeper than depth 0 becomes depth-1 `unallocated` runs. */
function ownView(full: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of full) pushExtent(out, e.depth === 0 ? e : { offset: e.offset, length: e.length, state: 'unallocated', depth: 1 });
  return out;
}

test('dynamic VHDX (512 and 4096-byte sectors) behaves like a flat buffer', async () => {
  const size = 6 * MiB + 3 * 4096;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(512, 4096), fc.array(opArb(size), { minLength: 1, maxLength: 14 }), async (lss, ops) => {
      const file = path.join(tmp.dir, `dyn-${n++}.vhdx`);
      const model = Buffer.alloc(size);
      let disk: Disk = await createDisk(file, { format: 'vhdx', type: 'dynamic', virtualSize: size, blockSize: MiB, logicalSectorSize: lss });
      disk = await run(disk, file, model, ops);
      await check(disk, model);
      await disk.close();
      const ro = await openDisk(file);
      await check(ro, model);
      await ro.close();
    }),
    { numRuns: 15 },
  );
});

test('differencing VHDX over a dynamic parent behaves like parent content plus writes', async () => {
  const size = 5 * MiB + 512 * 7;
  const window = fc.tuple(fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 0, max: size - 1 }));
  await fc.assert(
    fc.asyncProperty(fc.array(opArb(size), { minLength: 1, maxLength: 12 }), fc.integer({ min: 1, max: 200 }), window, async (ops, parentSeed, win) => {
      const parentFile = path.join(tmp.dir, `base-${n}.vhdx`);
      const childFile = path.join(tmp.dir, `child-${n++}.avhdx`);
      const model = Buffer.alloc(size);
      const parent = await createDisk(parentFile, { format: 'vhdx', type: 'dynamic', virtualSize: size, blockSize: MiB });
      // The parent has data in some blocks, zeros in others, and nothing in the rest.
      const pd = data(parentSeed, 2 * MiB + 1000);
      await parent.write(MiB - 500, pd);
      pd.copy(model, MiB - 500);
      await parent.write(4 * MiB, data(parentSeed + 1, 4096));
      data(parentSeed + 1, 4096).copy(model, 4 * MiB);
      await parent.close();
      let child: Disk = await createDisk(childFile, { format: 'vhdx', type: 'differencing', parent: await openDisk(parentFile), blockSize: MiB });
      child = await run(child, childFile, model, ops);
      await check(child, model);
      await checkLayers(child, parentFile, win);
      await child.close();
      const ro = await openDisk(childFile);
      expect(ro.parent?.location.path).toBe(parentFile);
      await check(ro, model);
      await ro.close();
    }),
    { numRuns: 15 },
  );
});

test('concurrent non-overlapping writes and reads (as a parallel copy engine issues them) land exactly', async () => {
  const size = 8 * MiB;
  const parentFile = path.join(tmp.dir, `cbase-${n}.vhdx`);
  const childFile = path.join(tmp.dir, `cchild-${n++}.avhdx`);
  const parent = await createDisk(parentFile, { format: 'vhdx', type: 'dynamic', virtualSize: size, blockSize: MiB });
  await parent.write(0, data(3, size));
  await parent.close();
  const model = data(3, size);
  const child = await createDisk(childFile, { format: 'vhdx', type: 'differencing', parent: await openDisk(parentFile), blockSize: MiB });
  // 64 slots of 128 KiB; each write covers part of its slot, so writes share blocks and bitmap sectors but not bytes.
  const slot = 128 * 1024;
  const jobs: Array<Promise<unknown>> = [];
  for (let i = 0; i < 64; i++) {
    const off = i * slot + ((i * 997) % 4000);
    const len = 1000 + ((i * 7919) % (slot - 5000));
    // The ranges do not overlap, so the model may take each change at once, whatever order the disk applies them in.
    if (i % 5 === 4) {
      model.fill(0, off, off + len);
      jobs.push(child.writeZeroes(off, len));
    } else {
      const d = data(i + 11, len);
      d.copy(model, off);
      jobs.push(child.write(off, d));
    }
    jobs.push(child.read(((i * 31) % 60) * slot, slot));
  }
  await Promise.all(jobs);
  await check(child, model);
  await child.close();
  const ro = await openDisk(childFile);
  await check(ro, model);
  await ro.close();
});
