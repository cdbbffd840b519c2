import fc from 'fast-check';
import { formatGuidLE, formatGuidBE, parseGuidLE, parseGuidBE, newGuid, isGuidText } from '../../../src/util/guid.js';
import { crc32c, crc32cWithZeroedField } from '../../../src/util/crc32c.js';
import { isAllZero, readU64LE } from '../../../src/util/struct.js';
import { CorruptImageError } from '../../../src/util/errors.js';

describe('GUIDs', () => {
  it('formats the Microsoft little-endian layout as Windows prints it', () => {
    // The VHDX parent locator type GUID as stored on disk (MS-VHDX 2.6.2.6).
    const onDisk = Buffer.from('b7ef4ab09ed1814ab78925b8e9445913', 'hex');
    expect(formatGuidLE(onDisk)).toBe('b04aefb7-d19e-4a81-b789-25b8e9445913');
    expect(parseGuidLE('{B04AEFB7-D19E-4A81-B789-25B8E9445913}').equals(onDisk)).toBe(true);
  });
  it('round-trips random GUIDs in both layouts', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const b = Buffer.from(bytes);
        expect(parseGuidLE(formatGuidLE(b)).equals(b)).toBe(true);
        expect(parseGuidBE(formatGuidBE(b)).equals(b)).toBe(true);
      }),
    );
  });
  it('makes version-4 GUIDs', () => {
    const text = formatGuidLE(newGuid());
    expect(isGuidText(text)).toBe(true);
    expect(text[14]).toBe('4');
    expect('89ab').toContain(text[19]);
  });
});

describe('CRC-32C', () => {
  it('matches the standard check value', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
  });
  it('computes a checksum with its own field zeroed', () => {
    const b = Buffer.from('abcdefgh12345678');
    const expected = crc32c(Buffer.concat([b.subarray(0, 4), Buffer.alloc(4), b.subarray(8)]));
    expect(crc32cWithZeroedField(b, 4)).toBe(expected);
    expect(b.toString()).toBe('abcdefgh12345678');
  });
});

describe('struct helpers', () => {
  it('refuses 64-bit values a number cannot hold', () => {
    const b = Buffer.alloc(8, 0xff);
    expect(() => readU64LE(b, 0, 'size', 'x.vhdx')).toThrow(CorruptImageError);
    b.writeBigUInt64LE(2n ** 53n - 1n);
    expect(readU64LE(b, 0, 'size')).toBe(Number.MAX_SAFE_INTEGER);
  });
  it('detects all-zero buffers at any length and alignment', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 3 << 20 }), fc.nat(7), fc.option(fc.nat()), (len, shift, hit) => {
        const b = Buffer.alloc(len + shift).subarray(shift);
        if (hit !== null && len > 0) b[hit % len] = 1;
        expect(isAllZero(b)).toBe(hit === null || len === 0);
      }),
      { numRuns: 50 },
    );
  });
});
