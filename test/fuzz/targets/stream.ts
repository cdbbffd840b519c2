/**
 * Stream targets: forward-only inputs cut into random chunks. `vhd-stream` feeds the VHD seeds (mutated through
 * their layout) to the one-pass VHD stream reader, as content and applied onto an in-memory raw disk; `chunked`
 * feeds XAPI chunked frames (mutated frame headers) to applyChunked.
 */
import fc from 'fast-check';
import '../../../src/formats/index.js';
import { createDisk } from '../../../src/formats/index.js';
import { ForwardReader } from '../../../src/stream/forward-reader.js';
import { applyVhdStream, vhdStreamContent } from '../../../src/stream/vhd-stream-source.js';
import { readVhdStreamHead } from '../../../src/stream/vhd-stream.js';
import { applyChunked } from '../../../src/stream/apply.js';
import { frameHeader } from '../../../src/stream/chunked.js';
import type { ContentSource } from '../../../src/stream/content.js';
import { MemoryStore, PagedImage } from '../memory-store.js';
import { applyMutations, mutationsArb, type Layout, type Mutation } from '../mutate.js';
import { withAllocationCap } from '../guards.js';
import { BASE_ALLOCATION_CAP, mutatedStore, type ImageSeed } from '../image-target.js';
import { defineTarget, inputText } from '../target.js';
import { vhdSeeds } from './vhd.js';

/** The bytes as a forward-only source delivered in chunks of the given sizes (then the rest at once); `known`: its length is told. */
export function reader(bytes: Buffer, cuts: number[], known = false): ForwardReader {
  async function* chunks() {
    let at = 0;
    for (const c of cuts) {
      if (at >= bytes.length) return;
      yield bytes.subarray(at, at + c);
      at += c;
    }
    if (at < bytes.length) yield bytes.subarray(at);
  }
  return new ForwardReader(chunks(), 'stream', known ? bytes.length : null);
}

/** A raw disk of `size` bytes in memory (sparse: nothing is allocated until written). */
export async function rawDisk(size: number) {
  const store = new MemoryStore();
  return createDisk({ store, path: '/out.raw' }, { format: 'raw', type: 'fixed', virtualSize: size });
}

/** Reads a stream source's ranges in order, at most 16 MiB of them, and finishes it when all were read. */
export async function readSomeContent(content: ContentSource): Promise<void> {
  let budget = 16 << 20;
  for (const r of content.ranges) {
    const n = Math.min(r.length, budget);
    if (n <= 0) break;
    await content.read(r.offset, n);
    budget -= n;
  }
  if (budget > 0) await content.finish?.();
}

/** Reads a VHD stream as content (at most 16 MiB of it), then applies it again onto a raw disk. */
async function runVhdStream(bytes: Buffer, cuts: number[]): Promise<void> {
  await withAllocationCap(BASE_ALLOCATION_CAP + bytes.length, async () => {
    await readSomeContent(await vhdStreamContent(reader(bytes, cuts)));
    const head = await readVhdStreamHead(reader(bytes, cuts));
    const disk = await rawDisk(head.virtualSize);
    try {
      await applyVhdStream(reader(bytes, cuts), disk);
    } finally {
      await disk.close();
    }
  });
}

interface StreamInput {
  seed: number;
  muts: Mutation[];
  cuts: number[];
}

const cutsArb = fc.array(fc.integer({ min: 1, max: 70000 }), { maxLength: 8 });

function vhdBytes(seeds: ImageSeed[], input: StreamInput): Buffer {
  const seed = seeds[input.seed % seeds.length];
  return mutatedStore(seed, input.muts).files.get(seed.path)!.toBuffer();
}

export const vhdStream = defineTarget<ImageSeed[], StreamInput>({
  name: 'vhd-stream',
  about: 'one-pass VHD stream reader (footer, dynamic header, BAT, blocks in stream order, tail) on the VHD seeds cut in random chunks: as content, and applied onto a raw disk',
  weight: 2,
  async prepare() {
    // The dynamic and differencing seeds (a fixed VHD is refused as a stream at once), small enough to stream whole.
    const seeds = (await vhdSeeds()).filter((s) => s.files.get(s.path)!.size <= 16 << 20 && s.layout.fields.some((f) => f.name.startsWith('header.')));
    return seeds.length ? seeds : 'no dynamic VHD seeds';
  },
  arbitrary: () => fc.record({ seed: fc.nat(), muts: mutationsArb(), cuts: cutsArb }),
  run: (seeds, input) => runVhdStream(vhdBytes(seeds, input), input.cuts),
  save: (seeds, input) => Buffer.concat([Buffer.from(JSON.stringify(input.cuts) + '\n'), vhdBytes(seeds, input)]),
  async replay(file) {
    const nl = file.indexOf(0x0a);
    await runVhdStream(file.subarray(nl + 1), JSON.parse(file.subarray(0, nl).toString()) as number[]);
  },
  describe: (seeds, input) => inputText({ seed: seeds[input.seed % seeds.length].name, muts: input.muts, cuts: input.cuts }),
});

/** XAPI chunked frames over an 8 MiB disk: a few frames (one of zeros), then the end marker. */
function chunkedSeed(): { bytes: Buffer; layout: Layout } {
  const frames: Array<[number, Buffer]> = [
    [0, Buffer.alloc(4096, 1)],
    [1 << 20, Buffer.alloc(70000, 2)],
    [3 << 20, Buffer.alloc(8192)],
    [(8 << 20) - 512, Buffer.alloc(512, 3)],
  ];
  const parts: Buffer[] = [];
  const layout: Layout = { fields: [], checksums: [], regions: [] };
  let at = 0;
  for (const [offset, data] of frames) {
    layout.fields.push({ name: `frame@${at}.offset`, at, size: 8, le: true }, { name: `frame@${at}.length`, at: at + 8, size: 4, le: true });
    layout.regions.push({ name: `frame@${at}`, at, length: 12 + Math.min(data.length, 512) });
    parts.push(frameHeader(offset, data.length), data);
    at += 12 + data.length;
  }
  layout.fields.push({ name: 'end.offset', at, size: 8, le: true }, { name: 'end.length', at: at + 8, size: 4, le: true });
  parts.push(frameHeader(0, 0));
  return { bytes: Buffer.concat(parts), layout };
}

interface ChunkedInput {
  muts: Mutation[];
  cuts: number[];
}

function chunkedBytes(seed: { bytes: Buffer; layout: Layout }, muts: Mutation[]): Buffer {
  const img = PagedImage.from(seed.bytes);
  applyMutations(img, seed.layout, muts);
  return img.slice(0, Math.min(img.size, 4 << 20));
}

async function runChunked(bytes: Buffer, cuts: number[]): Promise<void> {
  await withAllocationCap(BASE_ALLOCATION_CAP, async () => {
    const disk = await rawDisk(8 << 20);
    try {
      await applyChunked(reader(bytes, cuts), disk);
    } finally {
      await disk.close();
    }
  });
}

export const chunkedStream = defineTarget<{ bytes: Buffer; layout: Layout }, ChunkedInput>({
  name: 'chunked-stream',
  about: 'XAPI chunked frames (offset, length, data; end marker) cut in random chunks, applied onto a raw disk',
  weight: 1,
  prepare: async () => chunkedSeed(),
  arbitrary: () => fc.record({ muts: mutationsArb(), cuts: cutsArb }),
  run: (seed, input) => runChunked(chunkedBytes(seed, input.muts), input.cuts),
  save: (seed, input) => Buffer.concat([Buffer.from(JSON.stringify(input.cuts) + '\n'), chunkedBytes(seed, input.muts)]),
  async replay(file) {
    const nl = file.indexOf(0x0a);
    await runChunked(file.subarray(nl + 1), JSON.parse(file.subarray(0, nl).toString()) as number[]);
  },
  describe: (_, input) => inputText(input),
});
