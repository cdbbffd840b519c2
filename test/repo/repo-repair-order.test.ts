/**
 * `verify --repair` never reorders backups silently (ids are clock times: a host with a skewed clock names a later
 * backup earlier), refuses a folder with a prune's merge marker, keeps the damaged manifest aside, and leaves alone a
 * manifest written by a newer vhdsync.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { backupDisk, FileRepository, openRepository, repairManifest } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { localStore } from '../../src/io/local.js';
import type { ByteStore } from '../../src/io/store.js';
import { RepositoryDamageError } from '../../src/util/errors.js';
import { rawDisk, scribble } from './repo-helpers.js';

const MiB = 1 << 20;

describe('verify --repair: order and what it refuses', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let repo: FileRepository;
  let source: string;
  const folder = (disk: string) => path.join(tmp.dir, 'repo', disk);
  /** Backs up `disk` with its clock at `at`; returns the point id. */
  const backup = async (disk: string, at: string, fill: number, full = false) => {
    scribble(source, [[0, MiB, fill]]);
    return (await backupDisk(repo, await parseLocation(source), disk, { reflink: 'never', full, now: () => new Date(at) })).point;
  };

  beforeAll(async () => {
    tmp = makeTempDir('repo-repair-order-');
    source = rawDisk(path.join(tmp.dir, 'd.raw'), 4 * MiB);
    repo = (await openRepository(path.join(tmp.dir, 'repo'), false)) as FileRepository;
  });
  afterAll(() => tmp?.cleanup());

  it('refuses, naming the points, when a standalone point id falls among a chain (skewed clocks)', async () => {
    const a = await backup('skew', '2026-12-03T10:00:00Z', 0x11);
    await backup('skew', '2026-12-03T10:05:00Z', 0x22);
    const c = await backup('skew', '2026-12-03T10:03:00Z', 0x33, true); // the newest backup, from a host 3 min behind
    rmSync(path.join(folder('skew'), 'manifest.json'));
    await expect(repairManifest(repo, 'skew')).rejects.toThrow(new RegExp(`order of standalone points ${a} and ${c} is not provable`));
    expect(existsSync(path.join(folder('skew'), 'manifest.json'))).toBe(false);
  });

  it('orders a chain by its parents, moves a damaged manifest aside, and refuses a merge marker', async () => {
    const ids = [await backup('ok', '2026-12-03T09:00:00Z', 0x41), await backup('ok', '2026-12-03T09:10:00Z', 0x42), await backup('ok', '2026-12-03T09:20:00Z', 0x43, true)];
    const manifest = path.join(folder('ok'), 'manifest.json');
    const before = readFileSync(manifest);
    writeFileSync(manifest, before.subarray(0, 40));
    const r = await repairManifest(repo, 'ok');
    expect(r.points.map((p) => p.id)).toEqual(ids);
    expect(r.movedAside).toMatch(/^manifest\.json\.damaged-\d{8}T\d{6}Z$/);
    expect(readFileSync(path.join(folder('ok'), r.movedAside!))).toEqual(before.subarray(0, 40));

    rmSync(manifest);
    writeFileSync(path.join(folder('ok'), `${ids[1]}.vhdx.merging.json`), '{}');
    await expect(repairManifest(repo, 'ok')).rejects.toThrow(/no fold marker names it/);
    rmSync(path.join(folder('ok'), `${ids[1]}.vhdx.merging.json`));
  });

  it('opens one point (with its chain) at a time', async () => {
    const n = 10;
    for (let i = 0; i < n; i++) await backup('chain', `2026-12-0${1 + Math.floor(i / 5)}T0${i % 5}:00:00Z`, 0x60 + i);
    rmSync(path.join(folder('chain'), 'manifest.json'));
    // The local store, counting the files it has open at once.
    let open = 0;
    let most = 0;
    const counting: ByteStore = Object.create(localStore);
    const track = async <T extends { close(): Promise<void> }>(opening: Promise<T>): Promise<T> => {
      const f = await opening;
      most = Math.max(most, ++open);
      const close = f.close.bind(f);
      f.close = async () => {
        open--;
        await close();
      };
      return f;
    };
    counting.open = (p, mode) => track(localStore.open(p, mode));
    counting.createExclusive = (p) => track(localStore.createExclusive(p));
    const r = await repairManifest(new FileRepository({ store: counting, path: path.join(tmp.dir, 'repo') }), 'chain');
    expect(r.points.map((p) => p.kind)).toEqual(['full', ...Array(n - 1).fill('diff')]);
    // One chain of n images, its list, the lock: keeping every point open held n(n+1)/2 = 55 images.
    expect(most).toBeLessThanOrEqual(n + 4);
    expect(open).toBe(0);
  });

  it('leaves a manifest written by a newer vhdsync alone', async () => {
    await backup('new', '2026-12-03T08:00:00Z', 0x51);
    const manifest = path.join(folder('new'), 'manifest.json');
    const m = JSON.parse(readFileSync(manifest, 'utf8'));
    writeFileSync(manifest, JSON.stringify({ ...m, version: m.version + 1 }));
    const err = await repairManifest(repo, 'new').catch((e) => e);
    expect(err).toBeInstanceOf(RepositoryDamageError);
    expect(err.message).toMatch(/written by a newer vhdsync/);
    expect(JSON.parse(readFileSync(manifest, 'utf8')).version).toBe(m.version + 1);
    expect(readdirSync(folder('new')).filter((n) => n.includes('damaged'))).toEqual([]);
  });
});
