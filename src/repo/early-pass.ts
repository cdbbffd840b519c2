/**
 * An incremental backup's hashing, started before the backup is ready for its blocks: the repository's requests
 * that come first (taking the lease, reading the manifest, the sweep's listings, the base point's list) wait on the
 * network, the hashing of a local image on the disk and the CPU, so the two overlap instead of adding up. The blocks
 * wait in a bounded queue (digests only: the direct path reads no data) and the list in memory until the backup
 * takes them over (drain), or the backup takes another way and drops the pass.
 */
import type { Disk, DiskIdentity } from '../formats/disk.js';
import { writeBytesAtomically } from '../io/atomic.js';
import { displayLocation, type Location } from '../io/location.js';
import { MemoryStore } from '../io/memory-store.js';
import { createMetafile, identityProblem, type HashedBlock } from '../meta/index.js';
import { ContentChangedError } from '../util/errors.js';

/** Blocks that wait for the backup before the hashing pauses (a few hundred KiB of digests). */
const QUEUE_LIMIT = 4096;

/** Thrown into the hashing to stop it once the backup has dropped it. */
class Dropped extends Error {}

/** The hashing of `disk` into a list held in memory, its blocks queued for the backup. */
export class EarlyPass {
  private queue: HashedBlock[] = [];
  private head = 0;
  private ended = false;
  private failure: unknown = null;
  private dropped = false;
  /** The backup, waiting for the next block; the hashing, waiting for room in the queue. */
  private wake: (() => void) | null = null;
  private room: (() => void) | null = null;
  private readonly mem: MemoryStore;
  private readonly done: Promise<void>;
  /** The image's identity when the hashing started: drain() checks it again after the last block was sent. */
  private readonly before: Promise<DiskIdentity>;

  constructor(
    private readonly disk: Disk,
    readonly algorithm: 'xxh128' | 'sha256',
    readonly blockSize: number,
  ) {
    this.before = disk.identity();
    this.before.catch(() => {}); // observed in drain(); a failure here also fails the hashing itself
    this.mem = new MemoryStore(disk.location.store.display(disk.location.path));
    this.done = createMetafile(disk, { algorithm, blockSize, target: { store: this.mem, path: 'early.list' }, withData: false, onBlock: (b) => this.push(b) })
      .then(
        () => {},
        (err: unknown) => {
          if (!(err instanceof Dropped)) this.failure = err;
        },
      )
      .finally(() => {
        this.ended = true;
        this.signal();
      });
  }

  private signal(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async push(b: HashedBlock): Promise<void> {
    if (this.dropped) throw new Dropped();
    this.queue.push(b);
    this.signal();
    if (this.queue.length - this.head >= QUEUE_LIMIT) await new Promise<void>((resolve) => (this.room = resolve));
    if (this.dropped) throw new Dropped();
  }

  /**
   * Every block to `onBlock` in order as the hashing yields it, then (the hashing done, the image unchanged from the
   * hashing's start to the last block) the list written to `target`; the hashing's failure is thrown here.
   */
  async drain(target: Location, onBlock: (b: HashedBlock) => Promise<void>, onProgress?: (bytes: number) => void): Promise<void> {
    for (;;) {
      while (this.head < this.queue.length) {
        const b = this.queue[this.head++];
        if (this.head >= QUEUE_LIMIT) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
        const room = this.room;
        this.room = null;
        room?.();
        await onBlock(b);
        onProgress?.(b.length);
      }
      if (this.ended) break;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.failure) throw this.failure;
    // createMetafile checked the image when the hashing ended, which may be long before the last block was sent
    // (the queue): a write in between, to a block whose digest matched the base, would be missing from a point
    // dated after it. Without the early pass the hashing ends with the last block, so this is the same guarantee.
    const why = identityProblem(await this.before, await this.disk.identity(), true);
    if (why) throw new ContentChangedError(`the image changed while it was being backed up (${why}); run the backup again when nothing writes to it`, displayLocation(this.disk.location));
    await writeBytesAtomically(target, this.mem.contents('early.list')!);
  }

  /** Stops the hashing (the backup goes another way, or failed before its pass); resolves once it has stopped. */
  async drop(): Promise<void> {
    this.dropped = true;
    const room = this.room;
    this.room = null;
    room?.();
    await this.done;
  }
}
