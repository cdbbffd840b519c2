/**
 * merge does not hash (only a resumed merge checks the parent against the diff's list, and loads the hashers then):
 * its start-up loads neither xxhash-addon nor the hashing modules. A preload module reports, at exit, the
 * xxhash-addon entries in the CJS module cache; a control run of createmeta shows the detector sees them.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { BIN } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('merge start-up', () => {
  const { dir, cleanup } = makeTempDir('vhdsync-lazy-');
  afterAll(cleanup);
  const preload = path.join(dir, 'report.cjs');
  writeFileSync(preload, `process.on('exit', () => { const n = Object.keys(require.cache).filter((k) => k.includes('/xxhash-addon/')).length; require('fs').writeSync(2, 'xxhash-modules=' + n + '\\n'); });\n`);

  function hasherModules(args: string[]): number {
    const r = spawnSync(process.execPath, ['-r', preload, BIN, ...args], { encoding: 'utf8' });
    const m = /xxhash-modules=(\d+)/.exec(r.stderr);
    if (!m) throw new Error(`no report: ${r.stderr}`);
    return Number(m[1]);
  }

  it('merge loads no hasher; createmeta does (the detector works)', () => {
    // A missing diff: the command's modules are all loaded before it looks.
    expect(hasherModules(['merge', path.join(dir, 'none_diff.vhdx')])).toBe(0);
    const img = path.join(dir, 'disk.raw');
    writeFileSync(img, Buffer.alloc(1 << 20, 1));
    expect(hasherModules(['createmeta', '-q', img])).toBeGreaterThan(0);
  });
});
