/** Choosing an encoder by format name. */
import type { ContentSource } from './content.js';
import type { EncodedStream, StreamFormat } from './encoded.js';
import { encodeChunked } from './chunked-encoder.js';
import { encodeRaw } from './raw-encoder.js';
import { encodeVhd } from './vhd-encoder.js';

/** Encodes `source` in `format`; the result's length is known now, before any byte is read. */
export function encode(format: StreamFormat, source: ContentSource): EncodedStream {
  if (format === 'vhd') return encodeVhd(source);
  if (format === 'chunked') return encodeChunked(source);
  return encodeRaw(source);
}
