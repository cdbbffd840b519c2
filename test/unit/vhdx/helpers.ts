/** Helpers shared by the VHDX tests. */
import { createHash } from 'node:crypto';
import type { Disk } from '../../../src/formats/disk.js';
import { PYTHON_VHDI, run } from '../../helpers/tools.js';

/** Reads a disk's whole virtual content (small test images only). */
export async function readAll(disk: Disk): Promise<Buffer> {
  return disk.read(0, disk.virtualSize);
}

/**
 * SHA-256 of a disk's virtual content, reading only what status() says holds data and hashing
 * zeros for the rest from a shared zero buffer, so a mostly empty 10 GiB image is cheap.
 */
export async function digestByStatus(disk: Disk, chunk = 64 << 20): Promise<string> {
  const h = createHash('sha256');
  const zeros = Buffer.alloc(chunk);
  for (let off = 0; off < disk.virtualSize; off += chunk) {
    const n = Math.min(chunk, disk.virtualSize - off);
    for (const e of await disk.status(off, n)) {
      if (e.state === 'data') {
        h.update(await disk.read(e.offset, e.length));
      } else {
        for (let done = 0; done < e.length; done += zeros.length) h.update(zeros.subarray(0, Math.min(zeros.length, e.length - done)));
      }
    }
  }
  return h.digest('hex');
}

/** Reads [offset, offset+length) of an image through pyvhdi (libvhdi), optionally on a parent; for images too big to read whole. */
export function pyvhdiReadRange(image: string, offset: number, length: number, parent?: string): Buffer {
  return pyvhdiReadRanges(image, [[offset, length]], parent)[0];
}

/** Reads several [offset, length] ranges of an image through pyvhdi in one python process, optionally on a parent. */
export function pyvhdiReadRanges(image: string, ranges: ReadonlyArray<readonly [number, number]>, parent?: string): Buffer[] {
  if (!PYTHON_VHDI) throw new Error('pyvhdi missing');
  const script = `
import pyvhdi, sys
f = pyvhdi.file(); f.open(sys.argv[1])
if sys.argv[2]:
    p = pyvhdi.file(); p.open(sys.argv[2]); f.set_parent(p)
for r in sys.argv[3:]:
    off, length = (int(x) for x in r.split(':')); end = off + length
    while off < end:
        n = min(1 << 24, end - off)
        sys.stdout.buffer.write(f.read_buffer_at_offset(n, off)); off += n
`;
  const out = run(PYTHON_VHDI, ['-c', script, image, parent ?? '', ...ranges.map(([o, n]) => `${o}:${n}`)]);
  let at = 0;
  return ranges.map(([, n]) => out.subarray(at, (at += n)));
}
