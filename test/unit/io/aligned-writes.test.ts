/**
 * The local store issues every pwrite from page-aligned, touched memory in the file position's page phase
 * (decision 0009): a kill mid-write then cuts the file only at 4 KiB boundaries. The pwrites are observed on
 * FileHandle.prototype.write, below our code.
 */
import fs, { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { jest } from '@jest/globals';
import fc from 'fast-check';
import { localStore } from '../../../src/io/local.js';
import { PAGE, ZERO_RUN, allocAligned, allocShared, directSource, sizedRing, zeros } from '../../../src/util/aligned.js';
import { makeTempDir } from '../../helpers/tmp.js';

const SPAN = 3 << 20;

/** The FileHandle class's prototype, whose write() every LocalFile write ends in. */
async function fileHandleProto(dir: string): Promise<{ write: (...a: unknown[]) => unknown }> {
  const fh = await fsp.open(path.join(dir, 'probe'), 'w');
  await fh.close();
  return Object.getPrototypeOf(fh);
}

type Kind = 'plain' | 'aligned' | 'shared' | 'zeros';

/** A caller's buffer of `kind` holding `length` bytes at `skew` bytes into its memory. */
function callerBuffer(kind: Kind, length: number, skew: number, fill: number): Buffer {
  if (kind === 'zeros') return zeros(length);
  const mem = kind === 'plain' ? Buffer.alloc(length + skew) : kind === 'aligned' ? allocAligned(length + skew) : allocShared(length + skew);
  const b = mem.subarray(skew, skew + length);
  for (let i = 0; i < b.length; i++) b[i] = (fill + i * 7 + (i >> 12)) & 255;
  return b;
}

describe('local store writes', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it('issue every pwrite from aligned, touched memory in the position phase, and write the caller bytes', async () => {
    const proto = await fileHandleProto(tmp.dir);
    const spy = jest.spyOn(proto, 'write');
    const file = await localStore.createExclusive(path.join(tmp.dir, 'img'));
    const model = Buffer.alloc(SPAN);
    try {
      const write = fc.record({
        kind: fc.constantFrom<Kind>('plain', 'aligned', 'shared', 'zeros'),
        // Mostly sector-aligned, as the drivers write, plus any byte position.
        position: fc.oneof(fc.nat(SPAN / 512 - 1).map((s) => s * 512), fc.nat(SPAN - 1)),
        length: fc.oneof(fc.integer({ min: 1, max: 70000 }), fc.integer({ min: 1, max: (ZERO_RUN * 5) / 2 })),
        skew: fc.oneof(fc.constant(0), fc.nat(PAGE * 2)),
        fill: fc.nat(255),
      });
      await fc.assert(
        fc.asyncProperty(fc.array(write, { minLength: 1, maxLength: 4 }), async (writes) => {
          spy.mockClear();
          // Several in flight at once share the bounce buffers; keep them disjoint so the model is order-free.
          const ws = writes.map((w, i) => ({ ...w, position: (w.position + i * (SPAN / 4)) % SPAN })).sort((a, b) => a.position - b.position);
          const jobs: Array<Promise<void>> = [];
          let end = 0;
          for (const w of ws) {
            const position = Math.max(w.position, end);
            const length = Math.min(w.length, SPAN - position);
            if (length <= 0) continue;
            const data = callerBuffer(w.kind, length, w.skew, w.fill);
            data.copy(model, position);
            end = position + length;
            jobs.push(file.write(position, data));
          }
          await Promise.all(jobs);
          for (const [buf, offset, length, position] of spy.mock.calls as Array<[Uint8Array, number, number, number]>) {
            const src = buf.subarray(offset, offset + length);
            expect(directSource(src, position)).toBe(src);
          }
        }),
        { numRuns: 60 },
      );
      await file.flush();
      expect((await file.read(0, SPAN)).equals(model)).toBe(true);
      // The shared zero run is read-only: nothing above may have written into it.
      expect(zeros(ZERO_RUN).every((b) => b === 0)).toBe(true);
    } finally {
      spy.mockRestore();
      await file.close();
    }
  });

  it('never writes from a caller buffer that is not page aligned', async () => {
    const proto = await fileHandleProto(tmp.dir);
    const spy = jest.spyOn(proto, 'write');
    const file = await localStore.createExclusive(path.join(tmp.dir, 'plain'));
    try {
      // Buffer.alloc of this size is fresh calloc memory: 16 bytes past a page boundary and untouched.
      const data = Buffer.alloc(2 << 20, 0x5a);
      await file.write(512, data);
      expect(spy.mock.calls.length).toBeGreaterThan(0);
      for (const [buf] of spy.mock.calls as Array<[Uint8Array]>) expect(buf.buffer).not.toBe(data.buffer);
      expect((await file.read(512, data.length)).equals(data)).toBe(true);
    } finally {
      spy.mockRestore();
      await file.close();
    }
  });

  it('writeSync keeps the same rule, and writes the caller bytes', () => {
    const spy = jest.spyOn(fs, 'writeSync');
    const name = path.join(tmp.dir, 'sync');
    const model = Buffer.alloc(SPAN);
    return localStore.createExclusive(name).then(async (file) => {
      try {
        fc.assert(
          fc.property(
            fc.constantFrom<Kind>('plain', 'aligned', 'shared', 'zeros'),
            fc.oneof(fc.nat(SPAN / 512 - 1).map((s) => s * 512), fc.nat(SPAN - 1)),
            fc.integer({ min: 1, max: (ZERO_RUN * 5) / 2 }),
            fc.oneof(fc.constant(0), fc.nat(PAGE * 2)),
            fc.nat(255),
            (kind, position, len, skew, fill) => {
              spy.mockClear();
              const length = Math.min(len, SPAN - position);
              const data = callerBuffer(kind, length, skew, fill);
              data.copy(model, position);
              file.writeSync!(position, data);
              expect(spy.mock.calls.length).toBeGreaterThan(0);
              for (const [, buf, offset, n, at] of spy.mock.calls as unknown as Array<[number, Uint8Array, number, number, number]>) {
                const src = buf.subarray(offset, offset + n);
                expect(directSource(src, at)).toBe(src);
              }
            },
          ),
          { numRuns: 60 },
        );
        expect((await file.read(0, SPAN)).equals(model)).toBe(true);
        expect(zeros(ZERO_RUN).every((b) => b === 0)).toBe(true);
      } finally {
        spy.mockRestore();
        await file.close();
      }
    });
  });
});

describe('sizedRing', () => {
  it('hands out aligned views of the length asked, never one of the last `count - 1` again, grown only when needed', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 300_000 }), { minLength: 1, maxLength: 40 }), (lengths) => {
        const next = sizedRing(3, 256 << 10);
        const held: Buffer[] = [];
        let longest = 0;
        for (const len of lengths) {
          longest = Math.max(longest, len);
          const b = next(len);
          expect(b.length).toBe(len);
          // Straight to pwrite at a page-aligned position: aligned and touched.
          expect(directSource(b, 0)).toBe(b);
          // The two buffers handed out before are still the consumer's (prefetch depth 2): distinct memory.
          for (const h of held) expect(h.buffer === b.buffer && h.byteOffset < b.byteOffset + b.length && b.byteOffset < h.byteOffset + h.length).toBe(false);
          held.push(b);
          if (held.length > 2) held.shift();
          // Small pieces get small memory: the power of two (from 64 KiB) above the longest piece so far, at most
          // the max unless a piece was longer.
          const want = Math.max(65536, 2 ** Math.ceil(Math.log2(longest)));
          expect(b.buffer.byteLength).toBeLessThanOrEqual(Math.max(Math.min(want, 256 << 10), longest) + 65535);
        }
      }),
      { numRuns: 100 },
    );
  });
});
