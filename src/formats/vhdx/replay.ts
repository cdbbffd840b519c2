/**
 * The file as a reader must see it: its bytes, with a replayed log laid over them in memory when the
 * image is opened read-only (so the file itself is never modified), and zeros past its end.
 */
import type { RandomAccessFile } from '../../io/store.js';
import { ZERO_RUN, zeros } from '../../util/aligned.js';
import type { LogChange } from './log.js';

/** A read-only view of an image file with an optional in-memory log replay on top. */
export class FileView {
  constructor(
    readonly file: RandomAccessFile,
    /** Replayed changes in log order (later ones win), or empty. */
    private readonly overlay: LogChange[] = [],
  ) {}

  /** True when reads are patched by an in-memory replay. */
  get hasOverlay(): boolean {
    return this.overlay.length > 0;
  }

  /** Reads exactly `length` bytes: zeros past the end of the file, replayed sectors applied. */
  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(length);
    const got = await this.file.read(position, length, buf);
    if (got.length < length) buf.fill(0, got.length, length);
    for (const c of this.overlay) {
      const cLen = c.kind === 'data' ? c.data.length : c.length;
      const from = Math.max(position, c.fileOffset);
      const to = Math.min(position + length, c.fileOffset + cLen);
      if (from >= to) continue;
      if (c.kind === 'data') c.data.copy(buf, from - position, from - c.fileOffset, to - c.fileOffset);
      else buf.fill(0, from - position, to - position);
    }
    return buf;
  }
}

/** Applies replayed changes to the file in place (the writable-open path); the caller flushes. */
export async function applyChanges(file: RandomAccessFile, changes: LogChange[]): Promise<void> {
  // Past what the file holds (its size, or data replayed past it) every byte already reads as zero, and the caller
  // extends the file with a hole: writing zeros there would let a zero descriptor of any length fill the disk.
  let written = await file.size();
  for (const c of changes) {
    if (c.kind === 'data') {
      await file.write(c.fileOffset, c.data);
      written = Math.max(written, c.fileOffset + c.data.length);
      continue;
    }
    const end = Math.min(c.fileOffset + c.length, written);
    for (let at = c.fileOffset; at < end; at += ZERO_RUN) await file.write(at, zeros(end - at));
  }
}
