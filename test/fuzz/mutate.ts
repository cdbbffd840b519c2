/**
 * Structure-aware mutations. A seed comes with a Layout: the fields of its parsed structures (offset, width,
 * byte order), the checksums that cover them, and the regions worth corrupting. A Mutation names these by index
 * (taken modulo the seed's counts), so the same fast-check value applies to any seed and shrinks well.
 */
import fc from 'fast-check';
import { crc32c } from '../../src/util/crc32c.js';
import { vhdChecksum } from '../../src/formats/vhd/checksum.js';
import type { PagedImage } from './memory-store.js';

/** An integer (or opaque bytes when wider than 8) field of a structure, at an absolute file offset. */
export interface Field {
  name: string;
  at: number;
  size: number;
  le: boolean;
}

/** A checksum stored at `field`, computed over [start, start+length) with the field itself zeroed when inside. */
export interface Checksum {
  name: string;
  kind: 'vhd' | 'crc32c';
  start: number;
  length: number;
  field: number;
}

/** A byte range worth flipping bits in or splicing (a structure, a table, a data area). */
export interface Region {
  name: string;
  at: number;
  length: number;
}

/** What a seed's structures look like. */
export interface Layout {
  fields: Field[];
  checksums: Checksum[];
  regions: Region[];
}

/** One change to a seed; indices are resolved modulo what the seed has. */
export type Mutation =
  | { k: 'field'; i: number; v: number; r: bigint; fix: boolean }
  | { k: 'flip'; i: number; off: number; x: number; fix: boolean }
  | { k: 'trunc'; i: number; d: number }
  | { k: 'splice'; i: number; j: number; len: number; fix: boolean }
  | { k: 'extend'; n: number };

/** Three times out of four a mutation gets the checksums over it recomputed, so it reaches the code behind them. */
const fixArb = fc.nat(3).map((n) => n > 0);

/** Fast-check values for mutations: mostly field edits. */
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('field' as const), i: fc.nat(), v: fc.nat(40), r: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fix: fixArb }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('flip' as const), i: fc.nat(), off: fc.nat(), x: fc.integer({ min: 1, max: 255 }), fix: fixArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('trunc' as const), i: fc.nat(), d: fc.integer({ min: -2, max: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('splice' as const), i: fc.nat(), j: fc.nat(), len: fc.nat(), fix: fixArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('extend' as const), n: fc.integer({ min: 1, max: 1 << 21 }) }) },
);

/** 1 to `max` mutations. */
export function mutationsArb(max = 6): fc.Arbitrary<Mutation[]> {
  return fc.array(mutationArb, { minLength: 1, maxLength: max });
}

function readUint(img: PagedImage, f: Field): bigint {
  const b = img.slice(f.at, Math.min(f.size, 8));
  let v = 0n;
  for (let i = 0; i < b.length; i++) v |= BigInt(b[f.le ? i : b.length - 1 - i]) << BigInt(8 * i);
  return v;
}

function encode(v: bigint, size: number, le: boolean): Buffer {
  const b = Buffer.alloc(size);
  const mask = (1n << BigInt(8 * size)) - 1n;
  let x = ((v % (mask + 1n)) + (mask + 1n)) & mask;
  for (let i = 0; i < size; i++) {
    b[le ? i : size - 1 - i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return b;
}

/** The interesting values for a field: boundaries, the original nudged, the file size, powers of two, random. */
function fieldValue(img: PagedImage, f: Field, v: number, r: bigint, layout: Layout): Buffer {
  if (f.size > 8) {
    switch (v % 4) {
      case 0:
        return Buffer.alloc(f.size);
      case 1:
        return Buffer.alloc(f.size, 0xff);
      case 2: {
        // Another field of the same width (a GUID copied into another GUID's place links structures wrongly).
        const same = layout.fields.filter((g) => g.size === f.size && g.at !== f.at);
        if (same.length) {
          const g = same[Number(r % BigInt(same.length))];
          return img.slice(g.at, g.size);
        }
        return encode(r, f.size, true);
      }
      default: {
        const b = Buffer.alloc(f.size);
        for (let i = 0; i < f.size; i++) b[i] = Number((r >> BigInt((i % 8) * 8)) & 0xffn) ^ i;
        return b;
      }
    }
  }
  const o = readUint(img, f);
  const size = BigInt(img.size);
  const bits = BigInt(8 * f.size);
  const choices: bigint[] = [
    0n, 1n, o + 1n, o - 1n, o * 2n, o / 2n, o + 512n, o - 512n, o + 4096n, o + (1n << 20n), o - (1n << 20n),
    size, size - 512n, size + 512n, size / 2n, size / 512n, (1n << bits) - 1n, 1n << (bits - 1n), (1n << (bits - 1n)) - 1n,
    1n << 31n, 1n << 32n, (1n << 32n) - 1n, 1n << 53n, (1n << 53n) + 1n, 1n << 20n, 1n << 21n, 1n << 28n, 511n, 4095n,
    o + (r % 4096n), o ^ (1n << (r % bits)), r,
  ];
  const value = v < choices.length ? choices[v] : 1n << BigInt(v % Number(bits));
  return encode(value, f.size, f.le);
}

function pick<T>(items: T[], i: number): T | undefined {
  return items.length ? items[i % items.length] : undefined;
}

/** Recomputes a checksum in place. */
export function fixChecksum(img: PagedImage, c: Checksum): void {
  const bytes = img.slice(c.start, c.length);
  const inside = c.field >= c.start && c.field + 4 <= c.start + c.length;
  if (inside) bytes.fill(0, c.field - c.start, c.field - c.start + 4);
  const sum = c.kind === 'vhd' ? vhdChecksum(bytes, inside ? c.field - c.start : -8) : crc32c(bytes);
  const out = Buffer.alloc(4);
  if (c.kind === 'vhd') out.writeUInt32BE(sum >>> 0);
  else out.writeUInt32LE(sum >>> 0);
  img.write(c.field, out);
}

/**
 * Applies mutations to `img` (a private clone) and, for each mutation that asks, recomputes the checksums
 * covering the bytes it changed, so the mutation gets past the checksum to the code behind it.
 */
export function applyMutations(img: PagedImage, layout: Layout, muts: Mutation[]): void {
  const fixes = new Set<Checksum>();
  const touched = (at: number, len: number, fix: boolean) => {
    if (!fix) return;
    for (const c of layout.checksums) if (at < c.start + c.length && at + len > c.start && !(at === c.field && len === 4)) fixes.add(c);
  };
  const anywhere: Region = { name: 'file', at: 0, length: img.size };
  const regions = [...layout.regions, anywhere];
  for (const m of muts) {
    switch (m.k) {
      case 'field': {
        const f = pick(layout.fields, m.i);
        if (!f) break;
        img.write(f.at, fieldValue(img, f, m.v, m.r, layout));
        touched(f.at, f.size, m.fix);
        break;
      }
      case 'flip': {
        const r = pick(regions, m.i)!;
        if (r.length <= 0) break;
        const at = r.at + (m.off % r.length);
        const b = img.slice(at, 1);
        b[0] ^= m.x;
        img.write(at, b);
        touched(at, 1, m.fix);
        break;
      }
      case 'trunc': {
        const ends = [...regions.map((r) => r.at), ...regions.map((r) => r.at + r.length), img.size - 1, img.size - 511, img.size - 512];
        const to = Math.max(0, (pick(ends, m.i) ?? 0) + m.d * 512 + (m.i % 3 === 0 ? m.d : 0));
        if (to < img.size) img.truncate(to);
        break;
      }
      case 'splice': {
        const a = pick(regions, m.i)!;
        const b = pick(regions, m.j)!;
        const len = Math.min(a.length, b.length, 1 + (m.len % (1 << 20)));
        if (len <= 0 || a === b) break;
        img.write(b.at, img.slice(a.at, len));
        touched(b.at, len, m.fix);
        break;
      }
      case 'extend': {
        img.truncate(img.size + m.n);
        break;
      }
    }
  }
  for (const c of fixes) if (c.start + c.length <= img.size) fixChecksum(img, c);
  // A checksum stored inside a structure another checksum covers (a metafile's table CRC in its header) changed
  // that structure too.
  for (const c of fixes) {
    for (const d of layout.checksums) {
      if (d !== c && c.field >= d.start && c.field < d.start + d.length && d.start + d.length <= img.size) fixChecksum(img, d);
    }
  }
}

/** Helper for layouts: the fields of a structure at `base` from a table of [name, offset, size]. */
export function fieldsAt(prefix: string, base: number, le: boolean, table: Array<[string, number, number]>): Field[] {
  return table.map(([name, at, size]) => ({ name: `${prefix}.${name}`, at: base + at, size, le }));
}
