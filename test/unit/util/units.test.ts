import fc from 'fast-check';
import { alignUp, formatSize, isPowerOfTwo, parseSize } from '../../../src/util/units.js';
import { UsageError } from '../../../src/util/errors.js';

describe('parseSize', () => {
  it.each([
    ['16GiB', 16 * 1024 ** 3],
    ['100M', 100 * 1024 ** 2],
    ['512K', 512 * 1024],
    ['512k', 512 * 1024],
    ['1.5G', 1.5 * 1024 ** 3],
    ['10MB', 10_000_000],
    ['4096', 4096],
    [' 2 MiB ', 2 * 1024 ** 2],
  ])('%s -> %d', (text, bytes) => expect(parseSize(text)).toBe(bytes));

  it.each(['', 'abc', '-1', '12X', '1.3', '1e3', '99999999999999999999'])('refuses %p with a UsageError', (text) => {
    expect(() => parseSize(text)).toThrow(UsageError);
  });

  it('round-trips any byte count written with a binary suffix', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1 << 20 }), fc.constantFrom(['K', 1024], ['MiB', 1024 ** 2], ['G', 1024 ** 3]), (n, [suf, mult]) => {
        expect(parseSize(`${n}${suf}`)).toBe(n * (mult as number));
      }),
    );
  });
});

describe('formatSize / isPowerOfTwo / alignUp', () => {
  it('formats sizes with binary units', () => {
    expect(formatSize(512)).toBe('512 B');
    expect(formatSize(16 * 1024 ** 3)).toBe('16 GiB');
    expect(formatSize(1536 * 1024)).toBe('1.50 MiB');
  });
  it('recognises powers of two only', () => {
    for (let i = 0; i < 52; i++) expect(isPowerOfTwo(2 ** i)).toBe(true);
    for (const n of [0, -2, 3, 6, 1000, 2 ** 20 + 1, 0.5, NaN]) expect(isPowerOfTwo(n)).toBe(false);
  });
  it('aligns up', () => {
    fc.assert(
      fc.property(fc.nat(1e12), fc.integer({ min: 1, max: 1 << 20 }), (n, a) => {
        const r = alignUp(n, a);
        expect(r % a).toBe(0);
        expect(r >= n && r - n < a).toBe(true);
      }),
    );
  });
});
