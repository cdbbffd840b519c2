/** Sector bitmap blocks ([MS-VHDX] 2.5.1.2): one bit per logical sector, LSB-first within each byte. */

/** True when sector bit `bit` is set. */
export function isSet(bitmap: Buffer, bit: number): boolean {
  return ((bitmap[bit >>> 3] >>> (bit & 7)) & 1) === 1;
}

/** Sets bits [from, to). */
export function setRange(bitmap: Buffer, from: number, to: number): void {
  let b = from;
  while (b < to && b & 7) bitmap[b >>> 3] |= 1 << (b++ & 7);
  if (b + 8 <= to) {
    bitmap.fill(0xff, b >>> 3, (to >>> 3));
    b = to & ~7;
  }
  while (b < to) bitmap[b >>> 3] |= 1 << (b++ & 7);
}

/** The end of the run of equal bits starting at `from`, no further than `to`. */
export function runEnd(bitmap: Buffer, from: number, to: number): number {
  const v = isSet(bitmap, from);
  const full = v ? 0xff : 0;
  let b = from + 1;
  while (b < to) {
    if ((b & 7) === 0 && b + 8 <= to && bitmap[b >>> 3] === full) {
      b += 8;
      continue;
    }
    if (isSet(bitmap, b) !== v) break;
    b++;
  }
  return b;
}
