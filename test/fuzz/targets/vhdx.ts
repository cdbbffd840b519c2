/**
 * VHDX targets: seeds (including images caught mid-write with an active log) and the layout of their headers,
 * region tables, metadata, parent locator, BAT and log entries.
 */
import '../../../src/formats/index.js';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import * as hdr from '../../../src/formats/vhdx/header.js';
import * as rt from '../../../src/formats/vhdx/region-table.js';
import * as md from '../../../src/formats/vhdx/metadata.js';
import { recordingStore } from '../../../src/io/recording-store.js';
import { MemoryStore, type PagedImage } from '../memory-store.js';
import { fieldsAt, type Layout } from '../mutate.js';
import { imageTargets, type ImageSeed } from '../image-target.js';
import { filler, qemuImages, realImage } from '../seeds.js';

const HEADER_FIELDS: Array<[string, number, number]> = [
  ['signature', 0, 4], ['checksum', 4, 4], ['sequenceNumber', 8, 8], ['fileWriteGuid', 16, 16], ['dataWriteGuid', 32, 16], ['logGuid', 48, 16],
  ['logVersion', 64, 2], ['version', 66, 2], ['logLength', 68, 4], ['logOffset', 72, 8],
];
const REGION_ENTRY: Array<[string, number, number]> = [['guid', 0, 16], ['offset', 16, 8], ['length', 24, 4], ['required', 28, 4]];
const META_ENTRY: Array<[string, number, number]> = [['itemId', 0, 16], ['offset', 16, 4], ['length', 20, 4], ['flags', 24, 4]];
const LOG_HEADER: Array<[string, number, number]> = [
  ['signature', 0, 4], ['checksum', 4, 4], ['length', 8, 4], ['tail', 12, 4], ['sequence', 16, 8], ['descriptorCount', 24, 4], ['logGuid', 32, 16],
  ['flushedFileOffset', 48, 8], ['lastFileOffset', 56, 8],
];
const LOG_DESCRIPTOR: Array<[string, number, number]> = [['signature', 0, 4], ['trailing', 4, 4], ['lengthOrLeading', 8, 8], ['fileOffset', 16, 8], ['sequence', 24, 8]];
const MIB = 1 << 20;

/** The structures of a VHDX as fields, checksums and regions. */
export function vhdxLayout(img: PagedImage): Layout {
  const layout: Layout = { fields: [{ name: 'identifier.signature', at: 0, size: 8, le: true }], checksums: [], regions: [{ name: 'identifier', at: 0, length: 1024 }] };
  for (const at of hdr.HEADER_OFFSETS) {
    layout.fields.push(...fieldsAt(`header@${at}`, at, true, HEADER_FIELDS));
    layout.checksums.push({ name: `header@${at}`, kind: 'crc32c', start: at, length: hdr.HEADER_SIZE, field: at + 4 });
    layout.regions.push({ name: `header@${at}`, at, length: 128 });
  }
  const headers = hdr.HEADER_OFFSETS.map((o) => hdr.parse(img.slice(o, hdr.HEADER_SIZE)));
  for (const at of rt.REGION_TABLE_OFFSETS) {
    const count = Math.min(img.slice(at + 8, 4).readUInt32LE(0), 4);
    layout.fields.push({ name: `regions@${at}.count`, at: at + 8, size: 4, le: true }, { name: `regions@${at}.checksum`, at: at + 4, size: 4, le: true });
    for (let i = 0; i < Math.max(count, 2); i++) layout.fields.push(...fieldsAt(`regions@${at}[${i}]`, at + 16 + 32 * i, true, REGION_ENTRY));
    layout.checksums.push({ name: `regions@${at}`, kind: 'crc32c', start: at, length: rt.REGION_TABLE_SIZE, field: at + 4 });
    layout.regions.push({ name: `regions@${at}`, at, length: 16 + 32 * Math.max(count, 2) });
  }
  let regions: rt.Region[] = [];
  try {
    regions = rt.pickValid(rt.REGION_TABLE_OFFSETS.map((o) => rt.parse(img.slice(o, rt.REGION_TABLE_SIZE))));
  } catch {
    return layout;
  }
  const meta = regions.find((r) => r.guid === rt.METADATA_REGION);
  const bat = regions.find((r) => r.guid === rt.BAT_REGION);
  if (meta && meta.fileOffset + meta.length <= img.size) {
    const region = img.slice(meta.fileOffset, Math.min(meta.length, 4 * MIB));
    const count = Math.min(region.readUInt16LE(10), 8);
    layout.fields.push({ name: 'metadata.signature', at: meta.fileOffset, size: 8, le: true }, { name: 'metadata.count', at: meta.fileOffset + 10, size: 2, le: true });
    layout.regions.push({ name: 'metadata.table', at: meta.fileOffset, length: 32 + 32 * count });
    try {
      for (const [i, e] of md.parseTable(region).entries()) {
        layout.fields.push(...fieldsAt(`metadata[${i}]`, meta.fileOffset + 32 + 32 * i, true, META_ENTRY));
        if (e.length === 0) continue;
        const at = meta.fileOffset + e.offset;
        layout.regions.push({ name: `metadata.item ${e.itemId}`, at, length: Math.min(e.length, 4096) });
        // Item values: the first word of each, and the locator's key/value table.
        layout.fields.push({ name: `item ${e.itemId}`, at, size: Math.min(e.length, 8) >= 8 ? 8 : 4, le: true });
        if (e.itemId === 'caa16737-fa36-4d43-b3b6-33f0aa44e76b') layout.fields.push({ name: 'fileParameters.flags', at: at + 4, size: 4, le: true });
        if (e.itemId === 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c' && e.length >= 20) {
          layout.fields.push({ name: 'locator.count', at: at + 18, size: 2, le: true });
          const n = Math.min(region.readUInt16LE(e.offset + 18), 6);
          for (let k = 0; k < n; k++) {
            layout.fields.push(...fieldsAt(`locator[${k}]`, at + 20 + 12 * k, true, [['keyOffset', 0, 4], ['valueOffset', 4, 4], ['keyLength', 8, 2], ['valueLength', 10, 2]]));
          }
        }
      }
    } catch {
      // A seed with a broken table still has the fields found so far.
    }
  }
  if (bat && bat.fileOffset < img.size) {
    const entries = Math.min(bat.length / 8, 1 << 16);
    const bytes = img.slice(bat.fileOffset, entries * 8);
    const picked = new Set([0, 1, 2]);
    for (let i = 0; i < entries && picked.size < 24; i++) if (bytes.readUInt32LE(i * 8) !== 0 || bytes.readUInt32LE(i * 8 + 4) !== 0) picked.add(i);
    for (const i of picked) layout.fields.push({ name: `bat[${i}]`, at: bat.fileOffset + i * 8, size: 8, le: true });
    layout.regions.push({ name: 'bat', at: bat.fileOffset, length: Math.max(...picked) * 8 + 8 });
  }
  const h = headers.find((x): x is hdr.VhdxHeader => typeof x !== 'string');
  if (h && h.logOffset + h.logLength <= img.size) addLog(img, h, layout);
  return layout;
}

/** Log entries found by their signature: header fields, descriptors, and the checksum over the whole entry. */
function addLog(img: PagedImage, h: hdr.VhdxHeader, layout: Layout): void {
  const log = img.slice(h.logOffset, Math.min(h.logLength, 8 * MIB));
  let found = 0;
  for (let pos = 0; pos + 4096 <= log.length && found < 4; pos += 4096) {
    if (log.toString('latin1', pos, pos + 4) !== 'loge') continue;
    found++;
    const at = h.logOffset + pos;
    const length = log.readUInt32LE(pos + 8);
    layout.fields.push(...fieldsAt(`log@${pos}`, at, true, LOG_HEADER));
    const count = Math.min(log.readUInt32LE(pos + 24), 6);
    for (let i = 0; i < count; i++) layout.fields.push(...fieldsAt(`log@${pos}.desc[${i}]`, at + 64 + 32 * i, true, LOG_DESCRIPTOR));
    if (length > 0 && pos + length <= log.length) {
      layout.checksums.push({ name: `log@${pos}`, kind: 'crc32c', start: at, length, field: at + 4 });
      layout.regions.push({ name: `log@${pos}`, at, length: Math.min(length, 64 << 10) });
      // The first data sector's sequence halves, which must match the entry's.
      if (length > 4096) layout.fields.push({ name: `log@${pos}.data.seqHigh`, at: at + 4096 + 4, size: 4, le: true });
    }
  }
}

function seed(name: string, path: string, files: Map<string, PagedImage>): ImageSeed {
  return { name, path, files, layout: vhdxLayout(files.get(path)!) };
}

/**
 * Snapshots of an image taken before each of its writes while `work` runs, keeping those whose current header
 * says the log is active: what a crash at that point would leave for the next open to replay.
 */
async function midWriteSnapshots(store: MemoryStore, path: string, work: (s: typeof store) => Promise<void>): Promise<PagedImage[]> {
  const snaps: PagedImage[] = [];
  const rec = recordingStore(store, (e) => {
    if (e.op === 'write' && e.path === path && store.files.has(path)) {
      const img = store.files.get(path)!;
      const current = hdr.HEADER_OFFSETS.map((o) => hdr.parse(img.slice(o, hdr.HEADER_SIZE)));
      try {
        if (hdr.logIsActive(hdr.pickCurrent(current).header)) snaps.push(img.clone());
      } catch {
        // Not yet a VHDX (being created).
      }
    }
  });
  await work(rec as unknown as MemoryStore);
  // The first and last of each run of active-log states differ most.
  return snaps.length <= 3 ? snaps : [snaps[0], snaps[Math.floor(snaps.length / 2)], snaps[snaps.length - 1]];
}

async function ownSeeds(): Promise<ImageSeed[]> {
  const store = new MemoryStore();
  const base = await createDisk({ store, path: '/fuzz/base.vhdx' }, { format: 'vhdx', type: 'dynamic', virtualSize: 8 * MIB, blockSize: MIB });
  await base.write(0, filler(64 << 10, 1));
  await base.write(5 * MIB, filler(4096, 2));
  await base.close();
  const fixed = await createDisk({ store, path: '/fuzz/fixed.vhdx' }, { format: 'vhdx', type: 'fixed', virtualSize: 3 * MIB, blockSize: MIB });
  await fixed.write(4096, filler(8192, 3));
  await fixed.close();
  const fourK = await createDisk({ store, path: '/fuzz/4k.vhdx' }, { format: 'vhdx', type: 'dynamic', virtualSize: 4 * MIB, blockSize: MIB, logicalSectorSize: 4096 });
  await fourK.write(MIB, filler(8192, 4));
  await fourK.close();
  const parent = await openDisk({ store, path: '/fuzz/base.vhdx' });
  const child = await createDisk({ store, path: '/fuzz/child.vhdx' }, { format: 'vhdx', type: 'differencing', parent });
  await child.write(512, filler(1024, 5));
  await child.write(2 * MIB, filler(600 << 10, 6));
  await child.close();
  const withBase = (p: string) => new Map([...store.files].filter(([k]) => k === p || (p.endsWith('child.vhdx') && k.endsWith('base.vhdx'))));
  const seeds = ['/fuzz/base.vhdx', '/fuzz/fixed.vhdx', '/fuzz/4k.vhdx', '/fuzz/child.vhdx'].map((p) => seed(`own:${p}`, p, withBase(p)));
  const crashStore = new MemoryStore();
  crashStore.put('/fuzz/base.vhdx', store.files.get('/fuzz/base.vhdx')!.clone());
  const snaps = await midWriteSnapshots(crashStore, '/fuzz/dirty.vhdx', async (s) => {
    const d = await createDisk({ store: s, path: '/fuzz/dirty.vhdx' }, { format: 'vhdx', type: 'dynamic', virtualSize: 6 * MIB, blockSize: MIB });
    // Runs of one byte: regression files made from these seeds compress to almost nothing.
    for (let i = 0; i < 4; i++) await d.write(i * 1.5 * MIB, Buffer.alloc(70000, 10 + i));
    await d.flush();
    await d.writeZeroes(MIB, MIB);
    await d.close();
  });
  snaps.forEach((img, i) => seeds.push(seed(`own:dirty-log#${i}`, '/fuzz/dirty.vhdx', new Map([['/fuzz/dirty.vhdx', img]]))));
  return seeds;
}

function qemuSeeds(): ImageSeed[] {
  const imgs = qemuImages(
    [
      ['qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', '$D/q.vhdx', '8M'],
      ['qemu-io', '-f', 'vhdx', '-c', 'write -q -P 0x5a 0 64k', '-c', 'write -q -P 7 3M 4k', '-c', 'write -q -z 5M 1M', '$D/q.vhdx'],
      ['qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_size=1M', '$D/f.vhdx', '2M'],
    ],
    ['q.vhdx', 'f.vhdx'],
  );
  return imgs ? [...imgs].map(([name, img]) => seed(`qemu:${name}`, `/fuzz/${name}`, new Map([[`/fuzz/${name}`, img]]))) : [];
}

async function realSeeds(): Promise<ImageSeed[]> {
  const names = ['dynamic.vhdx.gz', 'fixed.vhdx.gz', 'differencing.avhdx.gz', 'iotest-dynamic-1G.vhdx.bz2', 'iotest-dirtylog-10G-4M.vhdx.bz2'];
  const out: ImageSeed[] = [];
  for (const n of names) {
    const img = await realImage(n);
    const p = `/real/${n.replace(/\.(gz|bz2)$/, '')}`;
    if (img) out.push(seed(`real:${n}`, p, new Map([[p, img]])));
  }
  return out;
}

export const [vhdxRead, vhdxWrite] = imageTargets('vhdx', {
  read: 'VHDX file identifier, headers, region tables, metadata and parent locator, BAT, log replayed in memory: read-only open, read, status, info',
  write: 'VHDX opened writable on a copy: log replayed into the file, then writes, zeroes, flush, close',
}, { own: ownSeeds, qemu: qemuSeeds, real: realSeeds });
