/** Shared pieces of the stream tests: random sparse disks, collecting an encoded stream, reading it back. */
import fc from 'fast-check';
import { ForwardReader } from '../../../src/stream/forward-reader.js';
import type { EncodedStream } from '../../../src/stream/encoded.js';
import { MemDisk } from '../sync/mem-disk.js';

export const SECTOR = 512;
export const MIB = 1 << 20;

/** A write of random bytes, or a zeroing, in whole sectors. */
export type DiskOp = { zero: boolean; sector: number; count: number; seed: number };

/** Random ops on a disk of `sectors` sectors: runs from one sector to a few MiB, some zeroings. */
export function diskOps(sectors: number): fc.Arbitrary<DiskOp[]> {
  const op = fc
    .record({
      zero: fc.integer({ min: 0, max: 3 }).map((x) => x === 0),
      sector: fc.integer({ min: 0, max: sectors - 1 }),
      count: fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 9000 })),
      seed: fc.nat(),
    })
    .map((o) => ({ ...o, count: Math.min(o.count, sectors - o.sector) }));
  return fc.array(op, { minLength: 0, maxLength: 8 });
}

/** Applies ops; data bytes are a cheap pattern of the seed (never all zeros). */
export async function applyOps(disk: MemDisk, ops: DiskOp[]): Promise<void> {
  for (const o of ops) {
    if (o.zero) await disk.writeZeroes(o.sector * SECTOR, o.count * SECTOR);
    else await disk.write(o.sector * SECTOR, patternBytes(o.count * SECTOR, o.seed));
  }
}

/** Deterministic non-zero bytes. */
export function patternBytes(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (seed | 1) >>> 0;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeUInt32LE(x >>> 0, Math.min(i, length - 4));
  }
  b[0] |= 1;
  return b;
}

/** Every byte of an encoded stream, zero chunks expanded. */
export async function collect(stream: EncodedStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream.chunks()) parts.push(typeof c === 'number' ? Buffer.alloc(c) : Buffer.from(c));
  return Buffer.concat(parts);
}

/** A forward-only reader over bytes, delivered in pieces of random-ish sizes as a pipe would. */
export function readerOf(bytes: Buffer, opts: { length?: number | null; piece?: number } = {}): ForwardReader {
  const piece = opts.piece ?? 65531;
  async function* gen() {
    for (let o = 0; o < bytes.length; o += piece) yield bytes.subarray(o, Math.min(bytes.length, o + piece));
  }
  return new ForwardReader(gen(), 'stream', opts.length === undefined ? null : opts.length);
}

/** A copy of a disk's content in a new parentless MemDisk. */
export async function copyOf(disk: MemDisk): Promise<MemDisk> {
  const c = new MemDisk(disk.virtualSize);
  await c.write(0, await disk.content());
  return c;
}
