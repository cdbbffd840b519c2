/** Decoding onto a Disk: an encoder's input written into an image, and XAPI chunked frames applied to one. */
import type { Disk } from '../formats/disk.js';
import { writeNonZero, zeroGranularity } from '../formats/transfer.js';
import { CorruptImageError } from '../util/errors.js';
import { isAllZero } from '../util/struct.js';
import { PIECE, readPieces, splitRanges, type ContentSource } from './content.js';
import { FRAME_HEADER, parseFrameHeader } from './chunked.js';
import type { ForwardReader } from './forward-reader.js';

/** Options for writing onto a disk. */
export interface ApplyOptions {
  /** The disk reads as zeros where nothing is written (a new image): zero runs are skipped instead of written. */
  fresh?: boolean;
  /** Called with bytes of content handled. */
  onProgress?: (bytes: number) => void;
}

/** Writes a source's content onto `disk` (same virtual size); returns the bytes written. */
export async function writeContentOnto(source: ContentSource, disk: Disk, opts: ApplyOptions = {}): Promise<number> {
  if (source.virtualSize !== disk.virtualSize) {
    throw new CorruptImageError(`the source has ${source.virtualSize} bytes of virtual size, the image ${disk.virtualSize}`, source.name);
  }
  const gran = zeroGranularity(disk);
  let written = 0;
  for await (const p of readPieces(source, splitRanges(source.ranges))) {
    written += await writeOrZero(disk, p.offset, p.data, gran, opts);
    opts.onProgress?.(p.data.length);
  }
  await source.finish?.();
  return written;
}

async function writeOrZero(disk: Disk, offset: number, data: Buffer, gran: number, opts: ApplyOptions): Promise<number> {
  if (opts.fresh) return writeNonZero(disk, offset, data, gran);
  if (isAllZero(data)) await disk.writeZeroes(offset, data.length);
  else await disk.write(offset, data);
  return data.length;
}

/** What applying chunked frames did. */
export interface ChunkedStats {
  frames: number;
  bytes: number;
}

/**
 * Applies XAPI chunked frames onto `disk`: each frame's bytes at its offset, until the end marker (offset 0,
 * length 0). Frames past the disk's end, input ending before the marker, and bytes after it are refused.
 */
export async function applyChunked(r: ForwardReader, disk: Disk, opts: ApplyOptions = {}): Promise<ChunkedStats> {
  const gran = zeroGranularity(disk);
  const buf = Buffer.allocUnsafeSlow(PIECE);
  const stats: ChunkedStats = { frames: 0, bytes: 0 };
  for (;;) {
    const at = r.position;
    const { offset, length } = parseFrameHeader(await r.read(FRAME_HEADER, `chunked frame header ${stats.frames}`));
    if (offset === 0 && length === 0) break;
    if (offset + length > disk.virtualSize) {
      throw new CorruptImageError(`chunked frame ${stats.frames} at byte ${at} writes ${offset}+${length}, past the disk's end (${disk.virtualSize})`, r.name);
    }
    for (let done = 0; done < length; ) {
      const n = Math.min(PIECE, length - done);
      const data = await r.read(n, `chunked frame ${stats.frames}`, buf);
      await writeOrZero(disk, offset + done, data, gran, opts);
      opts.onProgress?.(n);
      done += n;
    }
    stats.frames++;
    stats.bytes += length;
  }
  if (!(await r.atEnd())) throw new CorruptImageError(`data after the chunked end marker at byte ${r.position}`, r.name);
  return stats;
}
