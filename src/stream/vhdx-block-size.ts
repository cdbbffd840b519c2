/** The VHDX stream's block size, apart from its encoder: choosing a full stream's zero-scan granule needs only this. */
const MIB = 1 << 20;
/** Past this many payload blocks, blocks grow (up to 256 MiB) so the BAT held in memory stays small (8 MiB at most here). */
const MAX_PAYLOAD_BLOCKS = 1 << 20;
const MIN_BLOCK = 2 * MIB;
const MAX_BLOCK = 256 * MIB;

/** The block size of a VHDX stream of a disk of `virtualSize` bytes: 2 MiB (the VHD stream's granularity) unless the disk is over 2 TiB. */
export function vhdxStreamBlockSize(virtualSize: number): number {
  let bs = MIN_BLOCK;
  while (bs < MAX_BLOCK && Math.ceil(virtualSize / bs) > MAX_PAYLOAD_BLOCKS) bs *= 2;
  return bs;
}
