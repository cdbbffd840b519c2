/** Shared by the direct hashing path's tests: hash one disk both ways and compare. */
import type { Disk, OpenOptions } from '../../../src/formats/disk.js';
import { openDisk } from '../../../src/formats/index.js';
import { hashDisk, hashDiskGroups, type HashedBlock } from '../../../src/meta/hash-disk.js';
import { GroupShape } from '../../../src/meta/hashed-group.js';
import { defaultSubLevel } from '../../../src/meta/hashers.js';

/** One block as a line (index, state, length, read, digest, sub-digests). */
const line = (b: HashedBlock) => `${b.index} ${b.state} ${b.length} ${b.read} ${b.digest.toString('hex')} ${b.subDigests?.toString('hex') ?? '-'}`;

/** The sub-level createMetafile asks for at this block size. */
function subLevelAt(algorithm: 'xxh128' | 'sha256', blockSize: number) {
  const level = defaultSubLevel(algorithm);
  return level && level.size < blockSize ? level : null;
}

/**
 * Every block of `disk` as one line, through hashDiskGroups (the groups createmeta writes), each group also checked
 * for the layout a list's writer takes: digests back to back, sub-digest slots zero-padded past a short block.
 */
export async function groupDigests(disk: Disk, blockSize: number, direct: boolean, algorithm: 'xxh128' | 'sha256' = 'xxh128', workers = 0): Promise<string[]> {
  const sub = subLevelAt(algorithm, blockSize);
  const shape = new GroupShape(algorithm, blockSize, disk.virtualSize, sub);
  const out: string[] = [];
  let next = 0;
  for await (const g of hashDiskGroups(disk, { algorithm, blockSize, direct, workers, sub })) {
    expect(g.first).toBe(next);
    expect(g.digests.length).toBe(g.count * shape.digestLength);
    expect(g.subDigests?.length ?? 0).toBe(g.count * shape.slot);
    let bytes = 0;
    for (const b of shape.blocksOf(g)) {
      bytes += b.length;
      if (sub) expect(g.subDigests!.subarray((b.index - g.first) * shape.slot + b.subDigests!.length, (b.index - g.first + 1) * shape.slot).every((x) => x === 0)).toBe(true);
      out.push(line(b));
    }
    expect(g.bytes).toBe(bytes);
    next += g.count;
  }
  return out;
}

/** Every block of `disk` as one line (index, state, length, read, digest, sub-digests), through either path. */
export async function digests(disk: Disk, blockSize: number, direct: boolean, algorithm: 'xxh128' | 'sha256' = 'xxh128', workers = 0): Promise<string[]> {
  const out: string[] = [];
  // The second level (sub-block digests) where the block has room for it, as createMetafile asks for it.
  const sub = subLevelAt(algorithm, blockSize);
  for await (const b of hashDisk(disk, { algorithm, blockSize, direct, workers, sub }) as AsyncIterable<HashedBlock>) out.push(line(b));
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
      expect(await groupDigests(disk, bs, true)).toEqual(generic);
      if (expectMapped) expect(reads).toBe(0);
      expect(await groupDigests(disk, bs, false)).toEqual(generic);
      const sha = await digests(disk, bs, false, 'sha256');
      expect(await digests(disk, bs, true, 'sha256', 2)).toEqual(sha);
      expect(await groupDigests(disk, bs, true, 'sha256', 2)).toEqual(sha);
    }
  } finally {
    await disk.close();
  }
}
