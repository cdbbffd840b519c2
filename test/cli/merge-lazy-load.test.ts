/**
 * merge does not hash (only a resumed merge checks the parent against the diff's list, and loads the hashers then):
 * its start-up loads neither xxhash-addon nor the hashing modules (the bundle's chunks holding dist/meta/hash-*).
 * A control run of createmeta shows the detector sees them.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { loadedModules } from '../helpers/loaded-modules.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('merge start-up', () => {
  const { dir, cleanup } = makeTempDir('vhdsync-lazy-');
  afterAll(cleanup);
  const HASHING = /^dist\/meta\/hash-(pool|sync|direct|disk)\.js$/;

  it('merge loads no hasher; createmeta does (the detector works)', async () => {
    // A missing diff: the command's modules are all loaded before it looks.
    const merge = await loadedModules(dir, ['merge', path.join(dir, 'none_diff.vhdx')]);
    expect(merge.stderr).toMatch(/no such file/);
    expect(merge.cjs.filter((k) => k.includes('/xxhash-addon/'))).toEqual([]);
    expect(merge.sources.filter((s) => HASHING.test(s))).toEqual([]);
    const img = path.join(dir, 'disk.raw');
    writeFileSync(img, Buffer.alloc(1 << 20, 1));
    const createmeta = await loadedModules(dir, ['createmeta', '-q', img]);
    expect(createmeta.status).toBe(0);
    expect(createmeta.cjs.filter((k) => k.includes('/xxhash-addon/')).length).toBeGreaterThan(0);
    expect(createmeta.sources.filter((s) => HASHING.test(s)).length).toBeGreaterThan(0);
  });
});
