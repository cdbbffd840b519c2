/** Raw bytes read front to back (a pipe, an HTTP body) as an encoder's input: the whole disk, in order. */
import { UsageError } from '../util/errors.js';
import type { ContentSource } from './content.js';
import type { ForwardReader } from './forward-reader.js';

/** The content of `size` raw bytes on `reader`; `finish` refuses input longer than that. */
export function rawStreamContent(reader: ForwardReader, size: number): ContentSource {
  let queue: Promise<unknown> = Promise.resolve();
  return {
    virtualSize: size,
    ranges: size > 0 ? [{ offset: 0, length: size }] : [],
    base: null,
    name: reader.name,
    read(offset, length, into) {
      const p = queue.then(async () => {
        await reader.skipTo(offset, 'raw data');
        return reader.read(length, 'raw data', into);
      });
      queue = p.catch(() => {});
      return p;
    },
    async finish() {
      await queue;
      if (!(await reader.atEnd())) throw new UsageError(`${reader.name} holds more than --size (${size}) bytes`);
    },
  };
}
