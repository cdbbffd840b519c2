/**
 * Property: after any sequence of guest writes, backups (incremental or full) and prunes, `list` shows exactly the
 * points the model expects and every one restores to the content the source had when it was taken.
 */
import fc from 'fast-check';
import { closeSync, openSync, rmSync, truncateSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { backupDisk, openRepository, pruneDisk, selectKept } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { listed, restoredSha, sha256File, strays } from './repo-helpers.js';

const BLOCK = 64 << 10;
const BLOCKS = 32;

type Op = { op: 'write'; writes: Array<[number, number]> } | { op: 'backup'; full: boolean } | { op: 'prune'; keep: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('write' as const), writes: fc.array(fc.tuple(fc.integer({ min: 0, max: BLOCKS - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }) }),
  fc.record({ op: fc.constant('backup' as const), full: fc.boolean() }),
  fc.record({ op: fc.constant('backup' as const), full: fc.constant(false) }),
  fc.record({ op: fc.constant('prune' as const), keep: fc.integer({ min: 1, max: 3 }) }),
);

describe('backup repository property', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-repo-prop-')));
  afterAll(() => tmp.cleanup());

  it('every remaining point restores exactly, whatever the sequence of backups and prunes', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 2, maxLength: 8 }), async (ops) => {
        const dir = path.join(tmp.dir, `run${run++}`);
        const source = path.join(dir, 'vm.raw');
        const repoDir = path.join(dir, 'repo');
        rmSync(dir, { recursive: true, force: true });
        await import('node:fs/promises').then((f) => f.mkdir(dir, { recursive: true }));
        closeSync(openSync(source, 'w'));
        truncateSync(source, BLOCK * BLOCKS);
        const model: Array<{ id: string; time: string; sha: string }> = [];
        let clock = Date.parse('2026-03-01T00:00:00Z');
        for (const o of ops) {
          if (o.op === 'write') {
            const fd = openSync(source, 'r+');
            // Half a block, so blocks get partly changed content; fill 0 writes zeros over data.
            for (const [b, fill] of o.writes) writeSync(fd, Buffer.alloc(BLOCK / 2, fill), 0, BLOCK / 2, b * BLOCK + (fill % 2) * (BLOCK / 2));
            closeSync(fd);
            continue;
          }
          const repo = await openRepository(repoDir, false);
          if (o.op === 'backup') {
            // Hours apart, so --keep-daily style rules would see distinct times; ids stay distinct.
            const s = await backupDisk(repo, await parseLocation(source), 'vm', { reflink: 'never', full: o.full, blockSize: BLOCK, now: () => new Date((clock += 3_600_000)) });
            model.push({ id: s.point, time: s.time, sha: sha256File(source) });
          } else if (model.length) {
            const kept = selectKept(model, { keep: o.keep });
            await pruneDisk(repo, 'vm', { keep: o.keep });
            model.splice(0, model.length, ...model.filter((p) => kept.has(p.id)));
          }
          if (!model.length) continue;
          const points = (await listed(repoDir))[0].points;
          expect(points.map((p) => p.id)).toEqual(model.map((p) => p.id));
          for (const p of model) expect({ id: p.id, sha: await restoredSha(repoDir, 'vm', p.id, dir) }).toEqual({ id: p.id, sha: p.sha });
          expect(strays(path.join(repoDir, 'vm'))).toEqual([]);
        }
      }),
      { numRuns: 10, seed: Number(process.env.FC_SEED ?? 1203), endOnFailure: true },
    );
  }, 300_000);
});
