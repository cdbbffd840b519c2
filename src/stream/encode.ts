/** Choosing an encoder by format name, and what a full stream of a disk carries. */
import type { Disk } from '../formats/disk.js';
import { diskContent, type ContentSource } from './content.js';
import type { EncodedStream, StreamFormat } from './encoded.js';
import { STREAM_BLOCK_SIZE } from './vhd-encoder.js';
import { vhdxStreamBlockSize } from './vhdx-block-size.js';

/** Options of some encoders. */
export interface EncodeOptions {
  /** QCOW2: zeroed clusters as data, for receivers that ignore zero flags (XAPI). */
  zerosAsData?: boolean;
}

/**
 * Encodes `source` in `format`; the result's length is known once this resolves, before any byte is read. Only
 * the encoder for `format` is loaded (the QCOW2 one alone brings 13 modules of the writable QCOW2 driver).
 */
export async function encode(format: StreamFormat, source: ContentSource, opts: EncodeOptions = {}): Promise<EncodedStream> {
  if (format === 'vhd') return (await import('./vhd-encoder.js')).encodeVhd(source);
  if (format === 'vhdx') return (await import('./vhdx-encoder.js')).encodeVhdx(source);
  if (format === 'chunked') return (await import('./chunked-encoder.js')).encodeChunked(source);
  if (format === 'qcow2') return (await import('./qcow2-encoder.js')).encodeQcow2(source, { zerosAsData: opts.zerosAsData });
  return (await import('./raw-encoder.js')).encodeRaw(source);
}

/**
 * The full content of a disk for a stream in `format`. All-zero granules (the stream's own unit: a 2 MiB VHD block,
 * a VHDX block, 64 KiB otherwise) are dropped from layers whose allocation says less than that unit: raw layers (as
 * vhd-tool reads raw sources first) and layers with coarser blocks (a 32 MiB Hyper-V VHDX block holding 4 KiB of
 * data would otherwise travel as 16 VHD blocks). Layers with finer allocation are trusted, unread. A raw stream sends
 * everything anyway, so it skips that read; so does `zeroScan: false`.
 */
export function fullContent(disk: Disk, format: string, opts: { zeroScan?: boolean } = {}): Promise<ContentSource> {
  // Without the scan (a restore point, whose blocks a backup already found non-zero), the data is read once, not twice.
  if (format === 'raw' || opts.zeroScan === false) return diskContent(disk);
  const layers: Disk[] = [];
  for (let d: Disk | null = disk; d; d = d.parent) layers.push(d);
  const granule = format === 'vhd' ? STREAM_BLOCK_SIZE : format === 'vhdx' ? vhdxStreamBlockSize(disk.virtualSize) : 64 << 10;
  const scan = (d: Disk | undefined) => Boolean(d) && (d!.format === 'raw' || d!.blockSize > granule);
  return diskContent(disk, { zeroScan: { granule, scanDepths: (depth) => scan(layers[depth]) } });
}
