/** Loops that do their I/O on the calling thread hand the event loop a turn after this many bytes, so timers still run. */
export const YIELD_BYTES = 16 << 20;

/** Lets the event loop run pending timers and I/O callbacks. */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
