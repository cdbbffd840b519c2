/**
 * A forward-only QCOW2 stream as a writer onto a Disk (a stream applied to an image: `serve` imports, `stream` into
 * a file) and as an encoder's input (a pipe re-encoded in one pass).
 */
import type { Disk } from '../formats/disk.js';
import { writeNonZero, zeroGranularity } from '../formats/transfer.js';
import { CorruptImageError, UnsupportedError } from '../util/errors.js';
import { isAllZero } from '../util/struct.js';
import { serialReads, type ContentSource } from './content.js';
import type { ForwardReader } from './forward-reader.js';
import { Qcow2StreamWalker, readQcow2StreamHead, type Qcow2StreamHead, type Qcow2StreamPiece } from './qcow2-stream.js';

/** What applying a QCOW2 stream did. */
export interface Qcow2ApplyStats {
  /** Bytes of data clusters written (all-zero ones included). */
  dataBytes: number;
  /** Bytes the image marked as zeros. */
  zeroBytes: number;
}

/**
 * Applies a QCOW2 stream onto `disk` (of the same virtual size or larger): its data clusters are written and its zero-flag clusters
 * zeroed; unallocated clusters leave the disk as it is, so a delta (an image with a backing file, or any image
 * carrying only some clusters) lands as a delta. `head` is the stream's head when the caller read it already.
 */
export async function applyQcow2Stream(r: ForwardReader, disk: Disk, opts: { fresh?: boolean; head?: Qcow2StreamHead } = {}): Promise<Qcow2ApplyStats> {
  const head = opts.head ?? (await readQcow2StreamHead(r));
  if (head.virtualSize > disk.virtualSize) {
    throw new CorruptImageError(`the stream's disk has ${head.virtualSize} bytes, more than the image's ${disk.virtualSize}`, r.name);
  }
  const gran = zeroGranularity(disk);
  const stats: Qcow2ApplyStats = { dataBytes: 0, zeroBytes: 0 };
  for await (const p of new Qcow2StreamWalker(r, head).pieces()) {
    if (p.kind === 'zero') {
      if (!opts.fresh) await disk.writeZeroes(p.offset, p.length);
      stats.zeroBytes += p.length;
    } else {
      if (opts.fresh) await writeNonZero(disk, p.offset, p.data, gran);
      else if (isAllZero(p.data)) await disk.writeZeroes(p.offset, p.data.length);
      else await disk.write(p.offset, p.data);
      stats.dataBytes += p.data.length;
    }
  }
  return stats;
}

/**
 * The content of a full QCOW2 stream (no backing file) whose tables all precede its data and whose data clusters
 * lie in guest order, as qcow2-to-stdout and our encoder write them: what an encoder needs to know before reading.
 */
export async function qcow2StreamContent(r: ForwardReader): Promise<ContentSource> {
  const head = await readQcow2StreamHead(r);
  if (head.backing !== null) {
    throw new UnsupportedError(`a QCOW2 stream with a backing file (${head.backing.slice(0, 80)}) is a delta that needs its base: it cannot be re-encoded from a pipe on its own`, r.name);
  }
  const walker = new Qcow2StreamWalker(r, head);
  const { data } = await walker.readAllTables();
  const pieces = walker.pieces();
  let current: (Qcow2StreamPiece & { kind: 'data' }) | null = null;
  const readNow = async (offset: number, length: number, out: Buffer): Promise<Buffer> => {
    for (let done = 0; done < length; ) {
      const pos = offset + done;
      while (!current || current.offset + current.data.length <= pos) {
        const n = await pieces.next();
        if (n.done) throw new Error(`internal: read past the last QCOW2 data cluster (${offset}+${length})`);
        if (n.value.kind === 'data') current = n.value;
      }
      if (current.offset > pos) throw new Error(`internal: read of QCOW2 guest offset ${pos}, which the stream does not carry`);
      const n = Math.min(length - done, current.offset + current.data.length - pos);
      current.data.copy(out, done, pos - current.offset, pos - current.offset + n);
      done += n;
    }
    return out;
  };
  const reads = serialReads(readNow);
  return {
    virtualSize: head.virtualSize,
    ranges: data,
    base: null,
    name: r.name,
    // Read in order from one stream: a read ahead could only wait for this one.
    readsInFlight: 1,
    read: reads.read,
    async finish() {
      await reads.idle();
      for (;;) if ((await pieces.next()).done) break;
    },
  };
}
