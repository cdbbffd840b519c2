/**
 * Flushes started in the background while a long sequential writer is still writing, so the disk works in parallel
 * and the flush that finally makes the file durable finds little left to write: a new 1 GiB file took 0.47-0.51 s
 * to flush after such writes against 0.63-0.67 s after plain ones (docs/performance.md, stream). Extra flushes
 * never weaken a writer's ordering (they only make earlier writes durable sooner), so any writer may use one.
 */
import type { RandomAccessFile } from './store.js';

/** Bytes written between two background flushes. */
export const EARLY_FLUSH_BYTES = 64 << 20;

/** Starts `file.flush()` in the background every `every` bytes written (one at a time); `done()` waits for the last. */
export class EarlyFlusher {
  private since = 0;
  private running: Promise<void> | null = null;
  private error: unknown = null;

  constructor(
    private readonly file: Pick<RandomAccessFile, 'flush'>,
    private readonly every = EARLY_FLUSH_BYTES,
  ) {}

  /** Counts `n` bytes just written, starting a flush when enough have been since the last one. */
  wrote(n: number): void {
    this.since += n;
    if (this.since < this.every || this.running) return;
    this.since = 0;
    this.running = this.file.flush().then(
      () => void (this.running = null),
      (err) => void ((this.error ??= err), (this.running = null)),
    );
  }

  /** Waits for a flush still running; throws the first error a background flush met. */
  async done(): Promise<void> {
    await this.running;
    if (this.error) throw this.error;
  }

  /** Waits for a flush still running, ignoring its result (for cleanup after another failure). */
  async settle(): Promise<void> {
    await this.running;
  }
}
