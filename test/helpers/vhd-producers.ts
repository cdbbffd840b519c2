/**
 * Dynamic VHDs laid out byte for byte as other producers write them, built here from the VHD specification's field
 * offsets (not with our serializers), so readers can be tested on what those producers really emit:
 * - vhd-tool / XAPI export (`caml`): footer copy at 0, header at 512, 512 zero bytes, BAT at 2048 padded with 0xFF,
 *   included blocks in ascending order (0xFF bitmap + data), footer; current_size unrounded
 *   (../shared/design/xapi-http-notes.md 3.5).
 * - Xen Orchestra (`xo  `): the same with the BAT at 1536 right after the header (same notes, 3.6).
 * - Virtual PC / Virtual Server and anything else: the XO layout with another creator, host OS and current_size.
 */
import { randomBytes } from 'node:crypto';
import { chsBytes, chsForSize, type Geometry } from '../../src/formats/vhd/geometry.js';

const SECTOR = 512;
export const BLOCK = 2 << 20;
const HOST_WI2K = 0x5769326b;

/** Who wrote the image, as the footer says it. */
export interface Producer {
  creatorApp: string;
  creatorVersion: number;
  creatorHostOs: number;
  features: number;
  timestamp: number;
  /** Where the BAT starts: 2048 for vhd-tool, 1536 for XO. */
  tableOffset: number;
}

export const VHD_TOOL: Producer = { creatorApp: 'caml', creatorVersion: 1, creatorHostOs: 0, features: 2, timestamp: 0, tableOffset: 2048 };
export const XEN_ORCHESTRA: Producer = { creatorApp: 'xo  ', creatorVersion: 0x00010000, creatorHostOs: HOST_WI2K, features: 2, timestamp: 0x30000000, tableOffset: 1536 };
/** blktap / vhd-util (XenServer's tapdisk): creator `tap\0`, host OS 0. */
export const BLKTAP: Producer = { creatorApp: 'tap\0', creatorVersion: 0x00010003, creatorHostOs: 0, features: 2, timestamp: 0x20000000, tableOffset: 1536 };
/** Virtual PC 2007 (Windows host). */
export const VIRTUAL_PC: Producer = { creatorApp: 'vpc ', creatorVersion: 0x00050003, creatorHostOs: HOST_WI2K, features: 2, timestamp: 0x10000000, tableOffset: 1536 };
/** Virtual Server 2005. */
export const VIRTUAL_SERVER: Producer = { creatorApp: 'vs  ', creatorVersion: 0x00010000, creatorHostOs: HOST_WI2K, features: 2, timestamp: 0x10000000, tableOffset: 1536 };

/** Ones' complement of the byte sum, the VHD checksum. */
function checksum(b: Buffer): number {
  let sum = 0;
  for (const x of b) sum += x;
  return ~sum >>> 0;
}

function footer(p: Producer, currentSize: number, geometry: Geometry, diskType: number, uniqueId: Buffer): Buffer {
  const f = Buffer.alloc(SECTOR);
  f.write('conectix', 0, 'latin1');
  f.writeUInt32BE(p.features, 8);
  f.writeUInt32BE(0x00010000, 12);
  f.writeBigUInt64BE(512n, 16);
  f.writeUInt32BE(p.timestamp, 24);
  f.write(p.creatorApp, 28, 'latin1');
  f.writeUInt32BE(p.creatorVersion, 32);
  f.writeUInt32BE(p.creatorHostOs, 36);
  f.writeBigUInt64BE(BigInt(currentSize), 40);
  f.writeBigUInt64BE(BigInt(currentSize), 48);
  f.writeUInt16BE(geometry.cylinders, 56);
  f.writeUInt8(geometry.heads, 58);
  f.writeUInt8(geometry.sectorsPerTrack, 59);
  f.writeUInt32BE(diskType, 60);
  uniqueId.copy(f, 68);
  f.writeUInt32BE(checksum(f), 64);
  return f;
}

function dynamicHeader(tableOffset: number, entries: number, parent?: ParentLink, locatorAt = 0): Buffer {
  const h = Buffer.alloc(1024);
  h.write('cxsparse', 0, 'latin1');
  h.writeBigUInt64BE(0xffffffffffffffffn, 8);
  h.writeBigUInt64BE(BigInt(tableOffset), 16);
  h.writeUInt32BE(0x00010000, 24);
  h.writeUInt32BE(entries, 28);
  h.writeUInt32BE(BLOCK, 32);
  if (parent) {
    parent.uniqueId.copy(h, 40);
    Buffer.from(parent.name, 'utf16le').swap16().copy(h, 64);
    // One MacX locator, its space counted in sectors as blktap and vhd-tool count it.
    h.write('MacX', 576, 'latin1');
    h.writeUInt32BE(1, 580);
    h.writeUInt32BE(Buffer.byteLength(parent.macx), 584);
    h.writeBigUInt64BE(BigInt(locatorAt), 592);
  }
  h.writeUInt32BE(checksum(h), 36);
  return h;
}

/** What a differencing image records of its parent: its UniqueId, name, and a MacX locator (a file:// URL). */
export interface ParentLink {
  uniqueId: Buffer;
  name: string;
  macx: string;
}

/** A built image and the virtual content a reader must return for it. */
export interface ProducedVhd {
  uniqueId: Buffer;
  file: Buffer;
  /** Virtual content of current_size bytes. */
  content: Buffer;
  geometry: Geometry;
  /** What the geometry addresses. */
  chsSize: number;
}

/**
 * Builds a dynamic VHD of `currentSize` bytes as `p` writes it, with random data in `blocks` (block indexes; the last
 * block's bytes past current_size are zeros, as a producer reading the source past its end gets). The geometry is
 * the spec appendix's for current_size, as vhd-tool and XO compute it (`geometry` overrides it).
 */
export function produceVhd(p: Producer, currentSize: number, blocks: number[], geometry: Geometry = chsForSize(currentSize), parent?: ParentLink): ProducedVhd {
  const entries = Math.ceil(currentSize / BLOCK);
  const batBytes = Math.ceil((entries * 4) / SECTOR) * SECTOR;
  const locatorAt = p.tableOffset + batBytes;
  const locator = Buffer.alloc(parent ? SECTOR : 0);
  if (parent) locator.write(parent.macx, 'utf8');
  const dataStart = locatorAt + locator.length;
  const ordered = [...new Set(blocks)].sort((a, b) => a - b);
  const bat = Buffer.alloc(batBytes, 0xff);
  const content = Buffer.alloc(currentSize);
  const parts: Buffer[] = [];
  ordered.forEach((block, j) => {
    bat.writeUInt32BE((dataStart + j * (SECTOR + BLOCK)) / SECTOR, block * 4);
    const data = Buffer.alloc(BLOCK);
    const inside = Math.min(BLOCK, currentSize - block * BLOCK);
    randomBytes(inside).copy(data);
    data.copy(content, block * BLOCK, 0, inside);
    parts.push(Buffer.alloc(SECTOR, 0xff), data);
  });
  const uniqueId = randomBytes(16);
  const foot = footer(p, currentSize, geometry, parent ? 4 : 3, uniqueId);
  const head = Buffer.alloc(p.tableOffset);
  foot.copy(head, 0);
  dynamicHeader(p.tableOffset, entries, parent, locatorAt).copy(head, SECTOR);
  return { uniqueId, file: Buffer.concat([head, bat, locator, ...parts, foot]), content, geometry, chsSize: chsBytes(geometry) };
}
