/**
 * Sending a new point's blocks: each block object is created once (`If-None-Match: *`, named by the SHA-256 of its
 * bytes), skipped when an object of that name and size is already there (a killed run's upload, an earlier point's
 * block), and at most `inFlight` uploads run at once, so memory stays at inFlight x block size whatever the disk.
 */
import type { ObjectStore } from '../../io/object-store.js';
import { AlreadyExistsError } from '../../util/errors.js';
import { blockName } from './keys.js';

/** Blocks sent at once by default: 8 x the default 2 MiB block = 16 MiB of buffers. */
export const DEFAULT_UPLOADS_IN_FLIGHT = 8;

/** Uploads one point's new blocks in parallel, within a bound. */
export class BlockUploader {
  private readonly running = new Set<Promise<void>>();
  private failure: { err: unknown } | null = null;
  /** Blocks sent and their bytes; blocks found already stored. */
  sent = 0;
  sentBytes = 0;
  reused = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly diskPrefix: string,
    /** Block hashes (hex) known to be stored or on their way, with their sizes. */
    private readonly known: Map<string, number>,
    private readonly inFlight = DEFAULT_UPLOADS_IN_FLIGHT,
    /** Called before every request that changes the store (the session's lease check). */
    private readonly check: () => void = () => {},
  ) {}

  /** Queues block `bytes` (owned by the uploader from now on) under its hash; waits while the bound is reached. */
  async put(hex: string, bytes: Buffer): Promise<void> {
    this.rethrow();
    if (this.known.get(hex) === bytes.length) {
      this.reused++;
      return;
    }
    this.known.set(hex, bytes.length);
    while (this.running.size >= this.inFlight) await Promise.race(this.running);
    this.rethrow();
    this.check();
    const job = this.store
      .put(this.diskPrefix + blockName(hex), bytes, { ifNoneMatch: '*' })
      .then(
        () => {
          this.sent++;
          this.sentBytes += bytes.length;
        },
        (err: unknown) => {
          // Same name, same bytes: someone (a killed run of ours) stored it first.
          if (err instanceof AlreadyExistsError) this.reused++;
          else this.failure ??= { err };
        },
      )
      .finally(() => this.running.delete(job));
    this.running.add(job);
  }

  /** Waits for every queued upload; throws the first failure. */
  async drain(): Promise<void> {
    while (this.running.size) await Promise.race(this.running);
    this.rethrow();
  }

  private rethrow(): void {
    if (this.failure) throw this.failure.err;
  }
}
