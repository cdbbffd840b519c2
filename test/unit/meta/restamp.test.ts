/**
 * Re-stamping copies a native list's body byte for byte behind a new header: the result must equal what writing the
 * same records again produces (body identical, header fields identical but for the time), for lists of every
 * version, held in memory or streamed from the file; a file changed between opening and copying is refused.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { localStore } from '../../../src/io/local.js';
import type { Location } from '../../../src/io/location.js';
import { parseHeader } from '../../../src/meta/header.js';
import { readMetafile, writeMetafile, type BlockRecord, type NewMetafile } from '../../../src/meta/metafile.js';
import { restampList, restampMetafile } from '../../../src/meta/restamp.js';
import { MetafileError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';

const loc = (p: string): Location => ({ store: localStore, path: p });
const identity = { format: 'vhdx' as const, contentId: '0123456789abcdef0123456789abcdef', timestamp: 712345678, fileSize: 123456789, mtimeMs: 1763890000123.5 };
const fresh = { format: 'vhdx' as const, contentId: 'a4156192-1c2f-164a-bd95-a9337bbdfc49', timestamp: 9, fileSize: 2 ** 33 + 7, mtimeMs: 1763899999000.25 };
const states = ['unallocated', 'zero', 'data'] as const;

describe('restampMetafile', () => {
  const tmp = makeTempDir('restamp');
  afterAll(() => tmp.cleanup());
  const p = (n: string) => path.join(tmp.dir, n);

  it('writes what re-encoding the records would, for v1/v2/v3 lists, in memory and streamed', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          algorithm: fc.constantFrom('xxh128' as const, 'sha256' as const),
          blockShift: fc.integer({ min: 16, max: 21 }),
          blocks: fc.integer({ min: 1, max: 40 }),
          tail: fc.integer({ min: 0, max: 127 }),
          sub: fc.boolean(),
          withParent: fc.boolean(),
          streamed: fc.boolean(),
          seed: fc.integer(),
        }),
        async ({ algorithm, blockShift, blocks, tail, sub, withParent, streamed, seed }) => {
          const blockSize = 2 ** blockShift;
          const virtualSize = (blocks - 1) * blockSize + (tail + 1) * 512;
          // A second level needs sub-blocks smaller than the block.
          const wanted = algorithm === 'xxh128' ? 32 << 10 : 64 << 10;
          const subBlockSize = sub && blockSize > wanted ? wanted : 0;
          const meta: NewMetafile = { layout: 'native', algorithm, blockSize, logicalSectorSize: 512, virtualSize, identity, parentIdentity: withParent ? identity : null, subBlockSize, createdMs: 1, toolVersion: 'vhdsync test' };
          const digestLength = algorithm === 'xxh128' ? 16 : 32;
          const subLength = algorithm === 'xxh128' ? 8 : 32;
          let x = seed >>> 0;
          const byte = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24);
          const records: BlockRecord[] = [];
          for (let index = 0; index < blocks; index++) {
            const length = Math.min(blockSize, virtualSize - index * blockSize);
            const r: BlockRecord = { index, state: states[byte() % 3], digest: Uint8Array.from({ length: digestLength }, byte) };
            if (subBlockSize) r.subDigests = Uint8Array.from({ length: Math.ceil(length / subBlockSize) * subLength }, byte);
            records.push(r);
          }
          const n = run++;
          await writeMetafile(loc(p(`in${n}.bin`)), meta, records);
          await writeMetafile(loc(p(`want${n}.bin`)), { ...meta, identity: fresh, parentIdentity: null }, records);
          await restampMetafile(loc(p(`in${n}.bin`)), loc(p(`got${n}.bin`)), fresh, streamed ? { memoryLimit: 0 } : {});
          const want = fs.readFileSync(p(`want${n}.bin`));
          const got = fs.readFileSync(p(`got${n}.bin`));
          expect(got.length).toBe(want.length);
          expect(got.subarray(512).equals(want.subarray(512))).toBe(true);
          expect({ ...parseHeader(got, 'got'), createdMs: 0, toolVersion: '' }).toEqual({ ...parseHeader(want, 'want'), createdMs: 0, toolVersion: '' });
          const m = await readMetafile(loc(p(`got${n}.bin`)));
          expect(m.summary.identity).toEqual(fresh);
          expect(m.summary.parentIdentity).toBeNull();
          await m.close();
          for (const f of [`in${n}.bin`, `want${n}.bin`, `got${n}.bin`]) fs.rmSync(p(f));
        },
      ),
      { numRuns: 30 },
    );
  });

  it('refuses a streamed list whose entries changed after it was opened, and leaves no file behind', async () => {
    const meta: NewMetafile = { layout: 'native', algorithm: 'xxh128', blockSize: 1 << 16, logicalSectorSize: 512, virtualSize: 20 << 16, identity, subBlockSize: 32 << 10 };
    const records: BlockRecord[] = Array.from({ length: 20 }, (_, index) => ({ index, state: 'data' as const, digest: new Uint8Array(16).fill(index), subDigests: new Uint8Array(16).fill(index + 1) }));
    for (const [name, offset] of [['entries', 512 + 5 * 17 + 3], ['table', 512 + 20 * 17 + 7]] as const) {
      await writeMetafile(loc(p(`c-${name}.bin`)), meta, records);
      const list = await readMetafile(loc(p(`c-${name}.bin`)), { memoryLimit: 0 });
      try {
        const fd = fs.openSync(p(`c-${name}.bin`), 'r+');
        fs.writeSync(fd, Buffer.from([0xee]), 0, 1, offset);
        fs.closeSync(fd);
        await expect(restampList(list, loc(p(`c-${name}-out.bin`)), fresh)).rejects.toThrow(MetafileError);
        await expect(restampList(list, loc(p(`c-${name}-out.bin`)), fresh)).rejects.toThrow(/changed while being copied/);
      } finally {
        await list.close();
      }
      expect(fs.readdirSync(tmp.dir).filter((f) => f.includes(`c-${name}-out`))).toEqual([]);
    }
  });
});
