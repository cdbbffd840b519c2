/**
 * Holes of local files: ranges never written, which read as zeros without being stored (a dynamic VHDX block that
 * qemu wrote 4 MiB of holds 12 MiB of them). Node's fs cannot ask for them (no lseek SEEK_DATA), so a small
 * Node-API helper does (native/holes.c, built at install by scripts/build-native.js; decision 0024). Without it,
 * or with VHDSYNC_HOLE_MAP=0, nothing is known to be a hole and callers read the bytes as before.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';

interface HoleHelper {
  nextData(fd: number, offset: number): number;
  /** Absent from a helper built before it was added (then every question past a data offset asks again). */
  nextHole?(fd: number, offset: number): number;
}

let helper: HoleHelper | null | undefined;

/** The helper, loaded on first use; null when it was not built, does not load, or is switched off. */
function loadHelper(): HoleHelper | null {
  if (helper === undefined) {
    helper = null;
    if (process.env.VHDSYNC_HOLE_MAP !== '0') {
      try {
        // Two levels above both src/io and dist/io, as package.json is for meta/version.ts.
        helper = createRequire(import.meta.url)('../../build/native/holes.node') as HoleHelper;
      } catch {
        // Optional: a machine without a C compiler at install time reads holes as data.
      }
    }
  }
  return helper;
}

/** True when holes can be asked for on this machine (the helper is built and not switched off). */
export function holeMapAvailable(): boolean {
  return loadHelper() !== null;
}

/**
 * Answers "is this range of that file one hole?" for files opened on demand; `close()` closes them. Each answer
 * costs one lseek, and the next data offset it returns answers later questions about the hole before it for free.
 */
export class HoleProbe {
  /** Per file, what the last questions found: [from, dataAt) is a hole (to the end when dataAt is -1), [dataAt, dataEnd) data. */
  private readonly files = new Map<string, { fd: number; from: number; dataAt: number; dataEnd: number }>();
  private readonly helper = loadHelper();

  /**
   * True when [offset, offset+length) of the local file `path` is known to read as zeros without being stored (a
   * hole, or past the end of the file). False when it holds data, or when nothing is known (no helper, a file
   * that cannot be opened, a filesystem that reports everything as data): the caller then reads it.
   */
  isHole(path: string, offset: number, length: number): boolean {
    if (!this.helper) return false;
    let f = this.files.get(path);
    try {
      if (!f) this.files.set(path, (f = { fd: fs.openSync(path, 'r'), from: 0, dataAt: -2, dataEnd: -2 }));
      if (f.dataAt === -2 || offset < f.from || (f.dataAt >= 0 && offset >= f.dataEnd)) {
        f.from = offset;
        f.dataAt = this.helper.nextData(f.fd, offset);
        // Where that data ends: the many questions inside one allocated extent (a full image asks per block) are
        // then answered without a system call each.
        f.dataEnd = f.dataAt >= 0 && this.helper.nextHole ? Math.max(f.dataAt, this.helper.nextHole(f.fd, f.dataAt)) : f.dataAt;
      }
    } catch {
      return false;
    }
    // dataAt -1: no data from `from` to the end of the file, and reads past the end are zeros too.
    return f.dataAt === -1 || offset + length <= f.dataAt;
  }

  /** Closes the files opened for questions. */
  close(): void {
    for (const f of this.files.values()) fs.closeSync(f.fd);
    this.files.clear();
  }
}
