/**
 * QCOW2 stream target: the one-pass QCOW2 decoder on images qemu-img made (the QCOW2 seeds: compressed and zero
 * clusters, snapshots, extended L2, 512-byte clusters, an overlay) and on our encoder's sequential layout, mutated
 * through their structures and cut into random chunks: applied onto an in-memory raw disk, and as an encoder's
 * content (tables first), at most 16 MiB of it read.
 */
import fc from 'fast-check';
import '../../../src/formats/index.js';
import { encodeQcow2 } from '../../../src/stream/qcow2-encoder.js';
import { readQcow2StreamHead } from '../../../src/stream/qcow2-stream.js';
import { applyQcow2Stream, qcow2StreamContent } from '../../../src/stream/qcow2-stream-source.js';
import type { ContentSource } from '../../../src/stream/content.js';
import { PagedImage } from '../memory-store.js';
import { applyMutations, mutationsArb, type Mutation } from '../mutate.js';
import { withAllocationCap } from '../guards.js';
import { BASE_ALLOCATION_CAP, type ImageSeed } from '../image-target.js';
import { defineTarget, inputText } from '../target.js';
import { qcow2ImageSeeds, qcow2Layout } from './qcow2.js';
import { rawDisk, readSomeContent, reader } from './stream.js';

/** A 3 MiB disk with data here and there, as our encoder streams it (4 KiB clusters: several L2 tables). */
async function encoderSeed(): Promise<ImageSeed> {
  const content: ContentSource = {
    virtualSize: 3 << 20,
    ranges: [{ offset: 8192, length: 20000 }, { offset: 1 << 20, length: 70000 }, { offset: (3 << 20) - 4096, length: 4096 }],
    base: null,
    name: 'encoder',
    read: async (offset, length, into) => (into ? into.subarray(0, length) : Buffer.alloc(length)).fill((offset >> 12) & 0xff | 1),
  };
  const parts: Buffer[] = [];
  for await (const c of encodeQcow2(content, { clusterSize: 4096 }).chunks()) parts.push(typeof c === 'number' ? Buffer.alloc(c) : Buffer.from(c));
  const img = PagedImage.from(Buffer.concat(parts));
  return { name: 'encoder:seq.qcow2', path: '/fuzz/seq.qcow2', files: new Map([['/fuzz/seq.qcow2', img]]), layout: qcow2Layout(img) };
}

interface StreamInput {
  seed: number;
  muts: Mutation[];
  cuts: number[];
  known: boolean;
}

function streamBytes(seeds: ImageSeed[], input: StreamInput): Buffer {
  const seed = seeds[input.seed % seeds.length];
  const img = seed.files.get(seed.path)!.clone();
  applyMutations(img, seed.layout, input.muts);
  return img.slice(0, Math.min(img.size, 16 << 20));
}

/** Applies the stream onto a sparse raw disk of its own size, then reads it again as content. */
async function runQcow2Stream(bytes: Buffer, cuts: number[], known: boolean): Promise<void> {
  await withAllocationCap(BASE_ALLOCATION_CAP + bytes.length, async () => {
    const head = await readQcow2StreamHead(reader(bytes, cuts, known));
    const disk = await rawDisk(head.virtualSize);
    try {
      await applyQcow2Stream(reader(bytes, cuts, known), disk);
    } finally {
      await disk.close();
    }
    await readSomeContent(await qcow2StreamContent(reader(bytes, cuts, known)));
  });
}

export const qcow2Stream = defineTarget<ImageSeed[], StreamInput>({
  name: 'qcow2-stream',
  about: 'one-pass QCOW2 stream decoder (header cluster, refcount table check, L1, L2 tables and data in stream order) on qemu-made and encoder-made images cut in random chunks: applied onto a raw disk, and as content',
  weight: 2,
  async prepare() {
    const seeds = [...qcow2ImageSeeds().filter((s) => s.files.get(s.path)!.size <= 16 << 20), await encoderSeed()];
    return seeds;
  },
  arbitrary: () => fc.record({ seed: fc.nat(), muts: mutationsArb(), cuts: fc.array(fc.integer({ min: 1, max: 70000 }), { maxLength: 8 }), known: fc.boolean() }),
  run: (seeds, input) => runQcow2Stream(streamBytes(seeds, input), input.cuts, input.known),
  save: (seeds, input) => Buffer.concat([Buffer.from(JSON.stringify({ cuts: input.cuts, known: input.known }) + '\n'), streamBytes(seeds, input)]),
  async replay(file) {
    const nl = file.indexOf(0x0a);
    const { cuts, known } = JSON.parse(file.subarray(0, nl).toString()) as { cuts: number[]; known: boolean };
    await runQcow2Stream(file.subarray(nl + 1), cuts, known);
  },
  describe: (seeds, input) => inputText({ seed: seeds[input.seed % seeds.length].name, muts: input.muts, cuts: input.cuts, known: input.known }),
});
