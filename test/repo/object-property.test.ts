/**
 * Property (issue 15): on an object repository (in memory), any sequence of guest writes, backups and prunes,
 * some of them cut off at a random request as a kill -9 would, leaves every point the manifest lists restorable
 * to the content the source had when it was taken, loses no point that was reported done, and after a completed
 * prune the store holds no object that no manifest references.
 */
import fc from 'fast-check';
import { closeSync, openSync, truncateSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { MemoryObjectStore } from '../helpers/memory-object-store.js';
import { parseLocation } from '../../src/io/location.js';
import { backupDisk, pruneDisk, selectKept, listRepository } from '../../src/repo/index.js';
import { ObjectRepository } from '../../src/repo/object/object-backend.js';
import { restoredObjectSha, unreferenced } from './object-helpers.js';
import { sha256File } from './repo-helpers.js';

const BLOCK = 16 << 10;
const BLOCKS = 24;
/** A pid no process has (above Linux's pid_max limit of 2^22). */
const DEAD_PID = 4_194_305;

type Op = { op: 'write'; writes: Array<[number, number]> } | { op: 'backup'; kill: number | null } | { op: 'prune'; keep: number; kill: number | null };

const kill = fc.option(fc.integer({ min: 0, max: 40 }), { freq: 2 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('write' as const), writes: fc.array(fc.tuple(fc.integer({ min: 0, max: BLOCKS - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }) }),
  fc.record({ op: fc.constant('backup' as const), kill }),
  fc.record({ op: fc.constant('prune' as const), keep: fc.integer({ min: 1, max: 3 }), kill }),
);

class Killed extends Error {}

/**
 * Makes the store refuse every request that changes it from the `n`-th on, as if the process had died there.
 * `fired` tells whether it did (a kill in the lease's release is swallowed by the run, as it should be).
 */
function armKill(store: MemoryObjectStore, n: number | null): { fired: boolean } {
  let left = n;
  const state = { fired: false };
  store.beforeMutation = (m) => {
    if (left === null) return;
    if (left <= 0) {
      state.fired = true;
      throw new Killed(`killed before ${m.op}`);
    }
    left--;
  };
  return state;
}

/** After a simulated kill: the run's lease object names a dead process of this host, as a real kill leaves it. */
function buryLease(store: MemoryObjectStore): void {
  for (const [key, o] of store.objects) {
    if (!key.startsWith('leases/')) continue;
    const r = JSON.parse(o.body.toString('utf8')) as { pid: number; released: boolean };
    if (r.pid === process.pid && !r.released) {
      o.body = Buffer.from(JSON.stringify({ ...r, pid: DEAD_PID }));
      // The record's copy in the metadata, which a taker reads first, says the same.
      if (o.metadata) o.metadata = Object.fromEntries(Object.keys(o.metadata).map((name) => [name, o.body.toString('base64')]));
    }
  }
}

describe('object repository property', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-objrepo-prop-')));
  afterAll(() => tmp.cleanup());

  it('every listed point restores exactly and no unreferenced object survives a prune, whatever is killed where', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 2, maxLength: 9 }), async (ops) => {
        const dir = path.join(tmp.dir, `run${run++}`);
        await import('node:fs/promises').then((f) => f.mkdir(dir, { recursive: true }));
        const source = path.join(dir, 'vm.raw');
        closeSync(openSync(source, 'w'));
        truncateSync(source, BLOCK * BLOCKS);
        const store = new MemoryObjectStore();
        const repo = new ObjectRepository(store, { uploadsInFlight: 3, readAhead: 2 });
        const shaAt = new Map<string, string>();
        let model: string[] = [];
        // Points a killed backup made (map written) but did not record: the next run that settles records them.
        let unlisted: string[] = [];
        let clock = Date.parse('2026-03-01T00:00:00Z');
        for (const o of ops) {
          if (o.op === 'write') {
            const fd = openSync(source, 'r+');
            for (const [b, fill] of o.writes) writeSync(fd, Buffer.alloc(BLOCK / 2, fill), 0, BLOCK / 2, b * BLOCK + (fill % 2) * (BLOCK / 2));
            closeSync(fd);
            continue;
          }
          const kill = armKill(store, o.kill);
          let killed = false;
          const sha = sha256File(source);
          // What this run's settle starts from.
          const before = [...model, ...unlisted];
          try {
            if (o.op === 'backup') {
              const s = await backupDisk(repo, await parseLocation(source), 'vm', { blockSize: BLOCK, now: () => new Date((clock += 3_600_000)) });
              shaAt.set(s.point, sha);
              model = [...before, s.point];
            } else if (before.length) {
              const kept = selectKept(before.map((id) => ({ id, time: id })), { keep: o.keep });
              await pruneDisk(repo, 'vm', { keep: o.keep });
              model = before.filter((id) => kept.has(id));
              // (A kill the run survived, in the lease's deletion of older generations or its release, leaves a lease
              // generation the next holder deletes.)
              if (!kill.fired) expect(await unreferenced(store.keys(), (k) => store.get(k))).toEqual([]);
            }
          } catch (err) {
            if (!(err instanceof Killed)) throw err;
            killed = true;
          }
          store.beforeMutation = null;
          if (kill.fired) buryLease(store);
          const listedIds = (await listRepository(repo)).disks.find((d) => d.name === 'vm')?.points.map((p) => p.id) ?? [];
          if (killed && o.op === 'backup') {
            // Nothing recorded is lost; killed after its manifest was written, the point exists and holds what the source held.
            expect(model.every((id) => listedIds.includes(id))).toBe(true);
            const added = listedIds.filter((id) => !before.includes(id));
            expect(added.length).toBeLessThanOrEqual(1);
            for (const id of added) shaAt.set(id, sha);
            model = listedIds;
          }
          if (killed && o.op === 'prune') {
            // Nothing but dropped points may be gone.
            expect(listedIds.every((id) => before.includes(id))).toBe(true);
            model = listedIds;
          }
          expect(listedIds).toEqual(model);
          const newest = model[model.length - 1];
          const maps = store.keys().flatMap((k) => /^disks\/vm\/(\d{8}T\d{6}Z(?:-\d+)?)\.map$/.exec(k)?.[1] ?? []);
          unlisted = maps.filter((id) => !model.includes(id) && (!newest || id > newest));
          if (killed && o.op === 'backup') for (const id of unlisted) if (!shaAt.has(id)) shaAt.set(id, sha);
          for (const id of model) expect({ id, sha: await restoredObjectSha(repo, 'vm', id, dir) }).toEqual({ id, sha: shaAt.get(id) });
        }
        // A last prune (after kills) leaves nothing behind.
        if (model.length || unlisted.length) {
          await pruneDisk(repo, 'vm', { keep: 3 });
          expect(await unreferenced(store.keys(), (k) => store.get(k))).toEqual([]);
        }
      }),
      { numRuns: 25, seed: Number(process.env.FC_SEED ?? 1503), endOnFailure: true },
    );
  }, 300_000);
});
