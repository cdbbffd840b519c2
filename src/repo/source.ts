/**
 * What a backup reads: an image (local, SMB), opened with its chain and hashed as `copy --createmeta` does, or a
 * forward-only stream (an HTTP export body) hashed block by block as it arrives. Both give the backup one pass that
 * yields every block in order, hashed, and writes the list of the whole disk.
 */
import type { DiskIdentity, OpenOptions } from '../formats/disk.js';
import { openDisk } from '../formats/open.js';
import { displayLocation, type Location } from '../io/location.js';
import { createMetafile, digestBlock, hashesDirectly, writeMetafile, zeroDigest, type HashedBlock } from '../meta/index.js';
import type { ContentSource } from '../stream/index.js';
import { ContentChangedError, UnsupportedError } from '../util/errors.js';
import { EarlyPass } from './early-pass.js';
import { isAllZero } from '../util/struct.js';

/** A stream opened only once the backup holds the disk's lock (so a wait for the lock never stalls a request). */
export interface StreamSource {
  readonly kind: 'stream';
  /** How the manifest and messages name it: no credentials, no session ids. */
  readonly display: string;
  /** Starts the transfer; `close` stops it (also after a failure half-way). */
  open(): Promise<{ content: ContentSource; logicalSectorSize: number; close(): Promise<void> }>;
}

/** An image location, or a stream. */
export type BackupSource = Location | StreamSource;

/** A block of the pass, hashed. */
export interface PassBlock extends HashedBlock {
  /** A data block's bytes (valid until onBlock returns): `data`, or read from the source when the pass did not. */
  bytes(): Promise<Buffer>;
}

/** The one pass: every block in order to `onBlock`, the list of the whole disk written to `target`. */
export interface PassOptions {
  algorithm: 'xxh128' | 'sha256';
  blockSize: number;
  target: Location;
  /**
   * The caller wants the bytes of a few blocks only (an incremental point: the changed ones): a local image is then
   * hashed without them, on the direct path (meta/hash-direct.ts), and `bytes()` reads a block again when asked.
   */
  fewBlocks?: boolean;
  onBlock: (b: PassBlock) => Promise<void>;
  onProgress?: (bytes: number) => void;
}

/** `b` as a PassBlock whose bytes are those it carries. */
function carried(b: HashedBlock): PassBlock {
  return Object.assign(b, { bytes: async () => b.data! });
}

/** An opened source. */
export interface OpenedSource {
  readonly display: string;
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  pass(opts: PassOptions): Promise<void>;
  /**
   * Starts hashing for a pass of `fewBlocks` with these settings now, beside the backup's other work (a local image
   * on the direct path only; repo/early-pass.ts). pass() takes it over when asked for the same; else it is dropped.
   */
  hashEarly?(algorithm: PassOptions['algorithm'], blockSize: number): Promise<void>;
  close(): Promise<void>;
}

/** True for a stream source. */
export function isStream(source: BackupSource): source is StreamSource {
  return (source as StreamSource).kind === 'stream';
}

/** How a source is named in the manifest and messages. */
export function sourceName(source: BackupSource): string {
  return isStream(source) ? source.display : displayLocation(source);
}

/**
 * What a stream's list records as its identity: nothing identifies one version of a stream, so the fields say only
 * that (the list is stamped with the new point's identity before it is kept anyway).
 */
const STREAM_IDENTITY: DiskIdentity = { format: 'raw', contentId: '', timestamp: 0, fileSize: 0, mtimeMs: 0 };

/** Opens a source for the backup pass. */
export async function openSource(source: BackupSource, open?: OpenOptions): Promise<OpenedSource> {
  if (!isStream(source)) {
    const disk = await openDisk(source, open);
    let early: EarlyPass | null = null;
    const dropEarly = async () => {
      const e = early;
      early = null;
      await e?.drop();
    };
    return {
      display: displayLocation(source),
      virtualSize: disk.virtualSize,
      logicalSectorSize: disk.logicalSectorSize,
      hashEarly: async (algorithm, blockSize) => {
        if (!early && (await hashesDirectly(disk))) early = new EarlyPass(disk, algorithm, blockSize);
      },
      // The identity taken before and after the pass refuses an image that changed under it (createMetafile).
      pass: async (o) => {
        const taken = o.fewBlocks === true && early?.algorithm === o.algorithm && early.blockSize === o.blockSize ? early : null;
        if (!taken) await dropEarly();
        const later = taken !== null || (o.fewBlocks === true && (await hashesDirectly(disk)));
        let scratch: Buffer | null = null;
        // A block read again must still be the one hashed: the list records that digest, the point these bytes.
        const reread = (b: HashedBlock) => async () => {
          scratch ??= Buffer.allocUnsafeSlow(o.blockSize);
          const data = await disk.read(b.offset, b.length, scratch.subarray(0, b.length));
          if (!digestBlock(o.algorithm, data).equals(b.digest)) {
            throw new ContentChangedError(`block ${b.index} changed while the image was being backed up; back it up again when nothing writes to it`, displayLocation(source));
          }
          return data;
        };
        const onBlock = later ? (b: HashedBlock) => o.onBlock(Object.assign(b, { bytes: reread(b) })) : (b: HashedBlock) => o.onBlock(carried(b));
        if (taken) await taken.drain(o.target, onBlock, o.onProgress);
        else await createMetafile(disk, { algorithm: o.algorithm, blockSize: o.blockSize, target: o.target, onBlock, withData: !later, onProgress: o.onProgress });
      },
      close: async () => {
        try {
          await dropEarly();
        } finally {
          await disk.close();
        }
      },
    };
  }
  const opened = await source.open();
  const { content } = opened;
  if (content.base) {
    await opened.close();
    throw new UnsupportedError('a delta stream cannot be backed up (export the whole disk, without base=)', source.display);
  }
  return {
    display: source.display,
    virtualSize: content.virtualSize,
    logicalSectorSize: opened.logicalSectorSize,
    pass: async (o) => {
      async function* records(): AsyncGenerator<HashedBlock> {
        for await (const b of hashContent(content, o.algorithm, o.blockSize)) {
          await o.onBlock(carried(b));
          o.onProgress?.(b.length);
          yield b;
        }
      }
      const meta = { layout: 'native', algorithm: o.algorithm, blockSize: o.blockSize, logicalSectorSize: opened.logicalSectorSize, virtualSize: content.virtualSize, identity: STREAM_IDENTITY } as const;
      await writeMetafile(o.target, meta, records());
    },
    close: () => opened.close(),
  };
}

/**
 * Every block of a stream's content in order, hashed: blocks outside its ranges are unallocated (zeros, not read),
 * the others are read from the stream into one block buffer. The stream's own end checks (a VHD stream's trailing
 * footer, a raw body's exact length) run after the last block: a point is only ever made of a complete stream.
 */
export async function* hashContent(source: ContentSource, algorithm: 'xxh128' | 'sha256', blockSize: number): AsyncGenerator<HashedBlock> {
  const { ranges, virtualSize } = source;
  const buffer = Buffer.allocUnsafeSlow(Math.min(blockSize, Math.max(1, virtualSize)));
  let r = 0;
  for (let index = 0; index * blockSize < virtualSize; index++) {
    const offset = index * blockSize;
    const length = Math.min(blockSize, virtualSize - offset);
    const end = offset + length;
    while (r < ranges.length && ranges[r].offset + ranges[r].length <= offset) r++;
    if (r >= ranges.length || ranges[r].offset >= end) {
      yield { index, offset, length, state: 'unallocated', read: false, digest: zeroDigest(algorithm, length) };
      continue;
    }
    const block = buffer.subarray(0, length);
    block.fill(0);
    for (let k = r; k < ranges.length && ranges[k].offset < end; k++) {
      const from = Math.max(offset, ranges[k].offset);
      const to = Math.min(end, ranges[k].offset + ranges[k].length);
      const into = block.subarray(from - offset, to - offset);
      const got = await source.read(from, to - from, into);
      if (got.buffer !== into.buffer || got.byteOffset !== into.byteOffset) got.copy(into);
    }
    if (isAllZero(block)) yield { index, offset, length, state: 'zero', read: true, digest: zeroDigest(algorithm, length) };
    else yield { index, offset, length, state: 'data', read: true, digest: digestBlock(algorithm, block), data: block };
  }
  await source.finish?.();
}
