/** Choosing an encoder by format name. */
import type { ContentSource } from './content.js';
import type { EncodedStream, StreamFormat } from './encoded.js';
import { encodeChunked } from './chunked-encoder.js';
import { encodeRaw } from './raw-encoder.js';
import { encodeVhd } from './vhd-encoder.js';
import { encodeQcow2 } from './qcow2-encoder.js';

/** Encodes `source` in `format`; the result's length is known now, before any byte is read. */
export function encode(format: StreamFormat, source: ContentSource): EncodedStream {
  if (format === 'vhd') return encodeVhd(source);
  if (format === 'chunked') return encodeChunked(source);
  if (format === 'qcow2') return encodeQcow2(source);
  return encodeRaw(source);
}
