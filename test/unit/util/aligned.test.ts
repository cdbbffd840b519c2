/**
 * Aligned and populated buffers (src/util/aligned.ts, native/memory.c): what the local store writes from directly and
 * what large reads go into. Sizes from 1 byte to a few MiB, with and without the memory helper: always the length
 * asked for, zeroed where promised, page aligned and registered as direct sources where promised.
 */
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { allocAligned, allocForRead, directSource, PAGE } from '../../../src/util/aligned.js';
import { requireTool } from '../../helpers/tools.js';

const helperPath = '../../../build/native/memory.node';
const helper = (() => {
  try {
    return createRequire(import.meta.url)(helperPath) as { populated(size: number): ArrayBuffer };
  } catch {
    return null;
  }
})();

describe('aligned buffers', () => {
  it('are zeroed, page aligned and written from directly, at any size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 << 20 }), (size) => {
        const b = allocAligned(size);
        expect(b.length).toBe(size);
        expect(b.byteOffset % PAGE).toBe(0);
        expect(b.every((x) => x === 0)).toBe(true);
        expect(directSource(b, 0)).toBe(b);
        b.fill(0xa5);
        expect(b[size - 1]).toBe(0xa5);
      }),
      { numRuns: 25 },
    );
  });

  it('for reads: the length asked for, writable to its end', () => {
    for (const size of [1, 4095, 1 << 20, (1 << 20) + 1, 3_000_000]) {
      const b = allocForRead(size);
      expect(b.length).toBe(size);
      b.fill(7);
      expect(b[size - 1]).toBe(7);
    }
  });
});

describe('the memory helper (native/memory.c)', () => {
  const have = () => requireTool(helper !== null, 'the memory helper (scripts/build-native.js: cc and Node headers)');

  it('maps zeroed memory of the size asked for and refuses sizes it must not map', () => {
    if (!have()) return;
    const ab = helper!.populated(3 << 20);
    const b = Buffer.from(ab);
    expect(b.length).toBe(3 << 20);
    expect(b.every((x) => x === 0)).toBe(true);
    for (const bad of [0, -1, 2 ** 31, 1.5e12]) expect(() => helper!.populated(bad)).toThrow(/size from 1 byte to 1 GiB/);
    expect(() => (helper!.populated as (x: unknown) => unknown)('1')).toThrow(/size from 1 byte to 1 GiB/);
  });

  it('gives back what it mapped: a thousand 4 MiB buffers made and dropped leave the resident size flat', () => {
    if (!have()) return;
    // In a child with --expose-gc, so collection can be forced; Node-API runs the finalizers (munmap) on a later turn
    // of the event loop, as the CLI's loops give it.
    const script = `
      const { populated } = require(process.argv[1]);
      (async () => {
        const rss0 = process.memoryUsage().rss;
        for (let i = 0; i < 1000; i++) {
          Buffer.from(populated(4 << 20)).fill(1);
          if (i % 50 === 0) { global.gc(); await new Promise((r) => setImmediate(r)); }
        }
        global.gc();
        await new Promise((r) => setImmediate(r));
        console.log(Math.round((process.memoryUsage().rss - rss0) / 1048576));
      })();`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script, createRequire(import.meta.url).resolve(helperPath)], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(Number(r.stdout.trim())).toBeLessThan(256);
  });
});
