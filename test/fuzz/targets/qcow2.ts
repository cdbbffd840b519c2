/**
 * QCOW2 target (the driver reads only): images qemu-img makes (v2 and v3, compressed and zero clusters, a snapshot,
 * extended L2, 512-byte clusters, a backing chain), and the layout of their header, extensions, L1 and L2 tables,
 * refcount table and blocks, and snapshot table.
 */
import '../../../src/formats/index.js';
import type { PagedImage } from '../memory-store.js';
import { fieldsAt, type Field, type Layout } from '../mutate.js';
import { imageTarget, type ImageSeed } from '../image-target.js';
import { qemuImages } from '../seeds.js';

const HEADER: Array<[string, number, number]> = [
  ['magic', 0, 4], ['version', 4, 4], ['backingFileOffset', 8, 8], ['backingFileSize', 16, 4], ['clusterBits', 20, 4], ['size', 24, 8],
  ['cryptMethod', 32, 4], ['l1Size', 36, 4], ['l1TableOffset', 40, 8], ['refcountTableOffset', 48, 8], ['refcountTableClusters', 56, 4],
  ['nbSnapshots', 60, 4], ['snapshotsOffset', 64, 8],
];
const HEADER_V3: Array<[string, number, number]> = [
  ['incompatible', 72, 8], ['compatible', 80, 8], ['autoclear', 88, 8], ['refcountOrder', 96, 4], ['headerLength', 100, 4], ['compressionType', 104, 1],
];
const SNAPSHOT: Array<[string, number, number]> = [['l1TableOffset', 0, 8], ['l1Size', 8, 4], ['idLength', 12, 2], ['nameLength', 14, 2], ['vmStateSize', 32, 4], ['extraLength', 36, 4]];
const OFFSET_MASK = 0x00fffffffffffe00n;

/** The first `max` non-zero 8-byte big-endian entries of a table (and its first two), as fields. */
function tableFields(img: PagedImage, name: string, at: number, entries: number, max: number, stride = 8): { fields: Field[]; values: bigint[] } {
  const bytes = img.slice(at, Math.min(entries, 1 << 16) * stride);
  const fields: Field[] = [];
  const values: bigint[] = [];
  for (let i = 0; i * stride < bytes.length && fields.length < max; i++) {
    const v = bytes.readBigUInt64BE(i * stride);
    if (v === 0n && i > 1) continue;
    fields.push({ name: `${name}[${i}]`, at: at + i * stride, size: 8, le: false });
    if (stride > 8) fields.push({ name: `${name}[${i}].bitmap`, at: at + i * stride + 8, size: 8, le: false });
    values.push(v);
  }
  return { fields, values };
}

/** The structures of a QCOW2 image as fields and regions (QCOW2 has no checksums). */
export function qcow2Layout(img: PagedImage): Layout {
  const h = img.slice(0, 112);
  const version = h.readUInt32BE(4);
  const cs = 2 ** Math.min(h.readUInt32BE(20), 21);
  const layout: Layout = { fields: fieldsAt('header', 0, false, HEADER), checksums: [], regions: [{ name: 'header', at: 0, length: 112 }] };
  let headerLength = 72;
  let extendedL2 = false;
  if (version >= 3) {
    layout.fields.push(...fieldsAt('header', 0, false, HEADER_V3));
    headerLength = h.readUInt32BE(100);
    extendedL2 = (h.readBigUInt64BE(72) & 16n) !== 0n;
  }
  // Header extensions: type and length of each, up to the end marker.
  for (let at = headerLength, k = 0; at + 8 <= Math.min(cs, 4096) && k < 8; k++) {
    const type = img.slice(at, 4).readUInt32BE(0);
    const len = img.slice(at + 4, 4).readUInt32BE(0);
    layout.fields.push({ name: `extension[${k}].type`, at, size: 4, le: false }, { name: `extension[${k}].length`, at: at + 4, size: 4, le: false });
    layout.regions.push({ name: `extension[${k}]`, at, length: 8 + Math.min(len, 512) });
    if (type === 0) break;
    at += 8 + Math.ceil(len / 8) * 8;
  }
  const backing = Number(h.readBigUInt64BE(8));
  if (backing > 0 && backing < cs) layout.regions.push({ name: 'backingName', at: backing, length: Math.min(h.readUInt32BE(16), 1023) });
  const l1 = tableFields(img, 'l1', Number(h.readBigUInt64BE(40)), h.readUInt32BE(36), 8);
  layout.fields.push(...l1.fields);
  layout.regions.push({ name: 'l1', at: Number(h.readBigUInt64BE(40)), length: Math.min(h.readUInt32BE(36) * 8, 4096) });
  const l2Stride = extendedL2 ? 16 : 8;
  for (const [k, v] of l1.values.filter((x) => (x & OFFSET_MASK) !== 0n).slice(0, 3).entries()) {
    const at = Number(v & OFFSET_MASK);
    const l2 = tableFields(img, `l2#${k}`, at, cs / l2Stride, 10, l2Stride);
    layout.fields.push(...l2.fields);
    layout.regions.push({ name: `l2#${k}`, at, length: Math.min(cs, 4096) });
  }
  const reft = Number(h.readBigUInt64BE(48));
  const rt = tableFields(img, 'refcountTable', reft, (h.readUInt32BE(56) * cs) / 8, 4);
  layout.fields.push(...rt.fields);
  for (const v of rt.values.filter((x) => x !== 0n).slice(0, 1)) layout.regions.push({ name: 'refcountBlock', at: Number(v & OFFSET_MASK), length: 512 });
  const snaps = Number(h.readBigUInt64BE(64));
  if (h.readUInt32BE(60) > 0 && snaps > 0 && snaps < img.size) {
    layout.fields.push(...fieldsAt('snapshot[0]', snaps, false, SNAPSHOT));
    layout.regions.push({ name: 'snapshots', at: snaps, length: 256 });
  }
  return layout;
}

const Q = (args: string) => ['qemu-img', ...args.split(' ')];
const IO = (file: string, ...cmds: string[]) => ['qemu-io', '-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file];

function qcow2Seeds(): ImageSeed[] {
  const files = ['v3.qcow2', 'v2.qcow2', 'ext.qcow2', 'small.qcow2', 'comp.qcow2', 'base.qcow2', 'ov.qcow2'];
  const imgs = qemuImages(
    [
      Q('create -q -f qcow2 -o cluster_size=64k $D/v3.qcow2 4M'),
      IO('$D/v3.qcow2', 'write -q -P 0x5a 0 96k', 'write -q -z 1M 128k', 'write -q -P 3 3M 4k'),
      Q('snapshot -c snap1 $D/v3.qcow2'),
      IO('$D/v3.qcow2', 'write -q -P 9 64k 64k'),
      Q('create -q -f qcow2 -o compat=0.10,cluster_size=4k $D/v2.qcow2 2M'),
      IO('$D/v2.qcow2', 'write -q -P 1 8k 12k'),
      Q('create -q -f qcow2 -o extended_l2=on,cluster_size=64k $D/ext.qcow2 4M'),
      IO('$D/ext.qcow2', 'write -q -P 2 4k 8k', 'write -q -z 2M 64k'),
      Q('create -q -f qcow2 -o cluster_size=512,refcount_bits=1 $D/small.qcow2 256k'),
      IO('$D/small.qcow2', 'write -q -P 4 1536 2048'),
      Q('create -q -f raw $D/r.raw 1M'),
      ['qemu-io', '-f', 'raw', '-c', 'write -q -P 0x11 0 256k', '$D/r.raw'],
      Q('convert -q -c -f raw -O qcow2 $D/r.raw $D/comp.qcow2'),
      Q('create -q -f qcow2 $D/base.qcow2 2M'),
      IO('$D/base.qcow2', 'write -q -P 5 0 1M'),
      Q('create -q -f qcow2 -b base.qcow2 -F qcow2 $D/ov.qcow2 2M'),
      IO('$D/ov.qcow2', 'write -q -P 6 512k 64k'),
    ],
    files,
  );
  if (!imgs) return [];
  return files
    .filter((f) => f !== 'base.qcow2')
    .map((f) => {
      const path = `/fuzz/${f}`;
      const set = new Map([[path, imgs.get(f)!]]);
      if (f === 'ov.qcow2') set.set('/fuzz/base.qcow2', imgs.get('base.qcow2')!);
      return { name: `qemu:${f}`, path, files: set, layout: qcow2Layout(imgs.get(f)!) };
    });
}

let cached: ImageSeed[] | null = null;

/** The qemu-made seeds (built once), shared with the QCOW2 stream target. */
export function qcow2ImageSeeds(): ImageSeed[] {
  return (cached ??= qcow2Seeds());
}

export const qcow2Read = imageTarget({
  name: 'qcow2-read',
  about: 'QCOW2 header and extensions, backing name, L1/L2 tables (standard and extended), compressed cluster descriptors, refcount table, snapshot table: open (with a backing chain), read, status, info',
  weight: 3,
  writable: false,
  seeds: async () => qcow2ImageSeeds(),
});
