/**
 * Compressed clusters (qcow2.rst, "Compressed Clusters Descriptor"): an unaligned host byte offset and a count of
 * 512-byte sectors, packed into bits 0-61 of the L2 entry; the data is raw deflate (type 0) or zstd (type 1).
 */
import type { ZlibOptions } from 'node:zlib';
import { CorruptImageError, UnsupportedError } from '../../util/errors.js';
import { COMPRESSION_ZSTD } from './header.js';

/** node:zlib's inflateRaw, promisified, loaded with the first compressed cluster (most images have none). */
let inflater: Promise<(data: Buffer, opts: ZlibOptions) => Promise<Buffer>> | null = null;

function inflateRawAsync(data: Buffer, opts: ZlibOptions): Promise<Buffer> {
  inflater ??= Promise.all([import('node:zlib'), import('node:util')]).then(([zlib, util]) => util.promisify(zlib.inflateRaw));
  return inflater.then((inflate) => inflate(data, opts));
}

/** Where a compressed cluster's bytes lie in the file. */
export interface CompressedSpan {
  offset: number;
  /** Bytes from `offset` to the end of its last sector: the deflate stream plus whatever shares those sectors. */
  length: number;
}

/** Decodes the descriptor (bits 0-61 of an L2 entry, given as two 32-bit halves) for `clusterBits`. */
export function decodeDescriptor(hi: number, lo: number, clusterBits: number): CompressedSpan {
  const e = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo >>> 0);
  const x = BigInt(62 - (clusterBits - 8));
  const offset = Number(e & ((1n << x) - 1n));
  const sectors = Number((e >> x) & ((1n << BigInt(clusterBits - 8)) - 1n)) + 1;
  return { offset, length: sectors * 512 - (offset % 512) };
}

/**
 * Inflates one compressed cluster. `span` is the descriptor's byte range as read (zero-padded when the file ends
 * first, as qemu reads it); the result must be exactly one cluster.
 */
export async function decompress(span: Buffer, clusterSize: number, compressionType: number, where: string, subject: string): Promise<Buffer> {
  if (compressionType === COMPRESSION_ZSTD) {
    throw new UnsupportedError(`${where} is zstd-compressed (compression_type 1), which this tool cannot decompress; convert it with qemu-img convert -O qcow2 -o compression_type=zlib first`, subject);
  }
  let out: Buffer;
  try {
    out = await inflateRawAsync(span, { maxOutputLength: clusterSize });
  } catch (err) {
    throw new CorruptImageError(`${where}: compressed data does not inflate (${(err as Error).message})`, subject);
  }
  if (out.length !== clusterSize) throw new CorruptImageError(`${where}: compressed data inflates to ${out.length} bytes, not one cluster (${clusterSize})`, subject);
  return out;
}
