/** VHD's checksum rule, shared by the footer and the dynamic header. */

/** One's complement of the byte sum of `bytes`, counting the 4 bytes at `fieldOffset` as zero. */
export function vhdChecksum(bytes: Uint8Array, fieldOffset: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (i < fieldOffset || i >= fieldOffset + 4) sum += bytes[i];
  }
  return ~sum >>> 0;
}

/** Formats a checksum for messages. */
export function hex32(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}
