/** Sending an encoded stream somewhere: a new file (with holes for zeros), or any byte pipe (stdout, a socket). */
import type { RandomAccessFile } from '../io/store.js';
import { EarlyFlusher } from '../io/early-flush.js';
import { isAllZero } from '../util/struct.js';
import { chunkLength, type EncodedStream } from './encoded.js';
import { EventLoopTurns } from '../util/event-loop.js';

/** Where a byte pipe's data goes: a Node Writable, a socket, an HTTP request body. */
export interface ByteSink {
  /** Resolves when `data` has been handed over and may be reused. */
  write(data: Buffer): Promise<void>;
}

const ZEROS = Buffer.alloc(1 << 20);
/** Buffers shorter than this are written even when zero: a hole would not save anything. */
const HOLE_MIN = 4096;

/**
 * Writes the stream from offset 0 of `file` (new and empty), leaving holes where it has zeros. Returns bytes emitted.
 * A local file is written synchronously (no thread-pool hand-off per piece), with a turn for the event loop every
 * 16 MiB or 50 ms (util/event-loop.ts), and flushed in the background as it grows (io/early-flush.ts).
 */
export async function sendToFile(stream: EncodedStream, file: RandomAccessFile, onProgress?: (n: number) => void): Promise<number> {
  let pos = 0;
  const turns = new EventLoopTurns();
  const flusher = new EarlyFlusher(file);
  try {
    for await (const c of stream.chunks()) {
      if (typeof c !== 'number' && !(c.length >= HOLE_MIN && isAllZero(c))) {
        if (file.writeSync) {
          file.writeSync(pos, c);
          await turns.after(c.length);
        } else {
          await file.write(pos, c);
        }
        flusher.wrote(c.length);
      }
      pos += chunkLength(c);
      onProgress?.(chunkLength(c));
    }
  } catch (err) {
    await flusher.settle();
    throw err;
  }
  await flusher.done();
  checkLength(stream, pos);
  await file.truncate(pos);
  return pos;
}

/** Writes the stream's bytes, zeros included, to `sink`. Returns bytes emitted. */
export async function sendToSink(stream: EncodedStream, sink: ByteSink, onProgress?: (n: number) => void): Promise<number> {
  let pos = 0;
  for await (const c of stream.chunks()) {
    if (typeof c === 'number') {
      for (let left = c; left > 0; left -= ZEROS.length) await sink.write(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
    } else {
      await sink.write(c);
    }
    pos += chunkLength(c);
    onProgress?.(chunkLength(c));
  }
  checkLength(stream, pos);
  return pos;
}

/** A sink that counts and discards (`null:`). */
export const nullSink: ByteSink = { write: async () => {} };

/** The announced length is a promise to the receiver (a Content-Length): breaking it is a bug, never silent. */
function checkLength(stream: EncodedStream, emitted: number): void {
  if (emitted !== stream.length) throw new Error(`internal: ${stream.format} stream announced ${stream.length} bytes but emitted ${emitted}`);
}

/** A ByteSink over a Node Writable, honouring its callbacks so buffers are not reused while queued. */
export function writableSink(w: NodeJS.WritableStream): ByteSink {
  return {
    write: (data) =>
      new Promise<void>((resolve, reject) => {
        w.write(data, (err) => (err ? reject(err) : resolve()));
      }),
  };
}
