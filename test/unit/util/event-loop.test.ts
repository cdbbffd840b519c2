/**
 * Turns for the event loop in loops that do their I/O on the calling thread (util/event-loop.ts, decision 0036):
 * timers (a lock's renewals) still run when the loop moves few bytes slowly, not only after every 16 MiB, and between
 * a local file's small calling-thread reads that no loop counts.
 */
import fs from 'node:fs';
import * as path from 'node:path';
import { localStore } from '../../../src/io/local.js';
import { EventLoopTurns, YIELD_BYTES, YIELD_MS } from '../../../src/util/event-loop.js';
import { makeTempDir } from '../../helpers/tmp.js';

/** Blocks this thread for `ms`, as a slow synchronous read does. */
const block = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

describe('event loop turns', () => {
  it('come at least every 50 ms of blocking work however few bytes it moves', async () => {
    const turns = new EventLoopTurns();
    const fired: number[] = [];
    const started = performance.now();
    const timer = setInterval(() => fired.push(performance.now() - started), 1);
    try {
      for (let i = 0; i < 40; i++) {
        block(10);
        await turns.after(64 << 10);
      }
    } finally {
      clearInterval(timer);
    }
    // 400 ms of 10 ms steps: a timer ran at least every ~60 ms (one step past the bound).
    expect(fired.length).toBeGreaterThanOrEqual(6);
    const gaps = fired.slice(1).map((t, i) => t - fired[i]);
    expect(Math.max(...gaps)).toBeLessThan(120);
  });

  it('come after YIELD_BYTES even when the work is fast', async () => {
    const turns = new EventLoopTurns();
    // A turn now restarts the clock, so the next 50 ms give none unless the bytes call for it.
    await turns.after(YIELD_BYTES);
    let ran = false;
    setImmediate(() => (ran = true));
    const started = performance.now();
    await turns.after(YIELD_BYTES - 1);
    if (performance.now() - started < YIELD_MS) expect(ran).toBe(false);
    await turns.after(1);
    expect(ran).toBe(true);
  });

  it('come between small reads made on the calling thread, with no loop counting them', async () => {
    const tmp = makeTempDir('vhdsync-turns-');
    try {
      const file = path.join(tmp.dir, 'f');
      fs.writeFileSync(file, Buffer.alloc(256 << 10, 1));
      const f = await localStore.open(file, 'read', { syncIo: true });
      const fired: number[] = [];
      const started = performance.now();
      const timer = setInterval(() => fired.push(performance.now()), 1);
      try {
        // Reads from the page cache, each slowed as a slow device would, for about 400 ms.
        while (performance.now() - started < 400) {
          await f.read(0, 4096);
          block(2);
        }
      } finally {
        clearInterval(timer);
        await f.close();
      }
      const gaps = fired.slice(1).map((t, i) => t - fired[i]);
      expect(fired.length).toBeGreaterThanOrEqual(4);
      expect(Math.max(...gaps, fired[0] - started)).toBeLessThan(120);
    } finally {
      tmp.cleanup();
    }
  });
});
