/**
 * The storage under the repository model (docs/repository.md): what backup, prune, restore, verify and list need
 * from where a repository lives. `file-backend.ts` keeps it in a folder on any ByteStore (local, SMB); an object
 * store is meant to be a second implementation of these same interfaces, with its own layout.
 */
import type { Disk } from '../formats/disk.js';
import type { Location } from '../io/location.js';
import type { Metafile } from '../meta/index.js';
import type { DiskManifest, PointKind, RestorePoint } from './manifest.js';

/** `--reflink`: share unchanged blocks with the previous point's file where the store can (auto), must, or never. */
export type ReflinkMode = 'auto' | 'always' | 'never';

/** What a new point is made from. */
export interface PointSpec {
  /** The newest point, when the new one may build on it (same virtual size, a readable list); null for a full point. */
  base: RestorePoint | null;
  reflink: ReflinkMode;
  virtualSize: number;
  logicalSectorSize: number;
  blockSize: number;
}

/** A new point as the backend stored it. */
export interface WrittenPoint<T> {
  image: string;
  kind: PointKind;
  parent: string | null;
  /** What the fill callback returned. */
  result: T;
  /** The size of the point's image when the backend knows it without asking (pointSize otherwise). */
  imageBytes?: number;
}

/**
 * Fills a new point: `image` starts as the base's content (a child of it, or a clone of it) or as zeros, and reads
 * as the base; the callback writes what changed and the point's list (the source's metafile) to `listAt`.
 */
export type PointFill<T> = (image: Disk, listAt: Location, kind: PointKind) => Promise<T>;

/** A repository's storage, for commands that only read. */
export interface RepoBackend {
  /** The repository as the user names it, for messages. */
  readonly display: string;
  /** True when the repository exists; with `create`, makes it first if it does not (backup). */
  exists(create?: boolean): Promise<boolean>;
  /** Names of the disks that have a manifest, sorted. */
  listDisks(): Promise<string[]>;
  /** A disk's manifest, or null when the disk does not exist; RepositoryDamageError when it cannot be read. */
  readManifest(disk: string): Promise<DiskManifest | null>;
  /** A point's image, opened read-only with its chain. */
  openPoint(disk: string, point: RestorePoint): Promise<Disk>;
  /** A point's list (its metafile), unchecked against the image; RepositoryDamageError when missing or unreadable. */
  openList(disk: string, point: RestorePoint, geometry: { virtualSize: number; logicalSectorSize: number }): Promise<Metafile>;
  /** Where a point's image lives, for messages. */
  pointName(disk: string, point: RestorePoint): string;
  /** Size of a point's image in the store (apparent size), or null when it is missing. */
  pointSize(disk: string, point: RestorePoint): Promise<number | null>;
  /** Takes a disk's lock (one writer per disk) and returns the session that may change it. */
  lockDisk(disk: string, op: string): Promise<DiskSession>;
  /**
   * Removes the locks of disks that have no manifest and nothing else (object repositories: the lease a first backup
   * killed before its first manifest left), each taken as a lock is first; returns what it removed. `prune` of every
   * disk calls it. Absent where no such leftover exists.
   */
  dropOrphanLocks?(): Promise<string[]>;
  /** Ends pooled connections (object stores); a long-running reader such as `serve` calls it when it stops. */
  close?(): Promise<void>;
}

/** What `fold` needs of a point: its id and its image's name. */
export type PointName = Pick<RestorePoint, 'id' | 'image'>;

/** A disk held by this run: the only way to change it. */
export interface DiskSession {
  readonly disk: string;
  /** Replaces the manifest atomically. */
  writeManifest(m: DiskManifest): Promise<void>;
  /** Writes a new point under its final name (never visible half-written) with its metafile. */
  writePoint<T>(id: string, spec: PointSpec, fill: PointFill<T>): Promise<WrittenPoint<T>>;
  /**
   * Makes `drop`'s image hold its child `into`'s content under `into`'s name (the crash-safe merge of `into` into
   * `drop`, then renames). Idempotent: after a kill, calling it again finishes the job.
   */
  fold(drop: PointName, into: PointName): Promise<void>;
  /**
   * Restore points under the disk (images, maps: what verify --repair rebuilds a manifest from), by name. Asked only
   * when the disk has no manifest: then they are a lost manifest's points (a first backup writes its manifest before
   * anything else), never to be swept.
   */
  unrecordedPoints(): Promise<string[]>;
  /**
   * Records points the manifest should list but does not (object repositories: maps above its id high-water mark) in
   * a new generation, which it returns; `m` itself when there are none. Absent where no such state exists.
   */
  recordLater?(m: DiskManifest): Promise<DiskManifest>;
  /** Removes everything of this disk that `m` does not reference (a killed run's leftovers, dropped points). */
  sweep(m: DiskManifest): Promise<string[]>;
  /** Throws once the lock was lost (lease lapsed, taken over). */
  check(): void;
  release(): Promise<void>;
}
