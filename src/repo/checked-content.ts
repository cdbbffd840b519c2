/**
 * A restore point as an encoder's input (restore to an HTTP PUT), with every block of the point's metafile checked
 * before any byte of it is handed to the encoder: blocks the stream leaves out (they go as zeros) must be zeros in
 * the list, and are all checked before the stream starts (an encoder sends its last byte right after its last read,
 * so a check left for the end would come after a complete upload); blocks the stream carries are read whole from the
 * point and their digests compared as they are read. A failed check throws out of the encoder, so the request is cut
 * short and a server that commits only complete uploads keeps its disk.
 */
import { digestBlock, zeroDigest, type Metafile } from '../meta/index.js';
import { normalizeRanges, serialReads, type ByteRange, type ContentSource } from '../stream/index.js';
import { DigestCursor } from '../sync/plan.js';
import type { Disk } from '../formats/disk.js';

/** The parts of `ranges` outside `zeros` (both sorted): what an encoder must read. */
function* dataParts(ranges: readonly ByteRange[], zeros: readonly ByteRange[]): Generator<ByteRange> {
  let zi = 0;
  for (const r of ranges) {
    let at = r.offset;
    const end = r.offset + r.length;
    while (at < end) {
      while (zi < zeros.length && zeros[zi].offset + zeros[zi].length <= at) zi++;
      const z = zeros[zi];
      if (!z || z.offset >= end) {
        yield { offset: at, length: end - at };
        break;
      }
      if (z.offset > at) yield { offset: at, length: z.offset - at };
      at = Math.min(end, z.offset + z.length);
    }
  }
}

/**
 * Checks, before the stream starts, that every block no read of the stream will touch (wholly outside the data
 * parts of its ranges) is zeros in `list`: the stream sends zeros for it.
 */
async function checkLeftOut(inner: ContentSource, list: Metafile, damaged: (why: string) => Error): Promise<void> {
  const { algorithm, blockSize } = list.summary;
  const cursor = new DigestCursor(list);
  const count = Math.ceil(inner.virtualSize / blockSize);
  const lengthOf = (index: number) => Math.min(blockSize, inner.virtualSize - index * blockSize);
  const parts = dataParts(normalizeRanges(inner.ranges), normalizeRanges(inner.zeros ?? []));
  let part = parts.next();
  for (let index = 0; index < count; index++) {
    const start = index * blockSize;
    while (!part.done && part.value.offset + part.value.length <= start) part = parts.next();
    if (!part.done && part.value.offset < start + lengthOf(index)) continue;
    if (!(await cursor.digest(index)).equals(zeroDigest(algorithm, lengthOf(index)))) {
      throw damaged(`block ${index} at offset ${start} reads as zeros but its metafile lists data`);
    }
  }
}

/**
 * `inner` (content of `image`) with every block checked against `list`; `damaged` makes the error for a block. The
 * blocks the stream leaves out are checked here, before it is returned, so a damage among them fails before any byte.
 */
export async function checkedContent(inner: ContentSource, image: Disk, list: Metafile, damaged: (why: string) => Error): Promise<ContentSource> {
  await checkLeftOut(inner, list, damaged);
  const { algorithm, blockSize } = list.summary;
  const cursor = new DigestCursor(list);
  const count = Math.ceil(inner.virtualSize / blockSize);
  const block = Buffer.allocUnsafeSlow(Math.min(blockSize, Math.max(1, inner.virtualSize)));
  /** Blocks below this index are checked; `cached` is the one whose bytes are in `block`. */
  let checked = 0;
  let cached = -1;
  const lengthOf = (index: number) => Math.min(blockSize, inner.virtualSize - index * blockSize);

  /** Checks blocks the stream skipped (sent as zeros; checkLeftOut vouched for them already) up to, not including, `upTo`. */
  const skipTo = async (upTo: number) => {
    for (; checked < upTo; checked++) {
      if (!(await cursor.digest(checked)).equals(zeroDigest(algorithm, lengthOf(checked)))) {
        throw damaged(`block ${checked} at offset ${checked * blockSize} reads as zeros but its metafile lists data`);
      }
    }
  };
  /** Reads block `index` whole into `block` and checks it. */
  const load = async (index: number) => {
    await skipTo(index);
    const bytes = block.subarray(0, lengthOf(index));
    const got = await image.read(index * blockSize, bytes.length, bytes);
    if (got.buffer !== bytes.buffer || got.byteOffset !== bytes.byteOffset) got.copy(bytes);
    if (!digestBlock(algorithm, bytes).equals(await cursor.digest(index))) {
      throw damaged(`block ${index} at offset ${index * blockSize} differs from its metafile`);
    }
    cached = index;
    checked = index + 1;
  };
  const readNow = async (offset: number, length: number, out: Buffer): Promise<Buffer> => {
    for (let done = 0; done < length; ) {
      const index = Math.floor((offset + done) / blockSize);
      if (index !== cached) {
        if (index < checked) throw new Error(`internal: read of block ${index} after block ${checked - 1} (reads must ascend)`);
        await load(index);
      }
      const inBlock = offset + done - index * blockSize;
      const n = Math.min(length - done, lengthOf(index) - inBlock);
      block.copy(out, done, inBlock, inBlock + n);
      done += n;
    }
    return out;
  };
  const reads = serialReads(readNow);
  return {
    virtualSize: inner.virtualSize,
    ranges: inner.ranges,
    base: null,
    zeros: inner.zeros,
    name: inner.name,
    read: reads.read,
    async finish() {
      await reads.idle();
      await skipTo(count);
      await inner.finish?.();
    },
  };
}
