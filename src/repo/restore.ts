/** `restore`: writes a disk as it was at a restore point into a new image of any format, checked against the point's list. */
import type { DiskFormat } from '../formats/disk.js';
import { createDisk } from '../formats/open.js';
import { writeNonZero, zeroGranularity } from '../formats/transfer.js';
import { writeAtomically } from '../io/atomic.js';
import { displayLocation, type Location } from '../io/location.js';
import { encode, fullContent, type EncodedStream, type StreamFormat } from '../stream/index.js';
import type { RepoBackend } from './backend.js';
import { checkedContent } from './checked-content.js';
import { resolvePoint } from './names.js';
import { assertSettled, checkedBlocks, damaged, manifestFor, openChecked, type OpenedPoint } from './point-check.js';
import type { RestorePoint } from './manifest.js';

/** A destination that takes a stream (an HTTP PUT), sent by the caller. */
export interface StreamTarget {
  readonly kind: 'stream';
  /** How messages name it: no credentials. */
  readonly display: string;
  readonly format: StreamFormat;
  /** QCOW2 zeroed clusters as data (XAPI's import ignores zero flags). */
  readonly zerosAsData?: boolean;
  /** Sends the stream; a stream that fails half-way must leave the receiver without a complete upload. */
  send(stream: EncodedStream, onProgress: (bytes: number) => void): Promise<void>;
}

/** Options for restorePoint. */
export interface RestoreOptions {
  /** A point id or a time (the newest point at or before it); default the newest point. */
  at?: string;
  /** Output format of an image; a stream target names its own. */
  format?: DiskFormat;
  /** Replace DST if it exists. */
  force?: boolean;
  /** Check every block against the point's metafile (default); false writes the content unchecked. */
  verify?: boolean;
  onTotal?: (bytes: number) => void;
  onProgress?: (bytes: number) => void;
}

/** What a restore did. */
export interface RestoreSummary {
  disk: string;
  point: string;
  time: string;
  destination: string;
  format: DiskFormat | StreamFormat;
  virtualSize: number;
  bytesWritten: number;
  verified: boolean;
  seconds: number;
}

function isStreamTarget(dst: Location | StreamTarget): dst is StreamTarget {
  return (dst as StreamTarget).kind === 'stream';
}

/**
 * Restores `disk` at a point into `dst`: an image written under a temp name (a failed restore leaves nothing), or a
 * stream target that gets the point encoded once a read pass has checked every block (and checked again as sent).
 */
export async function restorePoint(repo: RepoBackend, disk: string, dst: Location | StreamTarget, opts: RestoreOptions): Promise<RestoreSummary> {
  const started = Date.now();
  const m = await manifestFor(repo, disk);
  const point = resolvePoint(m.points, opts.at, disk);
  assertSettled(repo, m, point);
  const verify = opts.verify !== false;
  const opened = await openChecked(repo, disk, point, verify);
  try {
    const { image } = opened;
    if (isStreamTarget(dst)) {
      const bytes = await sendPoint(repo, disk, point, opened, dst, opts);
      return { disk, point: point.id, time: point.time, destination: dst.display, format: dst.format, virtualSize: image.virtualSize, bytesWritten: bytes, verified: verify, seconds: (Date.now() - started) / 1000 };
    }
    const format = opts.format ?? 'raw';
    opts.onTotal?.(image.virtualSize);
    const bytesWritten = await writeAtomically(
      dst,
      async (temp) => {
        const out = await createDisk(temp, {
          format,
          type: 'dynamic',
          virtualSize: image.virtualSize,
          logicalSectorSize: format === 'vhdx' ? image.logicalSectorSize : undefined,
          finalLocation: dst,
        });
        let written = 0;
        try {
          const gran = zeroGranularity(out);
          for await (const b of checkedBlocks(repo, disk, point, opened, true)) {
            if (b.state === 'data') written += await writeNonZero(out, b.offset, b.data!, gran);
            opts.onProgress?.(b.length);
          }
        } finally {
          await out.close();
        }
        return written;
      },
      { overwrite: opts.force },
    );
    return { disk, point: point.id, time: point.time, destination: displayLocation(dst), format, virtualSize: image.virtualSize, bytesWritten, verified: verify, seconds: (Date.now() - started) / 1000 };
  } finally {
    await opened.close();
  }
}

/** Checks the whole point, then encodes it for a stream target and sends it; returns the stream's length. */
async function sendPoint(repo: RepoBackend, disk: string, point: RestorePoint, opened: OpenedPoint, dst: StreamTarget, opts: RestoreOptions): Promise<number> {
  if (opened.list) {
    // A target that writes in place (XAPI's import_raw_vdi, serve into a raw disk) keeps what it got before a damage
    // is found: a read pass over the whole point first, so a damaged point is refused before the first byte.
    for await (const b of checkedBlocks(repo, disk, point, opened, false)) void b;
  }
  const plain = await fullContent(opened.image, dst.format);
  const content = opened.list ? await checkedContent(plain, opened.image, opened.list, (why) => damaged(repo, disk, point, why)) : plain;
  const stream = await encode(dst.format, content, { zerosAsData: dst.zerosAsData });
  opts.onTotal?.(stream.length);
  await dst.send(stream, (n) => opts.onProgress?.(n));
  return stream.length;
}
