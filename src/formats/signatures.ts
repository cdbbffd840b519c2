/**
 * Signatures of disk-image containers, encrypted volumes and archives that no registered driver reads. Detection
 * tries the drivers first, then these, then raw: a file carrying one is refused by name instead of being read as
 * a raw disk made of its container bytes (hashing, comparing or copying the container would silently give a wrong
 * backup). A format that gains a driver wins before its entry here is reached, so the entry can stay.
 * Only the start of the file is looked at: a raw disk begins with a boot sector, a partition table, a file system
 * or zeros, never with one of these.
 */
import type { RandomAccessFile } from '../io/store.js';

/** Bytes read from the start of a file to match signatures (VDI's is at 0x40, tar's at 257). */
export const SIGNATURE_HEAD_BYTES = 1024;

/** A container format recognised by its first bytes. */
export interface ContainerSignature {
  /** What the file is, as the user is told. */
  name: string;
  matches(head: Buffer): boolean;
  /** How to get from it to an image vhdsync reads. */
  remedy: string;
}

const QEMU_CONVERT = 'convert it with qemu-img convert -O vhdx';
const startsWith = (head: Buffer, magic: string) => head.length >= magic.length && head.toString('latin1', 0, magic.length) === magic;
const textStart = (head: Buffer) => head.toString('latin1').replace(/^\uFEFF|^\xEF\xBB\xBF/, '').trimStart();
const qcowVersion = (head: Buffer) => (startsWith(head, 'QFI\xfb') && head.length >= 8 ? head.readUInt32BE(4) : -1);

/** The table, most specific first. */
export const CONTAINER_SIGNATURES: readonly ContainerSignature[] = [
  { name: 'qcow2 image', matches: (h) => qcowVersion(h) >= 2, remedy: QEMU_CONVERT },
  { name: 'qcow (version 1) image', matches: (h) => qcowVersion(h) === 1, remedy: QEMU_CONVERT },
  { name: 'QED image', matches: (h) => startsWith(h, 'QED\0'), remedy: QEMU_CONVERT },
  { name: 'VMDK sparse extent', matches: (h) => startsWith(h, 'KDMV'), remedy: QEMU_CONVERT },
  { name: 'VMDK (ESX COWD) sparse extent', matches: (h) => startsWith(h, 'COWD'), remedy: QEMU_CONVERT },
  {
    name: 'VMDK descriptor',
    // The descriptor is text; its comment line is optional, its `createType=` and `version=` lines are not.
    matches: (h) => /^# Disk DescriptorFile/.test(textStart(h)) || (/^\s*createType\s*=/m.test(h.toString('latin1')) && /^\s*version\s*=/m.test(h.toString('latin1')) && /^[\x09\x0a\x0d\x20-\x7e]*$/.test(h.toString('latin1', 0, 64))),
    remedy: QEMU_CONVERT,
  },
  {
    name: 'VirtualBox VDI image',
    matches: (h) => (h.length >= 0x44 && h.readUInt32LE(0x40) === 0xbeda107f) || /^<<< [^\n]{0,40}VirtualBox[^\n]{0,20} Disk Image >>>/.test(h.toString('latin1', 0, 64)),
    remedy: `${QEMU_CONVERT} (or VBoxManage clonemedium --format VHD)`,
  },
  { name: 'Parallels image', matches: (h) => startsWith(h, 'WithoutFreeSpace') || startsWith(h, 'WithouFreSpacExt'), remedy: QEMU_CONVERT },
  { name: 'Bochs image', matches: (h) => startsWith(h, 'Bochs Virtual HD Image'), remedy: QEMU_CONVERT },
  { name: 'LUKS encrypted volume', matches: (h) => startsWith(h, 'LUKS\xba\xbe'), remedy: 'open it with cryptsetup and image the mapped device' },
  { name: 'gzip-compressed file', matches: (h) => startsWith(h, '\x1f\x8b\x08'), remedy: 'decompress it first' },
  { name: 'xz-compressed file', matches: (h) => startsWith(h, '\xfd7zXZ\0'), remedy: 'decompress it first' },
  { name: 'zstd-compressed file', matches: (h) => startsWith(h, '\x28\xb5\x2f\xfd'), remedy: 'decompress it first' },
  { name: 'bzip2-compressed file', matches: (h) => /^BZh[1-9]1AY&SY/.test(h.toString('latin1', 0, 10)), remedy: 'decompress it first' },
  { name: 'tar archive (an OVA?)', matches: (h) => h.length >= 262 && h.toString('latin1', 257, 262) === 'ustar', remedy: 'extract the disk image from it first' },
];

/** The container a file's first bytes announce, or null. */
export function containerSignatureOf(head: Buffer): ContainerSignature | null {
  return CONTAINER_SIGNATURES.find((s) => s.matches(head)) ?? null;
}

/** Reads a file's start and returns the container it announces, or null. */
export async function probeContainer(file: RandomAccessFile): Promise<ContainerSignature | null> {
  return containerSignatureOf(await file.read(0, SIGNATURE_HEAD_BYTES));
}
