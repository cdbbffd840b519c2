/**
 * The native sub-digest helper (native/xxh3subs.c, decision 0025): XXH3-64 of every whole sub-block in one call
 * equals xxhash-addon's one call per sub-block, and hashBlocksSync gives the same block and sub-block digests with
 * and without it over random file runs and zero runs (pieces that start and end inside sub-blocks).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import xxhash from 'xxhash-addon';
import { hashBlocksSync, localHasher, nativeSubsAvailable } from '../../../src/meta/hash-sync.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { requireTool } from '../../helpers/tools.js';

const have = () => requireTool(nativeSubsAvailable(), 'the sub-digest helper (scripts/build-native.js: cc and Node headers)');

describe('native sub-digests', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it('digests every whole sub-block as XXHash3.hash does, one sub-block at a time', () => {
    if (!have()) return;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.constantFrom(512, 1000, 4096, 32768), fc.integer({ min: 0, max: 511 }), (count, size, tail) => {
        const data = randomBytes(count * size + tail);
        const whole = data.subarray(0, count * size);
        const expected = Buffer.concat(Array.from({ length: count }, (_, k) => xxhash.XXHash3.hash(whole.subarray(k * size, (k + 1) * size))));
        const sized = localHasher('xxh128', 1 << 20, { algorithm: 'xxh3-64', size });
        sized.native = null;
        try {
          expect(sized.sub!.many!(whole).equals(expected)).toBe(true);
        } finally {
          sized.closeAll();
        }
      }),
      { numRuns: 60 },
    );
  });

  it('gives hashBlocksSync the same digests as one call per sub-block', () => {
    if (!have()) return;
    const file = path.join(tmp.dir, 'data');
    fs.writeFileSync(file, randomBytes(4 << 20));
    const run = fc.record({ zero: fc.boolean(), offset: fc.integer({ min: 0, max: (4 << 20) - 1 }), length: fc.integer({ min: 1, max: 300_000 }) });
    fc.assert(
      fc.property(fc.array(run, { minLength: 1, maxLength: 6 }), fc.constantFrom(4096, 32768), fc.constantFrom(65536, 1 << 20), (runs, size, piece) => {
        const triples = runs.flatMap((r) => [r.zero ? -1 : 0, r.zero ? 0 : Math.min(r.offset, (4 << 20) - r.length), r.length]);
        // The block hasher (native-blocks.test.ts) off: this compares the JavaScript loop with and without xxh3Subs.
        const native = { ...localHasher('xxh128', piece, { algorithm: 'xxh3-64', size }), native: null };
        const plain = { ...native, sub: { ...native.sub!, many: null } };
        try {
          expect(native.sub!.many).not.toBeNull();
          const [a] = hashBlocksSync([triples], [file], native);
          const [b] = hashBlocksSync([triples], [file], plain);
          expect(a).toEqual(b);
        } finally {
          native.closeAll();
        }
      }),
      { numRuns: 80 },
    );
  });
});
