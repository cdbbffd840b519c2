/**
 * io/holes.ts: a range HoleProbe calls a hole reads as zeros (on random sparse files), and on a filesystem that
 * reports holes, every range no write touched is found; VHDSYNC_HOLE_MAP=0 switches the helper off.
 */
import fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { HoleProbe, holeMapAvailable } from '../../../src/io/holes.js';
import { requireTool } from '../../helpers/tools.js';
import { makeTempDir } from '../../helpers/tmp.js';

const BLOCK = 4096;
const MAX = 8 << 20;

/** True when the helper is built and the temp directory's filesystem reports a fresh sparse file as one hole. */
function holesReported(dir: string): boolean {
  if (!requireTool(holeMapAvailable(), 'the hole map helper (scripts/build-native.js: cc and Node headers)')) return false;
  const f = path.join(dir, 'probe');
  fs.writeFileSync(f, '');
  fs.truncateSync(f, 1 << 20);
  const probe = new HoleProbe();
  try {
    if (probe.isHole(f, 0, 1 << 20)) return true;
    console.warn(`not checking that holes are found: the filesystem of ${dir} reports a sparse file as data`);
    return false;
  } finally {
    probe.close();
  }
}

describe('HoleProbe', () => {
  const tmp = makeTempDir('holes-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it('calls a range a hole only when it reads as zeros, and finds every range no write touched', async () => {
    const complete = holesReported(tmp.dir);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: MAX }),
        fc.array(fc.record({ at: fc.nat(MAX - 1), len: fc.integer({ min: 1, max: 300000 }), zeros: fc.boolean() }), { maxLength: 8 }),
        fc.array(fc.record({ at: fc.nat(MAX + 2 * BLOCK), len: fc.integer({ min: 1, max: 2 << 20 }) }), { minLength: 1, maxLength: 12 }),
        async (size, writes, queries) => {
          const file = path.join(tmp.dir, `f${n++}`);
          fs.writeFileSync(file, '');
          fs.truncateSync(file, size);
          const fd = fs.openSync(file, 'r+');
          // Explicit zeros are written data, not holes: a probe may not call them holes, and need not.
          for (const w of writes) fs.writeSync(fd, w.zeros ? Buffer.alloc(w.len) : randomBytes(w.len), 0, w.len, w.at);
          fs.closeSync(fd);
          const content = fs.readFileSync(file);
          const probe = new HoleProbe();
          try {
            for (const q of queries) {
              const hole = probe.isHole(file, q.at, q.len);
              const inFile = content.subarray(Math.min(q.at, content.length), Math.min(q.at + q.len, content.length));
              if (hole) expect(inFile.every((b) => b === 0)).toBe(true);
              const touched = writes.some((w) => Math.floor(w.at / BLOCK) * BLOCK < q.at + q.len && Math.ceil((w.at + w.len) / BLOCK) * BLOCK > q.at);
              if (complete && !touched) expect(hole).toBe(true);
            }
          } finally {
            probe.close();
          }
          fs.rmSync(file);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('knows nothing about a file it cannot open (the reader then reports the error)', () => {
    const probe = new HoleProbe();
    expect(probe.isHole(path.join(tmp.dir, 'missing'), 0, 4096)).toBe(false);
    probe.close();
  });

  it('is switched off by VHDSYNC_HOLE_MAP=0', () => {
    // The built module (the tests' global setup runs tsc), in a process of its own: the helper is loaded once.
    const code = `import { holeMapAvailable } from ${JSON.stringify(path.resolve('dist/io/holes.js'))}; console.log(holeMapAvailable());`;
    const ask = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env: { ...process.env, ...env } }).stdout.trim();
    expect(ask({ VHDSYNC_HOLE_MAP: '0' })).toBe('false');
    expect(ask({ VHDSYNC_HOLE_MAP: '' })).toBe(String(holeMapAvailable()));
  });
});
