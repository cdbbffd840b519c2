/**
 * Write-behind for files on a share (issue 14 item 5): a positioned write returns once its bytes are copied and
 * its request is on its way, so a caller writing block after block keeps several WRITEs in flight within the
 * credit window instead of paying one round trip each. What the callers rely on still holds:
 * - a read, or a write, overlapping a write still in flight waits for it (the server may run concurrent requests
 *   in any order, so overlapping ones are never concurrent);
 * - size, truncate, flush and close first wait for every write in flight, so a flush covers every write that
 *   returned before it (the only ordering the drivers' durability rules depend on: a client killed mid-way leaves
 *   any subset of the writes since the last flush applied, as concurrent writes always could);
 * - the first failure is kept and thrown by every later call, flush and close included, so no caller can
 *   flush, rename and report success over a write that failed.
 */

/** Bytes of writes a file lets run ahead of its caller. */
export const WRITE_BEHIND_BYTES = 16 << 20;

interface InFlight {
  start: number;
  /** Infinity for an extension of the file (`extend`), which every later request past its start must follow. */
  end: number;
  /** Bytes it holds in the window. */
  bytes: number;
  done: Promise<void>;
}

/** The writes of one file that have returned to the caller but not yet completed. */
export class WriteBehind {
  private readonly inflight = new Set<InFlight>();
  private bytes = 0;
  private failure: { error: unknown } | null = null;
  /** Settles when every write called so far is in flight (or refused). */
  private admission: Promise<void> = Promise.resolve();

  constructor(private readonly limit = WRITE_BEHIND_BYTES) {}

  /** Throws the first failure of a write that ran behind, if any. */
  check(): void {
    if (this.failure) throw this.failure.error;
  }

  /**
   * Starts `send(copy)` for a private copy of `data` at `position` once nothing in flight overlaps it and the window
   * has room, and returns without waiting for it to complete.
   */
  async write(position: number, data: Uint8Array, send: (bytes: Buffer) => Promise<void>): Promise<void> {
    // Writes are admitted one at a time in call order, so a later write (or read) never overtakes an earlier one
    // that is still waiting for room.
    const admitted = this.admission.then(() => this.admit(position, data, send));
    this.admission = admitted.catch(() => undefined);
    return admitted;
  }

  private async admit(position: number, data: Uint8Array, send: (bytes: Buffer) => Promise<void>): Promise<void> {
    const end = position + data.byteLength;
    await this.waitFor((w) => w.start < end && position < w.end);
    while (this.inflight.size && this.bytes + data.byteLength > this.limit) await Promise.race([...this.inflight].map((w) => w.done));
    this.check();
    // The caller may reuse its buffer as soon as this returns.
    const copy = Buffer.from(data);
    this.start({ start: position, end, bytes: copy.length, done: Promise.resolve() }, () => send(copy));
  }

  /**
   * Starts `send`, which extends the file from `from` (its size with every write so far) to a larger size, and returns
   * without waiting for it. Writes in flight all end at or before `from`, so the server may run them and the
   * extension in either order with the same result; a later read or write past `from` waits for it, so it neither
   * reads a short file nor has its bytes cut by the extension.
   */
  async extend(from: number, send: () => Promise<void>): Promise<void> {
    const admitted = this.admission.then(async () => {
      await this.waitFor((w) => from < w.end);
      this.check();
      this.start({ start: from, end: Infinity, bytes: 0, done: Promise.resolve() }, send);
    });
    this.admission = admitted.catch(() => undefined);
    return admitted;
  }

  private start(entry: InFlight, send: () => Promise<void>): void {
    entry.done = send().then(
      () => this.finish(entry),
      (error: unknown) => {
        this.failure ??= { error };
        this.finish(entry);
      },
    );
    this.inflight.add(entry);
    this.bytes += entry.bytes;
  }

  /** Waits for the writes in flight that overlap [position, position + length), then throws a kept failure. */
  async before(position: number, length: number): Promise<void> {
    await this.admission;
    const end = position + length;
    await this.waitFor((w) => w.start < end && position < w.end);
    this.check();
  }

  /** Waits for every write in flight (without throwing: `check` does that). */
  async settle(): Promise<void> {
    await this.admission;
    await this.waitFor(() => true);
  }

  private async waitFor(match: (w: InFlight) => boolean): Promise<void> {
    for (;;) {
      const waits = [...this.inflight].filter(match).map((w) => w.done);
      if (!waits.length) return;
      await Promise.all(waits);
    }
  }

  private finish(entry: InFlight): void {
    if (this.inflight.delete(entry)) this.bytes -= entry.bytes;
  }
}
