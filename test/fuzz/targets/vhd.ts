/** VHD targets: seeds and the layout of their footer, dynamic header, BAT, sector bitmaps and parent locators. */
import '../../../src/formats/index.js';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import { parseFooter, FOOTER_SIZE, hasFooterCookie } from '../../../src/formats/vhd/footer.js';
import { parseDynamicHeader, DYNAMIC_HEADER_SIZE } from '../../../src/formats/vhd/dynamic-header.js';
import { bitmapBytes } from '../../../src/formats/vhd/sector-bitmap.js';
import { UNALLOCATED } from '../../../src/formats/vhd/bat.js';
import { MemoryStore, type PagedImage } from '../memory-store.js';
import { fieldsAt, type Layout } from '../mutate.js';
import { imageTargets, type ImageSeed } from '../image-target.js';
import { filler, qemuImages, realImage } from '../seeds.js';

const FOOTER_FIELDS: Array<[string, number, number]> = [
  ['cookie', 0, 8], ['features', 8, 4], ['formatVersion', 12, 4], ['dataOffset', 16, 8], ['timestamp', 24, 4], ['creatorApp', 28, 4],
  ['originalSize', 40, 8], ['currentSize', 48, 8], ['cylinders', 56, 2], ['heads', 58, 1], ['sectorsPerTrack', 59, 1], ['diskType', 60, 4],
  ['checksum', 64, 4], ['uniqueId', 68, 16], ['savedState', 84, 1],
];
const HEADER_FIELDS: Array<[string, number, number]> = [
  ['cookie', 0, 8], ['dataOffset', 8, 8], ['tableOffset', 16, 8], ['headerVersion', 24, 4], ['maxTableEntries', 28, 4], ['blockSize', 32, 4],
  ['checksum', 36, 4], ['parentUniqueId', 40, 16], ['parentTimestamp', 56, 4], ['parentName', 64, 16],
];
const LOCATOR_FIELDS: Array<[string, number, number]> = [['code', 0, 4], ['space', 4, 4], ['length', 8, 4], ['offset', 16, 8]];

/** The structures of a VHD as fields, checksums and regions (works on images with wrong checksums too). */
export function vhdLayout(img: PagedImage): Layout {
  const layout: Layout = { fields: [], checksums: [], regions: [] };
  const size = img.size;
  const footers = [size - FOOTER_SIZE, 0].filter((at) => at >= 0 && hasFooterCookie(img.slice(at, 8)));
  for (const at of footers) {
    const name = at === 0 ? 'footerCopy' : 'footer';
    layout.fields.push(...fieldsAt(name, at, false, FOOTER_FIELDS));
    layout.checksums.push({ name, kind: 'vhd', start: at, length: FOOTER_SIZE, field: at + 64 });
    layout.regions.push({ name, at, length: FOOTER_SIZE });
  }
  if (!footers.length) return layout;
  const footer = parseFooter(img.slice(footers[0], FOOTER_SIZE), 'seed', { ignoreChecksums: true });
  if (footer.dataOffset === null || footer.dataOffset + DYNAMIC_HEADER_SIZE > size) return layout;
  const hAt = footer.dataOffset;
  const h = parseDynamicHeader(img.slice(hAt, DYNAMIC_HEADER_SIZE), 'seed', { ignoreChecksums: true });
  layout.fields.push(...fieldsAt('header', hAt, false, HEADER_FIELDS));
  layout.checksums.push({ name: 'header', kind: 'vhd', start: hAt, length: DYNAMIC_HEADER_SIZE, field: hAt + 36 });
  layout.regions.push({ name: 'header', at: hAt, length: DYNAMIC_HEADER_SIZE });
  h.locators.forEach((e, i) => {
    const at = hAt + 576 + 24 * i;
    if (e.platformCode || i < 2) layout.fields.push(...fieldsAt(`locator${i}`, at, false, LOCATOR_FIELDS));
    if (e.platformCode && e.dataLength > 0 && e.dataOffset + e.dataLength <= size) {
      layout.regions.push({ name: `locator${i}.data`, at: e.dataOffset, length: e.dataLength });
    }
  });
  const entries = Math.min(h.maxTableEntries, Math.floor((size - h.tableOffset) / 4));
  if (entries <= 0) return layout;
  layout.regions.push({ name: 'bat', at: h.tableOffset, length: entries * 4 });
  const bat = img.slice(h.tableOffset, entries * 4);
  const picked = new Set<number>([0, 1, entries - 1]);
  for (let i = 0; i < entries && picked.size < 24; i++) if (bat.readUInt32BE(i * 4) !== UNALLOCATED) picked.add(i);
  let bitmaps = 0;
  for (const i of [...picked].filter((x) => x >= 0 && x < entries)) {
    layout.fields.push({ name: `bat[${i}]`, at: h.tableOffset + i * 4, size: 4, le: false });
    const e = bat.readUInt32BE(i * 4);
    if (e !== UNALLOCATED && bitmaps < 6 && e * 512 + bitmapBytes(h.blockSize) <= size) {
      layout.regions.push({ name: `bitmap[${i}]`, at: e * 512, length: bitmapBytes(h.blockSize) });
      bitmaps++;
    }
  }
  return layout;
}

function seed(name: string, path: string, files: Map<string, PagedImage>): ImageSeed {
  return { name, path, files, layout: vhdLayout(files.get(path)!) };
}

/** VHDs this tool writes: dynamic with data, fixed, a differencing child over the dynamic one, an odd size. */
async function ownSeeds(): Promise<ImageSeed[]> {
  const store = new MemoryStore();
  const base = await createDisk({ store, path: '/fuzz/base.vhd' }, { format: 'vhd', type: 'dynamic', virtualSize: 5 << 20, blockSize: 512 << 10 });
  await base.write(0, filler(64 << 10, 1));
  await base.write(3 << 20, filler(4096, 2));
  await base.close();
  const fixed = await createDisk({ store, path: '/fuzz/fixed.vhd' }, { format: 'vhd', type: 'fixed', virtualSize: 2 << 20 });
  await fixed.write(4096, filler(8192, 3));
  await fixed.close();
  const odd = await createDisk({ store, path: '/fuzz/odd.vhd' }, { format: 'vhd', type: 'dynamic', virtualSize: (3 << 20) + 1536, blockSize: 1 << 20 });
  await odd.write((3 << 20) + 512, filler(1024, 4));
  await odd.close();
  const parent = await openDisk({ store, path: '/fuzz/base.vhd' });
  const child = await createDisk({ store, path: '/fuzz/child.vhd' }, { format: 'vhd', type: 'differencing', parent });
  await child.write(512, filler(1024, 5));
  await child.write(2 << 20, filler(600 << 10, 6));
  await child.close();
  const all = (p: string) => new Map([...store.files].filter(([k]) => k === p || (p.endsWith('child.vhd') && k.endsWith('base.vhd'))));
  return ['/fuzz/base.vhd', '/fuzz/fixed.vhd', '/fuzz/odd.vhd', '/fuzz/child.vhd'].map((p) => seed(`own:${p}`, p, all(p)));
}

function qemuSeeds(): ImageSeed[] {
  const out: ImageSeed[] = [];
  const dyn = qemuImages(
    [
      ['qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', '$D/q.vhd', '4M'],
      ['qemu-io', '-f', 'vpc', '-c', 'write -q -P 0x5a 0 64k', '-c', 'write -q -P 7 2M 4k', '$D/q.vhd'],
      ['qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', '$D/f.vhd', '2M'],
    ],
    ['q.vhd', 'f.vhd'],
  );
  if (dyn) for (const [name, img] of dyn) out.push(seed(`qemu:${name}`, `/fuzz/${name}`, new Map([[`/fuzz/${name}`, img]])));
  return out;
}

async function realSeeds(): Promise<ImageSeed[]> {
  const names = ['dynamic.vhd.gz', 'fixed.vhd.gz', 'ext2.vhd.gz', 'fat-differential.vhd.gz', 'image.vhd.gz', 'image-differential.vhd.gz', 'hyperv2012r2-dynamic.vhd.bz2'];
  const out: ImageSeed[] = [];
  for (const n of names) {
    const img = await realImage(n);
    if (img) out.push(seed(`real:${n}`, `/real/${n.replace(/\.(gz|bz2)$/, '')}`, new Map([[`/real/${n.replace(/\.(gz|bz2)$/, '')}`, img]])));
  }
  return out;
}

export const [vhdRead, vhdWrite] = imageTargets('vhd', {
  read: 'VHD footer, dynamic header, BAT, sector bitmaps, parent locators: read-only open, read, status, info',
  write: 'VHD opened writable (on a copy): writes, zeroes, flush, close',
}, { own: ownSeeds, qemu: qemuSeeds, real: realSeeds });

/** The VHD seeds (built once, shared with the targets above). */
export async function vhdSeeds(): Promise<ImageSeed[]> {
  const s = await vhdRead.prepare();
  return typeof s === 'string' ? [] : (s as ImageSeed[]);
}
