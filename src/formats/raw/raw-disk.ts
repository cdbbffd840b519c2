import type { CreateOptions, Disk, DiskIdentity, DiskInfo, Extent, FileRun, FormatDriver, OpenOptions } from '../disk.js';
import { identityStat } from '../disk.js';
import type { Location } from '../../io/location.js';
import { displayLocation } from '../../io/location.js';
import type { RandomAccessFile } from '../../io/store.js';
import { UsageError, UnsupportedError } from '../../util/errors.js';
import { checkRange, zeroFill } from '../ranges.js';
import { ZERO_RUN, zeros } from '../../util/aligned.js';

/** A raw image: the file's bytes are the virtual content. */
export class RawDisk implements Disk {
  readonly format = 'raw' as const;
  readonly type = 'raw' as const;
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 512;
  readonly blockSize = 0;
  readonly parent = null;

  constructor(
    readonly file: RandomAccessFile,
    readonly location: Location,
    readonly virtualSize: number,
  ) {}

  get writable(): boolean {
    return this.file.writable;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkRange(this, offset, length);
    const buf = await this.file.read(offset, length, into);
    // A file shorter than its recorded size (truncated while open) reads as zeros past its end.
    return buf.length === length ? buf : zeroFill(into ?? Buffer.allocUnsafe(length), buf.length);
  }

  async status(offset: number, length: number): Promise<Extent[]> {
    checkRange(this, offset, length);
    // Node cannot ask for holes (no SEEK_DATA), so raw content is all data; readers detect zeros.
    return length ? [{ offset, length, state: 'data', depth: 0 }] : [];
  }

  async mapFile(offset: number, length: number): Promise<FileRun[] | null> {
    checkRange(this, offset, length);
    if (this.location.store.kind !== 'local') return null;
    return length ? [{ length, path: this.location.path, fileOffset: offset }] : [];
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.byteLength);
    await this.file.write(offset, data);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    for (let done = 0; done < length; done += ZERO_RUN) await this.file.write(offset + done, zeros(length - done));
  }

  async flush(): Promise<void> {
    if (this.writable) await this.file.flush();
  }

  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      await this.file.close();
    }
  }

  async identity(): Promise<DiskIdentity> {
    const st = await identityStat(this.file, this.location);
    return { format: 'raw', contentId: '', timestamp: 0, fileSize: st?.size ?? this.virtualSize, mtimeMs: st?.mtimeMs ?? 0 };
  }

  async info(): Promise<DiskInfo> {
    return {
      file: displayLocation(this.location),
      format: 'raw',
      type: 'raw',
      virtualSize: this.virtualSize,
      logicalSectorSize: this.logicalSectorSize,
      physicalSectorSize: this.physicalSectorSize,
      fileSize: await this.file.size(),
    };
  }
}

/** The raw driver: matches anything, so it is probed last. */
export const rawDriver: FormatDriver = {
  name: 'raw',
  async probe() {
    return true;
  },
  async open(file: RandomAccessFile, location: Location, _opts: OpenOptions) {
    return new RawDisk(file, location, await file.size());
  },
  async create(location: Location, opts: CreateOptions) {
    if (opts.type === 'differencing' || opts.parent) {
      throw new UnsupportedError('raw images cannot be differencing images', displayLocation(location));
    }
    if (opts.virtualSize === undefined) throw new UsageError('a size is needed (--size)');
    const file = await location.store.createExclusive(location.path);
    // A raw image is sparse: truncate extends with holes, whatever the requested type.
    await file.truncate(opts.virtualSize);
    return new RawDisk(file, location, opts.virtualSize);
  },
};
