/**
 * Metafile targets: native lists (header, entries, trailer) and VhdBlockBackup's headerless lists, made by
 * createMetafile from images this tool writes, then mutated, opened, read through and compared with the original.
 */
import fc from 'fast-check';
import '../../../src/formats/index.js';
import { createDisk } from '../../../src/formats/index.js';
import { createMetafile, readMetafile, compareMetafiles, type Metafile } from '../../../src/meta/index.js';
import { HEADER_SIZE } from '../../../src/meta/header.js';
import { recordingStore } from '../../../src/io/recording-store.js';
import { MemoryStore, type PagedImage } from '../memory-store.js';
import { fieldsAt, mutationsArb, type Layout, type Mutation } from '../mutate.js';
import { mutatedStore, packFiles, unpackFiles, type ImageSeed } from '../image-target.js';
import { Violation, withAllocationCap } from '../guards.js';
import { defineTarget, inputText } from '../target.js';
import { filler } from '../seeds.js';

const HEADER_FIELDS: Array<[string, number, number]> = [
  ['magic', 0, 8], ['version', 8, 4], ['headerSize', 12, 4], ['algorithm', 16, 1], ['digestLength', 17, 1], ['flags', 18, 1], ['format', 19, 1],
  ['blockSize', 20, 4], ['logicalSectorSize', 24, 4], ['virtualSize', 32, 8], ['blockCount', 40, 8], ['fileSize', 48, 8], ['mtime', 56, 8],
  ['timestamp', 64, 4], ['contentIdLength', 68, 1], ['created', 132, 8], ['toolVersionLength', 140, 1],
  // Version 2: the parent identity a diff's metafile records.
  ['parent.format', 172, 1], ['parent.contentIdLength', 173, 1], ['parent.fileSize', 240, 8], ['parent.mtime', 248, 8], ['parent.timestamp', 256, 4],
  // Version 3: the second level (sub-block size, digest algorithm and length, the table's CRC).
  ['sub.size', 260, 4], ['sub.algorithm', 264, 1], ['sub.digestLength', 265, 1], ['sub.tableCrc', 268, 4],
];

/** Native: header fields and CRC, the first entries' state bytes, the sub-digest table (version 3), the list CRC in the trailer. */
function nativeLayout(img: PagedImage): Layout {
  const h = img.slice(0, HEADER_SIZE);
  const stride = 1 + h.readUInt8(17);
  const blocks = Number(h.readBigUInt64LE(40));
  const listBytes = blocks * stride;
  const tableBytes = h.readUInt32LE(8) >= 3 ? blocks * (h.readUInt32LE(20) / h.readUInt32LE(260)) * h.readUInt8(265) : 0;
  const layout: Layout = {
    fields: fieldsAt('header', 0, true, HEADER_FIELDS),
    checksums: [
      { name: 'header', kind: 'crc32c', start: 0, length: HEADER_SIZE, field: 508 },
      { name: 'list', kind: 'crc32c', start: HEADER_SIZE, length: listBytes, field: HEADER_SIZE + listBytes + tableBytes },
    ],
    regions: [
      { name: 'header', at: 0, length: HEADER_SIZE },
      { name: 'list', at: HEADER_SIZE, length: listBytes },
      { name: 'trailer', at: HEADER_SIZE + listBytes + tableBytes, length: 8 },
    ],
  };
  if (tableBytes) {
    layout.checksums.push({ name: 'sub-table', kind: 'crc32c', start: HEADER_SIZE + listBytes, length: tableBytes, field: 268 });
    layout.regions.push({ name: 'sub-table', at: HEADER_SIZE + listBytes, length: tableBytes });
  }
  for (let i = 0; i < Math.min(8, listBytes / stride); i++) layout.fields.push({ name: `entry[${i}].state`, at: HEADER_SIZE + i * stride, size: 1, le: true });
  layout.fields.push({ name: 'trailer.magic', at: HEADER_SIZE + listBytes + tableBytes + 4, size: 4, le: true });
  return layout;
}

/** VhdBlockBackup: 16-byte digests only; what matters is the length, so the fields are a few digests' first words. */
function vbbLayout(img: PagedImage): Layout {
  const fields = [0, 1, 2].filter((i) => (i + 1) * 16 <= img.size).map((i) => ({ name: `digest[${i}]`, at: i * 16, size: 8, le: true }));
  return { fields, checksums: [], regions: [{ name: 'list', at: 0, length: img.size }] };
}

interface MetaSeed extends ImageSeed {
  /** The image's virtual size, as the caller of readMetafile passes it for vbb lists; null to pass none. */
  virtualSize: number | null;
}

async function metaSeeds(): Promise<MetaSeed[]> {
  const store = new MemoryStore();
  const seeds: MetaSeed[] = [];
  const settings = [
    { name: 'native-xxh128', layout: 'native' as const, algorithm: 'xxh128' as const, blockSize: 64 << 10 },
    { name: 'native-sha256', layout: 'native' as const, algorithm: 'sha256' as const, blockSize: 4096 },
    // Version 3 with SHA-256 sub-digests (64 KiB sub-blocks of 256 KiB blocks); the XXH128 seed above is version 3 too.
    { name: 'native-sha256-v3', layout: 'native' as const, algorithm: 'sha256' as const, blockSize: 256 << 10 },
    { name: 'native-xxh128-v1', layout: 'native' as const, algorithm: 'xxh128' as const, blockSize: 64 << 10, subBlocks: false },
    { name: 'vbb', layout: 'vbb' as const },
  ];
  const disk = await createDisk({ store, path: '/m/img.vhd' }, { format: 'vhd', type: 'dynamic', virtualSize: (5 << 20) + 512, blockSize: 512 << 10 });
  await disk.write(0, filler(100 << 10, 1));
  await disk.writeZeroes(2 << 20, 64 << 10);
  for (const s of settings) {
    const path = `/m/${s.name}.blocklist.bin`;
    const { name, ...opts } = s;
    await createMetafile(disk, { ...opts, target: { store, path } });
    const img = store.files.get(path)!;
    const layout = s.layout === 'vbb' ? vbbLayout(img) : nativeLayout(img);
    seeds.push({ name, path, files: new Map([[path, img]]), layout, virtualSize: disk.virtualSize });
    if (s.layout === 'vbb') seeds.push({ name: 'vbb-unsized', path, files: new Map([[path, img]]), layout, virtualSize: null });
  }
  await disk.close();
  return seeds;
}

interface MetaInput {
  seed: number;
  muts: Mutation[];
  streaming: boolean;
}

const META_CAP = 80 << 20;

/** Opens the (mutated) metafile, reads every entry, and compares it with the original when both open. */
async function runMeta(store: MemoryStore, path: string, virtualSize: number | null, streaming: boolean, original: Metafile | null): Promise<void> {
  const events: string[] = [];
  const rec = recordingStore(store, (e) => {
    if (e.op !== 'flush' && (e.op !== 'open' || e.mode !== 'read')) events.push(JSON.stringify(e));
  });
  await withAllocationCap(META_CAP + (store.files.get(path)?.size ?? 0), async () => {
    const m = await readMetafile({ store: rec, path }, { virtualSize: virtualSize ?? undefined, memoryLimit: streaming ? 0 : undefined });
    try {
      let n = 0;
      for await (const r of m.records(1000)) {
        n += r.digest.length > 0 ? 1 : 0;
        if (m.summary.sub && r.subDigests?.length !== m.subCount(r.index) * m.summary.sub.digestLength) throw new Violation('crash', `entry ${r.index} has no sub-digests`);
      }
      if (n !== m.summary.blockCount) throw new Violation('crash', `records() gave ${n} entries of ${m.summary.blockCount}`);
      if (original) await compareMetafiles(original, m);
    } finally {
      await m.close();
    }
  });
  if (events.length) throw new Violation('write', `reading a metafile did ${events.join(', ')}`);
}

export const metafiles = defineTarget<MetaSeed[], MetaInput>({
  name: 'metafile',
  about: 'native metafiles (header, entries, trailer CRC) and VhdBlockBackup lists, with and without the image size, held in memory or streamed; read through and compared',
  weight: 2,
  async prepare() {
    return metaSeeds();
  },
  arbitrary: () => fc.record({ seed: fc.nat(), muts: mutationsArb(), streaming: fc.boolean() }),
  async run(seeds, input) {
    const seed = seeds[input.seed % seeds.length];
    const original = await readMetafile({ store: mutatedStore(seed, []), path: seed.path }, { virtualSize: seed.virtualSize ?? undefined });
    await runMeta(mutatedStore(seed, input.muts), seed.path, seed.virtualSize, input.streaming, original);
  },
  save(seeds, input) {
    const seed = seeds[input.seed % seeds.length];
    return packFiles({ path: seed.path, virtualSize: seed.virtualSize, streaming: input.streaming }, mutatedStore(seed, input.muts).files);
  },
  async replay(file) {
    const { store, head } = unpackFiles(file);
    const h = head as { path: string; virtualSize: number | null; streaming: boolean };
    await runMeta(store, h.path, h.virtualSize, h.streaming, null);
  },
  describe(seeds, input) {
    return inputText({ seed: seeds[input.seed % seeds.length].name, muts: input.muts, streaming: input.streaming });
  },
});
