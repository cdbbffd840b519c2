/** The chunked-frames encoder: one frame per piece of content, nothing for what lies outside it (P14: never an empty frame). */
import type { ContentSource } from './content.js';
import { PIECE, readPieces, splitRanges } from './content.js';
import type { EncodedStream, StreamChunk } from './encoded.js';
import { FRAME_HEADER, frameHeader } from './chunked.js';

/** Encodes `source` as XAPI chunked frames: a full disk onto zeros, or a delta onto its base. */
export function encodeChunked(source: ContentSource): EncodedStream {
  let length = FRAME_HEADER;
  for (const p of splitRanges(source.ranges, PIECE)) length += FRAME_HEADER + p.length;
  return {
    format: 'chunked',
    length,
    async *chunks(): AsyncGenerator<StreamChunk> {
      for await (const p of readPieces(source, splitRanges(source.ranges, PIECE))) {
        yield frameHeader(p.offset, p.data.length);
        yield p.data;
      }
      await source.finish?.();
      yield frameHeader(0, 0);
    },
  };
}
