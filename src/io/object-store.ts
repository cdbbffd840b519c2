/**
 * Object stores: flat namespaces of immutable-by-convention objects (S3 and its kin), under a bucket and a prefix.
 * The repository model's object backend (issue 15) sees only this interface; `s3` implements it on an
 * S3-compatible service, tests put fault-injecting decorators around it here in io/ (never in the layers above).
 *
 * Keys are relative to the store's prefix and use `/` as separator; an implementation adds the prefix. Every
 * method retries transient failures (5xx, throttling, timeouts, resets) itself, with backoff, and throws a
 * VhdsyncError subclass (one line, never a credential) when it gives up or on a final answer (403, missing bucket).
 */

/** An object as a listing or a HEAD reports it. */
export interface ObjectInfo {
  /** Key relative to the store's prefix. */
  key: string;
  size: number;
  /** The ETag without quotes (radosgw may return an empty one after a multipart completion). */
  etag: string;
  lastModifiedMs: number;
  /**
   * The object's user metadata (S3 `x-amz-meta-*`, names lower-case), as a HEAD reports it; listings leave it out.
   * It is stored with the body in the same PUT, so a HEAD's metadata and ETag describe one version of the object.
   */
  metadata?: Record<string, string>;
}

/**
 * A writer's authority to change the store (an object repository's disk lease). A mutating request asks it right
 * before each of its attempts, retries included, and an attempt still running when the authority ends is aborted.
 */
export interface WriteFence {
  /** Throws (a VhdsyncError) once the writer may no longer change the store; otherwise the ms its authority has left. */
  remainingMs(): number;
}

/** Conditions on a write, decided atomically by the service (the fence by us, before each attempt). */
export interface PutConditions {
  fence?: WriteFence;
  /** Create only: fails with AlreadyExistsError when the key exists (`If-None-Match: *`). */
  ifNoneMatch?: '*';
  /** Replace only this version: fails with ConflictError when the object's ETag differs (`If-Match`). */
  ifMatch?: string;
  /**
   * The body's SHA-256 (hex) when the caller has it already (block objects are named by it): S3 signs the payload's
   * SHA-256, so the store sends this instead of hashing the body again. The service checks it against the body it
   * receives and refuses a mismatch, so a wrong value fails the write, never stores other bytes.
   */
  sha256?: string;
  /**
   * User metadata to store with the object (printable ASCII, names lower-case, a few hundred bytes at most): what
   * a reader must know of a small object before acting, which a HEAD (no body) then tells it in one round trip.
   */
  metadata?: Record<string, string>;
}

/** A byte range of an object. */
export interface ObjectRange {
  start: number;
  length: number;
}

/** A bucket (and prefix) of an S3-compatible service. */
export interface ObjectStore {
  /** The store as the user names it (`s3://bucket/prefix`), for messages; never carries a key. */
  readonly display: string;
  /** The object's bytes (or a range of them), or null when it does not exist. */
  get(key: string, range?: ObjectRange): Promise<Buffer | null>;
  /** What the service knows of an object, or null when it does not exist. */
  head(key: string): Promise<ObjectInfo | null>;
  /** Writes a whole object (atomic: readers see the old one or the new one, never a part), under `conditions`. */
  put(key: string, body: Uint8Array, conditions?: PutConditions): Promise<{ etag: string }>;
  /** Every object whose key starts with `prefix`, in key order, paged as the service pages them. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Deletes the objects (absent ones are not an error), batched as the service allows, each attempt under `fence`. */
  delete(keys: readonly string[], fence?: WriteFence): Promise<void>;
  /** True when the bucket exists and these credentials may read it; false for a missing bucket. */
  bucketExists(): Promise<boolean>;
  /** Ends pooled connections. */
  close(): Promise<void>;
}
