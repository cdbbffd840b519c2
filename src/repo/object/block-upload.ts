/**
 * Sending a new point's blocks: each block object is created once (`If-None-Match: *`, named by the SHA-256 of its
 * bytes), skipped when an object of that name and size is already there (a killed run's upload, an earlier point's
 * block), replaced when one of another size is (damage: its name fixes its bytes), and at most `inFlight` uploads
 * run at once, so memory stays at inFlight x block size whatever the disk.
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
    const listed = this.known.get(hex);
    if (listed === bytes.length) {
      this.reused++;
      return;
    }
    this.known.set(hex, bytes.length);
    while (this.running.size >= this.inFlight) await Promise.race(this.running);
    this.rethrow();
    // Listed with another size: a damaged object, which a create would keep; the name fixes the bytes, so replace it.
    const job = this.send(hex, bytes, listed === undefined)
      .then(
        () => {},
        (err: unknown) => {
          this.failure ??= { err };
        },
      )
      .finally(() => this.running.delete(job));
    this.running.add(job);
  }

  /**
   * Stores one block: created (`If-None-Match: *`), or replaced when `create` is false. A create that finds the
   * object there (a killed run of ours, a zombie) counts as reused only when that object has the block's size;
   * otherwise it is replaced: whoever writes under this name writes these very bytes, so replacing is always safe.
   */
  private async send(hex: string, bytes: Buffer, create: boolean): Promise<void> {
    const key = this.diskPrefix + blockName(hex);
    if (create) {
      this.check();
      try {
        await this.store.put(key, bytes, { ifNoneMatch: '*', sha256: hex });
        this.sent++;
        this.sentBytes += bytes.length;
        return;
      } catch (err) {
        if (!(err instanceof AlreadyExistsError)) throw err;
      }
      if ((await this.store.head(key))?.size === bytes.length) {
        this.reused++;
        return;
      }
    }
    this.check();
    await this.store.put(key, bytes, { sha256: hex });
    this.sent++;
    this.sentBytes += bytes.length;
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
