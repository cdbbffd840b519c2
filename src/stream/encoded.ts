/**
 * What every encoder produces: its total length, known before the first byte, and its bytes in order.
 * A chunk is a Buffer, or a number of zero bytes (sinks that can seek leave holes there, others write zeros).
 */

/** Formats an encoder can produce. */
export type StreamFormat = 'raw' | 'vhd' | 'vhdx' | 'chunked' | 'qcow2';

/** One piece of an encoded stream: bytes, or a count of zero bytes. */
export type StreamChunk = Buffer | number;

/** An encoded stream, ready to be sent once. */
export interface EncodedStream {
  readonly format: StreamFormat;
  /** Exact number of bytes `chunks()` yields. */
  readonly length: number;
  /** The bytes in order; a yielded Buffer may be reused once the consumer asks for the next chunk. */
  chunks(): AsyncGenerator<StreamChunk>;
}

/** Bytes a chunk stands for. */
export function chunkLength(c: StreamChunk): number {
  return typeof c === 'number' ? c : c.length;
}
