/** The raw encoder: the whole virtual disk, zeros between the content's ranges (as zero chunks, so files stay sparse). */
import type { ContentSource } from './content.js';
import { readPieces, splitRanges } from './content.js';
import type { EncodedStream, StreamChunk } from './encoded.js';
import { UnsupportedError } from '../util/errors.js';

/** Encodes the full content of `source` as raw bytes; a delta cannot be raw (it would read as zeros where the base has data). */
export function encodeRaw(source: ContentSource): EncodedStream {
  if (source.base) throw new UnsupportedError('a raw stream cannot hold a delta: use --destination-format vhd, qcow2 or chunked', source.name);
  return {
    format: 'raw',
    length: source.virtualSize,
    async *chunks(): AsyncGenerator<StreamChunk> {
      let pos = 0;
      for await (const p of readPieces(source, splitRanges(source.ranges))) {
        if (p.offset > pos) yield p.offset - pos;
        yield p.data;
        pos = p.offset + p.data.length;
      }
      await source.finish?.();
      if (pos < source.virtualSize) yield source.virtualSize - pos;
    },
  };
}
