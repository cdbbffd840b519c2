/**
 * The shape shared by the image targets (VHD, VHDX, and any format added later): a seed is a set of files in a
 * MemoryStore (the image and, for differencing seeds, its parents), the input is a list of structure-aware
 * mutations of the image plus what to do with it once opened. Properties checked besides the outcome: a
 * read-only open changes nothing in the store; a writable open changes only the image it was given.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import fc from 'fast-check';
import '../../src/formats/index.js';
import { openDisk } from '../../src/formats/open.js';
import type { Disk } from '../../src/formats/disk.js';
import { recordingStore, type StoreEvent } from '../../src/io/recording-store.js';
import { MemoryStore, PagedImage } from './memory-store.js';
import { applyMutations, mutationsArb, type Layout, type Mutation } from './mutate.js';
import { Violation, withAllocationCap } from './guards.js';
import { defineTarget, inputText, type FuzzTarget } from './target.js';

/** Allocations an input may make beyond its own file's size (the largest legitimate table is 64 MiB). */
export const BASE_ALLOCATION_CAP = 80 << 20;

/** One starting image: the files of the store, which one is under test, and its structures. */
export interface ImageSeed {
  name: string;
  path: string;
  files: Map<string, PagedImage>;
  layout: Layout;
}

/** What to do with an opened image. Positions are fractions of the virtual size (in 2^31ths). */
export interface Exercise {
  reads: Array<[number, number]>;
  window: number;
  writes: Array<[number, number, number]>;
  zeroes: Array<[number, number]>;
}

export interface ImageInput {
  seed: number;
  muts: Mutation[];
  ex: Exercise;
}

const exerciseArb: fc.Arbitrary<Exercise> = fc.record({
  reads: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 1 << 20 })), { maxLength: 3 }),
  window: fc.nat(),
  writes: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 1 << 17 }), fc.nat(255)), { maxLength: 3 }),
  zeroes: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 1 << 22 })), { maxLength: 2 }),
});

/** A range of the disk from a fraction and a length, sector aligned half of the time, always inside. */
function place(disk: Disk, frac: number, len: number): [number, number] {
  const vs = disk.virtualSize;
  let off = Math.floor((vs * (frac % 2 ** 31)) / 2 ** 31);
  if (frac % 2 === 0) off -= off % disk.logicalSectorSize;
  off = Math.min(off, vs);
  return [off, Math.max(0, Math.min(len, vs - off))];
}

/** Reads, asks for status over a window and info; when writable, also writes and zeroes, then flushes. */
async function exercise(disk: Disk, ex: Exercise, writable: boolean): Promise<void> {
  await disk.info();
  await disk.identity();
  const block = disk.blockSize || 1 << 20;
  const [wOff] = place(disk, ex.window, 0);
  // A window of 4096 blocks: the whole table of any sane test image, bounded for a 64 TiB one.
  await disk.status(wOff, Math.min(disk.virtualSize - wOff, 4096 * block));
  for (const [f, n] of ex.reads) await disk.read(...place(disk, f, n));
  if (!writable) return;
  for (const [f, n, byte] of ex.writes) {
    const [off, len] = place(disk, f, n);
    await disk.write(off, Buffer.alloc(len, byte));
  }
  for (const [f, n] of ex.zeroes) await disk.writeZeroes(...place(disk, f, n));
  await disk.flush();
  for (const [f, n] of ex.reads) await disk.read(...place(disk, f, n));
}

/** Checks what the store saw: nothing changed by a read-only open; only the image itself by a writable one. */
function checkEvents(events: StoreEvent[], image: string, writable: boolean): void {
  for (const e of events) {
    // A flush changes no content, whatever the handle.
    if (e.op === 'flush' || (e.op === 'open' && (e.mode === 'read' || (writable && e.path === image)))) continue;
    if (writable && (e.op === 'write' || e.op === 'truncate') && e.path === image) {
      // The largest file a VHDX may claim through its log is 2^47 bytes; nothing may write beyond that.
      const end = e.op === 'write' ? e.position + e.length : e.size;
      if (end <= 2 ** 47) continue;
    }
    throw new Violation('write', `${writable ? 'writable' : 'read-only'} open of ${image} did ${JSON.stringify(e)}`);
  }
}

/** Opens `path` in `store` (after mutation), exercises it, closes it, and checks the store's record. */
export async function runImage(store: MemoryStore, path: string, ex: Exercise, writable: boolean): Promise<void> {
  const events: StoreEvent[] = [];
  const rec = recordingStore(store, (e) => events.push(e));
  const size = store.files.get(path)?.size ?? 0;
  await withAllocationCap(BASE_ALLOCATION_CAP + size, async () => {
    let disk: Disk | null = null;
    try {
      disk = await openDisk({ store: rec, path }, { writable });
      await exercise(disk, ex, writable);
    } finally {
      // A close that throws after an error is judged like the error itself: the first one wins.
      const d = disk;
      disk = null;
      await d?.close();
    }
  });
  checkEvents(events, path, writable);
}

/** Regression files of store-based targets: gzip of a JSON line (`head`, the files' paths and sizes), then the files' bytes. */
export function packFiles(head: object, files: Map<string, PagedImage>): Buffer {
  const list = [...files].map(([p, img]) => ({ path: p, size: img.size }));
  const line = Buffer.from(JSON.stringify({ head, files: list }) + '\n');
  return gzipSync(Buffer.concat([line, ...[...files.values()].map((img) => img.toBuffer())]), { level: 9 });
}

/** The store and head of a file written by packFiles. */
export function unpackFiles(file: Buffer): { store: MemoryStore; head: unknown } {
  const all = gunzipSync(file);
  const nl = all.indexOf(0x0a);
  const { head, files } = JSON.parse(all.subarray(0, nl).toString()) as { head: unknown; files: Array<{ path: string; size: number }> };
  const store = new MemoryStore();
  let at = nl + 1;
  for (const f of files) {
    store.put(f.path, PagedImage.from(all.subarray(at, at + f.size)));
    at += f.size;
  }
  return { store, head };
}

/** A store holding a private (copy-on-write) copy of a seed, with the image mutated. */
export function mutatedStore(seed: ImageSeed, muts: Mutation[]): MemoryStore {
  const store = new MemoryStore();
  for (const [p, img] of seed.files) store.put(p, img.clone());
  applyMutations(store.files.get(seed.path)!, seed.layout, muts);
  return store;
}

/** An image target over `seeds()`, opening read-only or writable. */
export function imageTarget(opts: { name: string; about: string; weight: number; writable: boolean; seeds: () => Promise<ImageSeed[]> }): FuzzTarget {
  return defineTarget<ImageSeed[], ImageInput>({
    name: opts.name,
    about: opts.about,
    weight: opts.weight,
    async prepare() {
      const seeds = await opts.seeds();
      return seeds.length ? seeds : 'no seeds';
    },
    arbitrary: () => fc.record({ seed: fc.nat(), muts: mutationsArb(), ex: exerciseArb }),
    async run(seeds, input) {
      const seed = seeds[input.seed % seeds.length];
      await runImage(mutatedStore(seed, input.muts), seed.path, input.ex, opts.writable);
    },
    save(seeds, input) {
      const seed = seeds[input.seed % seeds.length];
      return packFiles({ path: seed.path, ex: input.ex }, mutatedStore(seed, input.muts).files);
    },
    async replay(file) {
      const { store, head } = unpackFiles(file);
      const { path, ex } = head as { path: string; ex: Exercise };
      await runImage(store, path, ex, opts.writable);
    },
    describe(seeds, input) {
      return inputText({ seed: seeds[input.seed % seeds.length].name, muts: input.muts, ex: input.ex });
    },
  });
}

/** Where one format's seeds come from; real and qemu seeds are skipped (with a message) where unavailable. */
export interface SeedSources {
  own: () => Promise<ImageSeed[]>;
  qemu: () => ImageSeed[];
  real: () => Promise<ImageSeed[]>;
}

/** A format's read-only and writable targets over one set of seeds, built once per process. */
export function imageTargets(name: string, about: { read: string; write: string }, sources: SeedSources): [FuzzTarget, FuzzTarget] {
  let cached: Promise<ImageSeed[]> | null = null;
  const seeds = () => {
    cached ??= (async () => {
      // Unpacking runs in other threads and processes while this one builds its own seeds.
      const reals = sources.real();
      return [...(await sources.own()), ...sources.qemu(), ...(await reals)];
    })();
    return cached;
  };
  return [
    imageTarget({ name: `${name}-read`, about: about.read, weight: 3, writable: false, seeds }),
    imageTarget({ name: `${name}-write`, about: about.write, weight: 2, writable: true, seeds }),
  ];
}
