/** Serializes async operations that change state (allocation, metadata updates), so concurrent writers cannot race. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  /** Runs `fn` after every operation queued before it has settled. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => {});
    return next;
  }
}
