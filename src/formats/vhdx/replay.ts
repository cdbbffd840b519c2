/**
 * The file as a reader must see it: its bytes, with a replayed log laid over them in memory when the
 * image is opened read-only (so the file itself is never modified), and zeros past its end.
 */
import type { RandomAccessFile } from '../../io/store.js';
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
  const ZERO_CHUNK = 1 << 20;
  for (const c of changes) {
    if (c.kind === 'data') {
      await file.write(c.fileOffset, c.data);
      continue;
    }
    const zeros = Buffer.alloc(Math.min(c.length, ZERO_CHUNK));
    for (let done = 0; done < c.length; done += zeros.length) {
      await file.write(c.fileOffset + done, zeros.subarray(0, Math.min(zeros.length, c.length - done)));
    }
  }
}
