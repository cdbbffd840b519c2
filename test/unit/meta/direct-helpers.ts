/** Shared by the direct hashing path's tests: hash one disk both ways and compare. */
import type { Disk, OpenOptions } from '../../../src/formats/disk.js';
import { openDisk } from '../../../src/formats/index.js';
import { hashDisk, type HashedBlock } from '../../../src/meta/hash-disk.js';
import { defaultSubLevel } from '../../../src/meta/hashers.js';

/** Every block of `disk` as one line (index, state, length, read, digest, sub-digests), through either path. */
export async function digests(disk: Disk, blockSize: number, direct: boolean, algorithm: 'xxh128' | 'sha256' = 'xxh128', workers = 0): Promise<string[]> {
  const out: string[] = [];
  // The second level (sub-block digests) where the block has room for it, as createMetafile asks for it.
  const level = defaultSubLevel(algorithm);
  const sub = level && level.size < blockSize ? level : null;
  for await (const b of hashDisk(disk, { algorithm, blockSize, direct, workers, sub }) as AsyncIterable<HashedBlock>) {
    out.push(`${b.index} ${b.state} ${b.length} ${b.read} ${b.digest.toString('hex')} ${b.subDigests?.toString('hex') ?? '-'}`);
  }
  return out;
}

/** Hashes with the direct path and the generic pipeline and expects the same blocks; the direct path must not fall back. */
export async function expectPathsAgree(file: string, blockSizes: number[], opts: OpenOptions = {}, expectMapped = true): Promise<void> {
  const disk = await openDisk(file, opts);
  try {
    if (expectMapped) expect(await disk.mapFile!(0, disk.virtualSize)).not.toBeNull();
    const realRead = disk.read.bind(disk);
    let reads = 0;
    disk.read = (o, l, into) => {
      reads++;
      return realRead(o, l, into);
    };
    for (const bs of blockSizes) {
      const generic = await digests(disk, bs, false);
      reads = 0;
      expect(await digests(disk, bs, true)).toEqual(generic);
      if (expectMapped) expect(reads).toBe(0);
      expect(await digests(disk, bs, true, 'sha256', 2)).toEqual(await digests(disk, bs, false, 'sha256'));
    }
  } finally {
    await disk.close();
  }
}
