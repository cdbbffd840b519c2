import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import { localStore } from '../../../src/io/local.js';
import type { ByteStore, RandomAccessFile } from '../../../src/io/store.js';
import type { Location } from '../../../src/io/location.js';
import { createMetafile } from '../../../src/meta/index.js';
import { copyToDiff } from '../../../src/sync/copy.js';
import { mergeDiff } from '../../../src/sync/merge.js';
import { fromSystemError, IoError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;

/** The local store, except that writes to files matching `victim` fail with ENOSPC once `budget` bytes were written. */
function fullDisk(victim: RegExp, budget: number): ByteStore {
  let left = budget;
  const wrap = (f: RandomAccessFile, p: string): RandomAccessFile => ({
    name: f.name,
    writable: f.writable,
    read: (a, b, c) => f.read(a, b, c),
    size: () => f.size(),
    truncate: (n) => f.truncate(n),
    flush: () => f.flush(),
    close: () => f.close(),
    write: async (pos, data) => {
      if (victim.test(p)) {
        if (left < data.byteLength) throw fromSystemError(Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' }), p);
        left -= data.byteLength;
      }
      return f.write(pos, data);
    },
  });
  return {
    ...localStore,
    kind: 'local',
    paths: localStore.paths,
    display: (p) => localStore.display(p),
    stat: (p) => localStore.stat(p),
    rename: (a, b) => localStore.rename(a, b),
    unlink: (p) => localStore.unlink(p),
    list: (d) => localStore.list(d),
    mkdirp: (d) => localStore.mkdirp(d),
    syncDir: (d) => localStore.syncDir(d),
    open: async (p, m) => wrap(await localStore.open(p, m), p),
    createExclusive: async (p) => wrap(await localStore.createExclusive(p), p),
  };
}

async function setup(dir: string) {
  const loc = (name: string): Location => ({ store: localStore, path: path.join(dir, name) });
  const target = await createDisk(loc('t.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: 16 * MiB });
  await target.write(0, Buffer.alloc(MiB, 1));
  await target.close();
  const source = await createDisk(loc('s.raw'), { format: 'raw', type: 'dynamic', virtualSize: 16 * MiB });
  await source.write(0, Buffer.alloc(MiB, 1));
  for (let i = 0; i < 8; i++) await source.write(i * 2 * MiB + 65536, Buffer.alloc(65536, 2 + i));
  await source.close();
  for (const name of ['s.raw', 't.vhdx']) {
    const d = await openDisk(loc(name));
    await createMetafile(d, { blockSize: 65536 });
    await d.close();
  }
  return loc;
}

describe('no space left on device', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeEach(() => (tmp = makeTempDir()));
  afterEach(() => tmp.cleanup());

  it('copy stops with one IoError line and leaves no diff, not even a temp file', async () => {
    const loc = await setup(tmp.dir);
    const store = fullDisk(/t_diff/, 256 << 10);
    const err = await copyToDiff(loc('s.raw'), loc('t.vhdx'), { diffdir: { store, path: tmp.dir } }).catch((e) => e);
    if (!(err instanceof IoError)) throw err;
    // The user never named the hidden temp file: the error names the diff they asked for.
    expect(err.describe()).toMatch(/t_diff\.vhdx: no space left on device$/);
    expect(readdirSync(tmp.dir).sort()).toEqual(['s.raw', 's.raw.blocklist.bin', 't.vhdx', 't.vhdx.blocklist.bin']);
  });

  it('merge stops with IoError, keeps its state, and a rerun with space completes', async () => {
    const loc = await setup(tmp.dir);
    await copyToDiff(loc('s.raw'), loc('t.vhdx'));
    const store = fullDisk(/t\.vhdx$/, 200 << 10);
    const err = await mergeDiff({ store, path: path.join(tmp.dir, 't_diff.vhdx') }).catch((e) => e);
    expect(err).toBeInstanceOf(IoError);
    expect(err.describe()).toMatch(/no space left on device$/);
    expect(existsSync(path.join(tmp.dir, 't.vhdx.merge-state.json'))).toBe(true);
    const done = await mergeDiff(loc('t_diff.vhdx'));
    expect(done.resumed).toBe(true);
    const s = await openDisk(loc('s.raw'));
    const t = await openDisk(loc('t.vhdx'));
    expect((await t.read(0, 16 * MiB)).equals(await s.read(0, 16 * MiB))).toBe(true);
    await s.close();
    await t.close();
    expect(readdirSync(tmp.dir).sort()).toEqual(['s.raw', 's.raw.blocklist.bin', 't.vhdx', 't.vhdx.blocklist.bin']);
  });
});
