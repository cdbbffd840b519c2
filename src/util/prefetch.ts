/**
 * Yields `load(item)` for each item in order while up to `depth` loads run ahead of the consumer, so reads
 * overlap the consumer's writes. A load is started only after the consumer has asked for the next result, so a
 * caller rotating `depth + 1` buffers never has one overwritten while it still uses it.
 */
export async function* prefetch<T, R>(
  items: AsyncIterable<T> | Iterable<T>,
  load: (item: T) => Promise<R>,
  depth: number,
): AsyncGenerator<{ item: T; value: R }> {
  const it = (Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : items[Symbol.iterator]()) as AsyncIterator<T> | Iterator<T>;
  const queue: Array<Promise<{ item: T; value: R }>> = [];
  let exhausted = false;
  try {
    for (;;) {
      while (!exhausted && queue.length < depth) {
        const r = await it.next();
        if (r.done) {
          exhausted = true;
          break;
        }
        const item = r.value;
        const p = load(item).then((value) => ({ item, value }));
        // Awaited in order below; until then a failure must not surface as an unhandled rejection.
        p.catch(() => {});
        queue.push(p);
      }
      const head = queue.shift();
      if (!head) return;
      yield await head;
    }
  } finally {
    // A consumer that stops early (an error, a break) may close what the loads read from: let them finish first.
    await Promise.allSettled(queue);
    await it.return?.();
  }
}
