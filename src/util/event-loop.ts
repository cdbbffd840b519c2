/** Loops that do their I/O on the calling thread hand the event loop a turn after this many bytes, so timers still run. */
export const YIELD_BYTES = 16 << 20;

/**
 * ... and after this long at most: a lock's renewal is a chain of a dozen asynchronous steps, each needing a turn, and
 * must finish within its authority (20 s after it is due), however slowly a source gives its 16 MiB.
 */
export const YIELD_MS = 50;

/** Lets the event loop run pending timers and I/O callbacks. */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Turns for the event loop in a loop that reads and writes on the calling thread: after YIELD_BYTES or YIELD_MS. */
export class EventLoopTurns {
  private bytes = 0;
  private last = performance.now();

  /** Counts `bytes` done; when a turn is due, resolves after the event loop has had it. */
  async after(bytes: number): Promise<void> {
    this.bytes += bytes;
    if (this.bytes < YIELD_BYTES && performance.now() - this.last < YIELD_MS) return;
    this.bytes = 0;
    await yieldToEventLoop();
    this.last = performance.now();
  }
}
