/**
 * Property tests: random writes (and zeroings) of random lengths at random offsets into dynamic and
 * differencing VHDs, compared after every step with an in-memory model, then reopened and compared.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import type { Disk, Extent } from '../../../src/formats/index.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { makeVhd, open, pattern } from './vhd-test-utils.js';

const BLOCK = 64 * 1024;
/** Not a whole number of blocks, so the last block is partial. */
const SIZE = 3 * BLOCK + 5 * 512;

type Op = { kind: 'write'; offset: number; length: number; seed: number } | { kind: 'zero'; offset: number; length: number } | { kind: 'flush' };

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.oneof(fc.integer({ min: 1, max: 1100 }), fc.integer({ min: 1, max: 2 * BLOCK })))
  .map(([offset, length]) => ({ offset, length: Math.min(length, SIZE - offset) }));
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(range, fc.nat()).map(([r, seed]) => ({ kind: 'write' as const, ...r, seed })) },
  { weight: 2, arbitrary: range.map((r) => ({ kind: 'zero' as const, ...r })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
);

/** Extents must tile the range, and whatever they call unallocated must read as zeros. */
function checkStatus(extents: Extent[], model: Buffer): void {
  let at = 0;
  for (const e of extents) {
    expect(e.offset).toBe(at);
    if (e.state !== 'data') expect(model.subarray(e.offset, e.offset + e.length).every((x) => x === 0)).toBe(true);
    at += e.length;
  }
  expect(at).toBe(model.length);
}

describe('VHD writes match an in-memory model', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhd-prop-')));
  afterAll(() => tmp.cleanup());
  let n = 0;

  /** Runs the ops against `disk` and `model`, checks, reopens `file` and checks again. */
  async function exercise(disk: Disk, file: string, model: Buffer, ops: Op[]): Promise<void> {
    for (const o of ops) {
      if (o.kind === 'write') {
        const data = pattern(o.length, o.seed + 1);
        await disk.write(o.offset, data);
        data.copy(model, o.offset);
      } else if (o.kind === 'zero') {
        await disk.writeZeroes(o.offset, o.length);
        model.fill(0, o.offset, o.offset + o.length);
      } else await disk.flush();
      expect((await disk.read(0, SIZE)).equals(model)).toBe(true);
    }
    checkStatus(await disk.status(0, SIZE), model);
    await disk.close();
    const again = await open(file);
    expect((await again.read(0, SIZE)).equals(model)).toBe(true);
    // Reads that start and end anywhere agree too.
    const off = ops.length ? (ops[0] as { offset?: number }).offset ?? 0 : 0;
    expect((await again.read(off, SIZE - off)).equals(model.subarray(off))).toBe(true);
    checkStatus(await again.status(0, SIZE), model);
    await again.close();
  }

  it('dynamic', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const file = path.join(tmp.dir, `dyn${n++}.vhd`);
        const disk = await makeVhd(file, { type: 'dynamic', virtualSize: SIZE, blockSize: BLOCK });
        await exercise(disk, file, Buffer.alloc(SIZE), ops);
        fs.unlinkSync(file);
      }),
      { numRuns: 40 },
    );
  });

  it('differencing on a raw parent', async () => {
    const base = path.join(tmp.dir, 'base.raw');
    fs.writeFileSync(base, pattern(SIZE, 77));
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const file = path.join(tmp.dir, `diffraw${n++}.vhd`);
        const disk = await makeVhd(file, { type: 'differencing', parent: await open(base), blockSize: BLOCK });
        await exercise(disk, file, pattern(SIZE, 77), ops);
        fs.unlinkSync(file);
      }),
      { numRuns: 40 },
    );
  });

  it('differencing on a VHD chain (dynamic parent with holes, then a differencing middle layer)', async () => {
    const base = path.join(tmp.dir, 'base.vhd');
    const baseModel = Buffer.alloc(SIZE);
    const b = await makeVhd(base, { type: 'dynamic', virtualSize: SIZE, blockSize: BLOCK });
    await b.write(1000, pattern(BLOCK, 5));
    pattern(BLOCK, 5).copy(baseModel, 1000);
    await b.write(SIZE - 700, pattern(700, 6));
    pattern(700, 6).copy(baseModel, SIZE - 700);
    await b.close();
    const mid = path.join(tmp.dir, 'mid.vhd');
    const m = await makeVhd(mid, { type: 'differencing', parent: await open(base), blockSize: 2 * BLOCK });
    await m.write(2 * BLOCK + 3, pattern(3000, 8));
    pattern(3000, 8).copy(baseModel, 2 * BLOCK + 3);
    await m.close();
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const file = path.join(tmp.dir, `diffvhd${n++}.vhd`);
        const disk = await makeVhd(file, { type: 'differencing', parent: await open(mid), blockSize: BLOCK });
        await exercise(disk, file, Buffer.from(baseModel), ops);
        fs.unlinkSync(file);
      }),
      { numRuns: 40 },
    );
  });
});
