/**
 * Turns for the event loop in loops that do their I/O on the calling thread (util/event-loop.ts, decision 0036):
 * timers (a lock's renewals) still run when the loop moves few bytes slowly, not only after every 16 MiB.
 */
import { EventLoopTurns, YIELD_BYTES, YIELD_MS, dueTurn } from '../../../src/util/event-loop.js';

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
    let ran = false;
    setImmediate(() => (ran = true));
    await turns.after(YIELD_BYTES - 1);
    expect(ran).toBe(false);
    await turns.after(1);
    expect(ran).toBe(true);
  });

  it('dueTurn gives a turn only when YIELD_MS have passed since the last one', async () => {
    await (dueTurn() ?? Promise.resolve());
    block(YIELD_MS + 5);
    let ran = false;
    setImmediate(() => (ran = true));
    const due = dueTurn();
    expect(due).not.toBeNull();
    await due;
    const after = performance.now();
    expect(ran).toBe(true);
    // Right after a turn none is due (unless this machine stalled for YIELD_MS in between).
    const next = dueTurn();
    if (performance.now() - after < YIELD_MS / 2) expect(next).toBeNull();
  });
});
