/** Raw bytes read front to back (a pipe, an HTTP body) as an encoder's input: the whole disk, in order. */
import { UsageError } from '../util/errors.js';
import { serialReads, type ContentSource } from './content.js';
import type { ForwardReader } from './forward-reader.js';

/** The content of `size` raw bytes on `reader`; `finish` refuses input longer than that. */
export function rawStreamContent(reader: ForwardReader, size: number): ContentSource {
  const reads = serialReads(async (offset, length, out) => {
    await reader.skipTo(offset, 'raw data');
    return reader.read(length, 'raw data', out);
  });
  return {
    virtualSize: size,
    ranges: size > 0 ? [{ offset: 0, length: size }] : [],
    base: null,
    name: reader.name,
    // Read in order from one stream: a read ahead could only wait for this one.
    readsInFlight: 1,
    read: reads.read,
    async finish() {
      await reads.idle();
      if (!(await reader.atEnd())) throw new UsageError(`${reader.name} holds more than --size (${size}) bytes`);
    },
  };
}
