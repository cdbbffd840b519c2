/**
 * Crash safety of VHDX writes: a child process writes and flushes, and is killed with SIGKILL at
 * random moments. After each kill, qemu (after its own log replay on a copy) and our reader agree,
 * and the content is the model after every write reported flushed, with the write in flight (if
 * any) present sector by sector either entirely old or entirely new.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { openDisk, createDisk } from '../../src/formats/index.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run, runStatus } from '../helpers/tools.js';

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const KILLS = 24;
const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;

/** Must match `pattern` in vhdx-writer.mjs. */
function pattern(i: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let k = 0; k < len; k++) b[k] = (i * 131 + k * 7 + (k >> 9)) & 255;
  return b;
}

/** Newest modification time of the TypeScript sources. */
function newestSource(dir = path.resolve('src')): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
  }
  return t;
}

/**
 * The compiled sources for the child, built inside node_modules (so package imports resolve) and
 * reused while newer than every source. Not `dist/` outside CI: others may rebuild it while this test runs.
 */
function buildForChild(): string {
  // In CI nothing else runs beside this suite, and jest's global setup has just built dist/.
  if (process.env.CI && existsSync(path.resolve('dist/formats/vhdx/vhdx-disk.js'))) return path.resolve('dist');
  const out = path.resolve('node_modules/.cache/vhdsync-vhdx-crash');
  const stamp = path.join(out, '.built');
  if (existsSync(stamp) && statSync(stamp).mtimeMs >= newestSource()) return out;
  // tsc exits non-zero on type errors elsewhere in the tree but still emits; the emitted entry point is what matters.
  spawnSync(process.execPath, [path.resolve('node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--outDir', out, '--declaration', 'false', '--sourceMap', 'false'], { stdio: 'ignore' });
  if (!existsSync(path.join(out, 'formats/index.js'))) throw new Error('could not compile the sources for the crash-test child');
  writeFileSync(stamp, '');
  return out;
}

interface Write {
  i: number;
  off: number;
  len: number;
  zero: boolean;
}

/** What a write puts into the model. */
function apply(model: Buffer, w: Write): void {
  if (w.zero) model.fill(0, w.off, w.off + w.len);
  else pattern(w.i, w.len).copy(model, w.off);
}

interface Outcome {
  /** Writes reported flushed, in order. */
  done: Write[];
  /** The write started and not reported flushed when the child died. */
  inFlight: Write | null;
}

/** Runs the writer until it has been killed (after `delayMs` from ready) or finished. */
function runChild(dist: string, image: string, first: number, seed: number, delayMs: number, fromFirstDone: boolean): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.resolve('test/crash/vhdx-writer.mjs'), dist, image, String(first), '40', String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let err = '';
    let armed = false;
    const out: Outcome = { done: [], inFlight: null };
    child.stderr.on('data', (c) => (err += c));
    child.stdout.on('data', (c) => {
      buf += c;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).split(' ');
        buf = buf.slice(nl + 1);
        // Timed from the first flushed write, a kill lands in a session with a live log; from ready, in its first steps.
        if (line[0] === (fromFirstDone ? 'done' : 'ready') && !armed) {
          armed = true;
          setTimeout(() => child.kill('SIGKILL'), delayMs);
        }
        if (line[0] === 'start') out.inFlight = { i: Number(line[1]), off: Number(line[2]), len: Number(line[3]), zero: line[4] === 'zero' };
        if (line[0] === 'done' && out.inFlight) {
          out.done.push(out.inFlight);
          out.inFlight = null;
        }
      }
    });
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`writer failed (${code}): ${err}`));
      else resolve(out);
    });
  });
}

d('VHDX crash safety', () => {
  const tmp = makeTempDir('vhdx-crash-');
  afterAll(() => tmp.cleanup());

  test(`SIGKILL at ${KILLS} points leaves a consistent image`, async () => {
    const dist = buildForChild();
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
      const res = await runChild(dist, image, next, 1000 + k, k % 4 === 0 ? (k * 7) % 30 : (k * 13) % 50, k % 4 !== 0);
      const tChild = Date.now() - t0;
      const ours = await openDisk(image);
      const info = await ours.info();
      if (String(info.logState).startsWith('replayed')) dirtySeen++;
      const content = await ours.read(0, SIZE);
      await ours.close();
      // Writes reported done are all there; the one in flight is, per sector, old or new.
      const expected = Buffer.from(model);
      for (const w of res.done) apply(expected, w);
      const flight = res.inFlight;
      if (flight) {
        inFlightSeen++;
        const newer = Buffer.from(expected);
        apply(newer, flight);
        const bad: number[] = [];
        for (let s = 0; s < SIZE; s += 512) {
          const c = content.subarray(s, s + 512);
          if (!c.equals(expected.subarray(s, s + 512)) && !c.equals(newer.subarray(s, s + 512))) bad.push(s);
        }
        expect(bad).toEqual([]);
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
  });
});
