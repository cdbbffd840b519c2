/** Loops that do their I/O on the calling thread hand the event loop a turn after this many bytes, so timers still run. */
export const YIELD_BYTES = 16 << 20;

/**
 * ... and after this long at most: a lock's renewal is a chain of a dozen asynchronous steps, each needing a turn, and
 * must finish within its authority (20 s after it is due), however slowly a source gives its 16 MiB.
 */
export const YIELD_MS = 50;

/** Lets the event loop run pending timers and I/O callbacks. */
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** When calling-thread work last gave the event loop a turn here (one clock for the whole process). */
let lastTurn = performance.now();

/** A turn for the event loop, resolved once it has run. */
async function turn(): Promise<void> {
  await yieldToEventLoop();
  lastTurn = performance.now();
}

/**
 * A turn when YIELD_MS have passed since the last one given here, else null: for operations made of many small
 * calling-thread reads that no byte count sees (one run of a fragmented differencing image), between their pieces.
 * Kept out of the file layer: a syncIo call's promise is settled at once (io/local.ts), and callers rely on that.
 */
export function dueTurn(): Promise<void> | null {
  return performance.now() - lastTurn < YIELD_MS ? null : turn();
}

/** Turns for the event loop in a loop that reads and writes on the calling thread: after YIELD_BYTES or YIELD_MS. */
export class EventLoopTurns {
  private bytes = 0;

  /** Counts `bytes` done; when a turn is due, resolves after the event loop has had it. */
  async after(bytes: number): Promise<void> {
    this.bytes += bytes;
    if (this.bytes < YIELD_BYTES) return dueTurn() ?? undefined;
    this.bytes = 0;
    await turn();
  }
}
