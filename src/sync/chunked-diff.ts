/**
 * A diff as XAPI chunked frames in one file, `<target file name>_diff.chunked` (issue 14 item 4): what `copy
 * --diff-format chunked` writes for slow links (its size follows the changed bytes: 12 bytes of header per frame),
 * `merge` applies through the same engine as a VHD or VHDX diff, and `serve` imports as `chunked` frames.
 * Frames (stream/chunked.ts): {offset u64, length u32} then the bytes, ascending and not overlapping, ended by a
 * header of zeros. The file names no parent: its metafile's parent identity (version 2 or 3) says which image it
 * belongs to, and merge finds that image next to the diff by name (the diff's name without `_diff.chunked`).
 */
import type { Disk, DiskIdentity, DiskInfo, Extent, StatusOptions } from '../formats/disk.js';
import type { Location } from '../io/location.js';
import { displayLocation } from '../io/location.js';
import type { RandomAccessFile } from '../io/store.js';
import { FRAME_HEADER, frameHeader, parseFrameHeader } from '../stream/chunked.js';
import { crc32c } from '../util/crc32c.js';
import { CorruptImageError, UnsupportedError } from '../util/errors.js';

/** The file name ending of chunked diffs. */
export const CHUNKED_EXTENSION = '.chunked';
/** Frames carry at most this many bytes (a zero range is written in frames of zeros this large). */
const FRAME_MAX = 4 << 20;

const DIFF_SUFFIX = `_diff${CHUNKED_EXTENSION}`;

/** True when `path` names a chunked diff. */
export function isChunkedDiff(path: string): boolean {
  return path.endsWith(DIFF_SUFFIX) && path.length > DIFF_SUFFIX.length;
}

/** The chunked diff's file name for a target file name: `disk.vhdx` -> `disk.vhdx_diff.chunked`. */
export function chunkedDiffName(targetName: string): string {
  return targetName + DIFF_SUFFIX;
}

/** The image a chunked diff belongs to: its path without `_diff.chunked`. */
export function chunkedParentPath(diffPath: string): string {
  return diffPath.slice(0, -DIFF_SUFFIX.length);
}

/** Writes frames into a new file, in the order given (ascending); the `write`/`writeZeroes` a copy needs. */
export class ChunkedDiffWriter {
  private pos = 0;
  private end = 0;
  private readonly zeros = Buffer.alloc(1 << 20);

  constructor(
    private readonly file: RandomAccessFile,
    private readonly virtualSize: number,
  ) {}

  /** Appends `data` at virtual `offset` as frames. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (offset < this.end || offset + data.length > this.virtualSize) throw new RangeError(`chunked diff writes must ascend inside the disk (at ${offset})`);
    for (let at = 0; at < data.length; at += FRAME_MAX) {
      const part = data.subarray(at, Math.min(at + FRAME_MAX, data.length));
      await this.file.write(this.pos, frameHeader(offset + at, part.length));
      await this.file.write(this.pos + FRAME_HEADER, part);
      this.pos += FRAME_HEADER + part.length;
    }
    this.end = offset + data.length;
  }

  /** Frames have no zero marker: zeros travel as bytes. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    for (let at = 0; at < length; at += this.zeros.length) await this.write(offset + at, this.zeros.subarray(0, Math.min(this.zeros.length, length - at)));
  }

  /** Writes the end frame and makes the file durable; returns its size. */
  async finish(): Promise<number> {
    await this.file.write(this.pos, Buffer.alloc(FRAME_HEADER));
    this.pos += FRAME_HEADER;
    await this.file.flush();
    return this.pos;
  }
}

interface Frame {
  offset: number;
  length: number;
  /** Where its bytes start in the file. */
  at: number;
}

/**
 * Reads a chunked diff's frame headers, every bound checked against the file and the disk's size before use. Its
 * content id is derived from the file's size and the CRC-32C of its frame headers (what its metafile records).
 */
export async function scanChunkedDiff(file: RandomAccessFile, location: Location, virtualSize: number): Promise<{ frames: Frame[]; identity: DiskIdentity }> {
  const subject = displayLocation(location);
  const size = await file.size();
  const frames: Frame[] = [];
  let pos = 0;
  let prevEnd = 0;
  let crc = 0;
  for (;;) {
    if (pos + FRAME_HEADER > size) throw new CorruptImageError(`truncated chunked diff: no end frame after ${frames.length} frames`, subject);
    const head = await file.read(pos, FRAME_HEADER);
    crc = crc32c(head, crc);
    const { offset, length } = parseFrameHeader(head);
    pos += FRAME_HEADER;
    if (offset === 0 && length === 0) break;
    if (length === 0 || offset < prevEnd || offset + length > virtualSize || pos + length > size) {
      throw new CorruptImageError(`frame ${frames.length} (offset ${offset}, ${length} bytes) is out of order, past the disk's ${virtualSize} bytes or past the file's end`, subject);
    }
    frames.push({ offset, length, at: pos });
    pos += length;
    prevEnd = offset + length;
  }
  if (pos !== size) throw new CorruptImageError(`${size - pos} bytes after the end frame`, subject);
  const st = await location.store.stat(location.path);
  const identity: DiskIdentity = { format: 'raw', contentId: `chunked-${size}-${(crc >>> 0).toString(16).padStart(8, '0')}`, timestamp: 0, fileSize: size, mtimeMs: st?.mtimeMs ?? 0 };
  return { frames, identity };
}

/**
 * A chunked diff as a read-only differencing Disk over `parent` (which it closes with itself): status says depth 0
 * data where frames are, the parent's extents elsewhere.
 */
export async function openChunkedDiff(file: RandomAccessFile, location: Location, parent: Disk): Promise<Disk> {
  const { frames, identity } = await scanChunkedDiff(file, location, parent.virtualSize);
  return new ChunkedDiff(file, location, parent, frames, identity);
}

/** The first frame ending after `offset` (frames are ascending). */
function frameIndexAfter(frames: Frame[], offset: number): number {
  let lo = 0;
  let hi = frames.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid].offset + frames[mid].length <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

class ChunkedDiff implements Disk {
  readonly format = 'raw' as const;
  readonly type = 'differencing' as const;
  readonly writable = false;
  readonly blockSize = 0;

  constructor(
    readonly file: RandomAccessFile,
    readonly location: Location,
    readonly parent: Disk,
    private readonly frames: Frame[],
    private readonly id: DiskIdentity,
  ) {}

  get virtualSize(): number {
    return this.parent.virtualSize;
  }
  get logicalSectorSize(): number {
    return this.parent.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.parent.physicalSectorSize;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const out = into ?? Buffer.alloc(length);
    let done = 0;
    for (let i = frameIndexAfter(this.frames, offset); done < length; ) {
      const at = offset + done;
      const f = this.frames[i];
      if (f && f.offset <= at) {
        const n = Math.min(length - done, f.offset + f.length - at);
        const got = await this.file.read(f.at + (at - f.offset), n, out.subarray(done, done + n));
        if (got.length !== n) throw new CorruptImageError('the chunked diff shrank while being read', displayLocation(this.location));
        done += n;
        i++;
      } else {
        const n = Math.min(length - done, (f ? f.offset : offset + length) - at);
        const got = await this.parent.read(at, n, out.subarray(done, done + n));
        if (got.buffer !== out.buffer || got.byteOffset !== out.byteOffset + done) got.copy(out, done);
        done += n;
      }
    }
    return out.subarray(0, length);
  }

  async status(offset: number, length: number, opts: StatusOptions = {}): Promise<Extent[]> {
    const out: Extent[] = [];
    const end = offset + length;
    let at = offset;
    for (let i = frameIndexAfter(this.frames, offset); at < end; ) {
      const f = this.frames[i];
      if (f && f.offset <= at) {
        const n = Math.min(end, f.offset + f.length) - at;
        const last = out[out.length - 1];
        if (last && last.depth === 0 && last.offset + last.length === at) last.length += n;
        else out.push({ offset: at, length: n, state: 'data', depth: 0 });
        at += n;
        i++;
      } else {
        const n = Math.min(end, f ? f.offset : end) - at;
        if (opts.ownOnly) out.push({ offset: at, length: n, state: 'unallocated', depth: 1 });
        else for (const e of await this.parent.status(at, n)) out.push({ ...e, depth: e.depth + 1 });
        at += n;
      }
    }
    return out;
  }

  write(): Promise<void> {
    return Promise.reject(new UnsupportedError('a chunked diff is read-only', displayLocation(this.location)));
  }
  writeZeroes(): Promise<void> {
    return this.write();
  }
  async flush(): Promise<void> {}

  async close(): Promise<void> {
    await this.file.close();
    await this.parent.close();
  }

  async identity(): Promise<DiskIdentity> {
    return { ...this.id };
  }

  async info(): Promise<DiskInfo> {
    return { format: 'chunked', type: 'differencing', virtualSize: this.virtualSize, frames: this.frames.length, fileSize: this.id.fileSize };
  }
}
