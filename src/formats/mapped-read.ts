/**
 * Reading a local disk's content synchronously from the files its map names (`Disk.mapFile`), on the calling
 * thread. On the 2-core VMs this project is measured on, every asynchronous read is a hand-off to a thread-pool
 * thread and back, and those wake-ups cost more than the copy from the page cache itself: a zero scan of a 4 GiB
 * image took 0.94-1.19 s through the drivers' async reads and 0.33-0.37 s this way (docs/performance.md, stream).
 * Whoever loops over a disk with it yields to the event loop between pieces, so timers still run.
 */
import * as fs from 'node:fs';
import type { Disk, FileRun } from './disk.js';
import { fromSystemError } from '../util/errors.js';

/** True when `disk` can say where its content lies in local files. */
export function canMap(disk: Disk): boolean {
  return typeof disk.mapFile === 'function' && disk.location.store.kind === 'local';
}

/**
 * Reads the file runs `runs` (as mapFile returns them) into `into` from offset 0, synchronously; runs without a
 * file, and bytes past a file's end, read as zeros (as the drivers read them). Returns the bytes placed.
 */
export function readRunsSync(runs: readonly FileRun[], into: Buffer): number {
  let at = 0;
  const fds = new Map<string, number>();
  let path = '';
  try {
    for (const r of runs) {
      if (r.path === null) {
        into.fill(0, at, at + r.length);
      } else {
        path = r.path;
        let fd = fds.get(path);
        if (fd === undefined) fds.set(path, (fd = fs.openSync(path, 'r')));
        let got = 0;
        while (got < r.length) {
          const n = fs.readSync(fd, into, at + got, r.length - got, r.fileOffset + got);
          if (n === 0) break;
          got += n;
        }
        if (got < r.length) into.fill(0, at + got, at + r.length);
      }
      at += r.length;
    }
  } catch (err) {
    throw fromSystemError(err, path);
  } finally {
    for (const fd of fds.values()) fs.closeSync(fd);
  }
  return at;
}

/**
 * Reads [offset, offset+length) of a disk into `into`: synchronously from its mapped files where it can say where
 * they are, else through the driver. Resolves to `into` (cut to `length`).
 */
export async function readMapped(disk: Disk, offset: number, length: number, into: Buffer): Promise<Buffer> {
  const out = into.subarray(0, length);
  const runs = canMap(disk) ? await disk.mapFile!(offset, length) : null;
  if (!runs) return disk.read(offset, length, out);
  readRunsSync(runs, out);
  return out;
}
