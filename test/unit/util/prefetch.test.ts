import fc from 'fast-check';
import { prefetch } from '../../../src/util/prefetch.js';

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('prefetch', () => {
  it('yields every result in order with at most `depth` loads running, none started before the consumer asks', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(3), { maxLength: 30 }), fc.integer({ min: 1, max: 4 }), async (delays, depth) => {
        let running = 0;
        let maxRunning = 0;
        let consumed = -1;
        const started: number[] = [];
        const load = async (i: number) => {
          started.push(i);
          // A load may start only when fewer than `depth` results are unconsumed (so rotating depth+1 buffers is safe).
          expect(i - consumed).toBeLessThanOrEqual(depth);
          running++;
          maxRunning = Math.max(maxRunning, running);
          await tick(delays[i]);
          running--;
          return i * 10;
        };
        const seen: number[] = [];
        for await (const { item, value } of prefetch(delays.keys(), load, depth)) {
          expect(value).toBe(item * 10);
          seen.push(item);
          await tick(1);
          consumed = item;
        }
        expect(seen).toEqual([...delays.keys()]);
        expect(maxRunning).toBeLessThanOrEqual(depth);
      }),
      { numRuns: 40 },
    );
  });

  it('passes a failed load to the consumer at its turn, without unhandled rejections', async () => {
    const load = async (i: number) => {
      if (i === 2) throw new Error('read failed');
      return i;
    };
    const seen: number[] = [];
    await expect(
      (async () => {
        for await (const { value } of prefetch([0, 1, 2, 3, 4], load, 3)) seen.push(value);
      })(),
    ).rejects.toThrow('read failed');
    expect(seen).toEqual([0, 1]);
  });
});
