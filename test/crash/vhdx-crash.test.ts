/**
 * Crash safety of VHDX writes: a child process writes and flushes, and is killed with SIGKILL at
 * random moments. After each kill, qemu (after its own log replay on a copy) and our reader agree,
 * and the content is the model after every write reported flushed, with the write in flight (if
 * any) present sector by sector either entirely old or entirely new.
 */
import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { openDisk, createDisk } from '../../src/formats/index.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run, runStatus } from '../helpers/tools.js';
import { privateCli } from '../cli/sync-helpers.js';
import { applyWrite, runWriter, tornSectors } from './vhdx-writer-run.mjs';

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const KILLS = 24;
const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;

/**
 * The compiled sources for the child: a private copy of the dist/ that jest's global setup has just built (others
 * may rebuild dist/ while this test runs), next to a link to node_modules so package imports resolve.
 */
function buildForChild(dir: string): string {
  return path.join(path.dirname(path.dirname(privateCli(dir))), 'dist');
}

d('VHDX crash safety', () => {
  const tmp = makeTempDir('vhdx-crash-');
  afterAll(() => tmp.cleanup());

  test(`SIGKILL at ${KILLS} points leaves a consistent image`, async () => {
    const dist = buildForChild(tmp.dir);
    const image = path.join(tmp.dir, 'crash.vhdx');
    const disk = await createDisk(image, { format: 'vhdx', type: 'dynamic', virtualSize: SIZE, blockSize: 1 * MiB });
    await disk.close();
    let model: Buffer = Buffer.alloc(SIZE);
    let next = 0;
    let dirtySeen = 0;
    let inFlightSeen = 0;
    const times: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      const t0 = Date.now();
      const res = await runWriter(dist, image, next, 1000 + k, k % 4 === 0 ? (k * 7) % 30 : (k * 13) % 50, k % 4 !== 0);
      const tChild = Date.now() - t0;
      const ours = await openDisk(image);
      const info = await ours.info();
      if (String(info.logState).startsWith('replayed')) dirtySeen++;
      const content = await ours.read(0, SIZE);
      await ours.close();
      // Writes reported done are all there; the one in flight is, per sector, old or new.
      const expected = Buffer.from(model);
      for (const w of res.done) applyWrite(expected, w);
      const flight = res.inFlight;
      if (flight) {
        inFlightSeen++;
        const newer = Buffer.from(expected);
        applyWrite(newer, flight);
        expect(tornSectors(content, expected, newer)).toEqual([]);
      } else {
        expect(content.equals(expected)).toBe(true);
      }
      // qemu replays the log on a copy and then reads what we read.
      const copy = path.join(tmp.dir, `copy-${k}.vhdx`);
      copyFileSync(image, copy);
      const check = runStatus('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', copy]);
      expect(check.stdout + check.stderr).toMatch(/No errors were found/);
      expect(check.status).toBe(0);
      run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', copy, copy + '.raw']);
      expect(readFileSync(copy + '.raw').equals(content)).toBe(true);
      rmSync(copy);
      rmSync(copy + '.raw');
      model = content;
      times.push(`${tChild}/${Date.now() - t0}/${res.done.length}`);
      next += res.done.length + (flight ? 1 : 0);
    }
    console.log('crash iterations (ms):', times.join(' '), 'dirty:', dirtySeen, 'in flight:', inFlightSeen);
    // The kills must have landed inside sessions with a live log and inside writes, or the test proves little.
    expect(dirtySeen).toBeGreaterThan(KILLS / 3);
    expect(inFlightSeen).toBeGreaterThan(KILLS / 4);
    // Each kill costs a child start, a qemu-img check and a convert: about 5 s on a loaded 2-core machine.
  }, 300_000);
});
