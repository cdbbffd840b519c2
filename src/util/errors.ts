/**
 * Every error the tool raises on purpose. The CLI prints `vhdsync: <subject>: <message>` for these
 * and exits with `exitCode`; anything else is a bug and prints a stack trace only with --debug.
 */

/** Base class of all deliberate errors; `subject` names the file or argument concerned. */
export class VhdsyncError extends Error {
  readonly exitCode: number = 1;
  constructor(
    message: string,
    readonly subject?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }

  /** The same error (same class) about another subject, e.g. a file's final name instead of its temp name. */
  withSubject(subject: string): this {
    const copy = Object.create(Object.getPrototypeOf(this)) as this;
    Object.assign(copy, this, { subject, message: this.message, stack: this.stack });
    return copy;
  }

  /** One line for the user: `<subject>: <message>` or just the message, control characters escaped as `\xNN`. */
  describe(): string {
    const line = this.subject ? `${this.subject}: ${this.message}` : this.message;
    // Names and paths read from files may hold control characters; a newline among them would break the one line.
    return line.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  }
}

/** Bad command-line use: exit code 2. */
export class UsageError extends VhdsyncError {
  override readonly exitCode: number = 2;
}

/** The file's structure is broken or inconsistent (bad checksum, entry past end of file, ...). */
export class CorruptImageError extends VhdsyncError {}

/** A legal but unsupported feature or combination. */
export class UnsupportedError extends VhdsyncError {}

/** A file, share or directory does not exist. */
export class NotFoundError extends VhdsyncError {}

/** A file exists where the operation would create one, and overwriting was not asked for. */
export class AlreadyExistsError extends VhdsyncError {}

/** A differencing image's parent cannot be found, does not match, or the chain loops. */
export class ParentError extends VhdsyncError {}

/** A metafile is unreadable, stale, or incompatible with another. */
export class MetafileError extends VhdsyncError {}

/** The image's content changed under us (for example, a copied block's digest no longer matches). */
export class ContentChangedError extends VhdsyncError {}

/** Another vhdsync run holds the image (a copy or merge in progress). */
export class BusyError extends VhdsyncError {}

/** An operating-system or network I/O failure, translated to one line. */
export class IoError extends VhdsyncError {}

/** Translates Node's system errors (ENOENT, EACCES, ENOSPC, ...) into typed one-line errors. */
/** One line for any thrown value: a VhdsyncError's describe(), else the message (for a step that must name why). */
export function describeError(err: unknown): string {
  return err instanceof VhdsyncError ? err.describe() : String((err as Error)?.message ?? err);
}

export function fromSystemError(err: unknown, subject: string): Error {
  if (err instanceof VhdsyncError) return err;
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return new NotFoundError('no such file or directory', subject);
    case 'EEXIST':
      return new AlreadyExistsError('already exists', subject);
    case 'EACCES':
    case 'EPERM':
      return new IoError('permission denied', subject);
    case 'ENOSPC':
      return new IoError('no space left on device', subject);
    case 'EISDIR':
      return new IoError('is a directory', subject);
    case 'ENOTDIR':
      return new IoError('a path component is not a directory', subject);
    case 'EROFS':
      return new IoError('read-only file system', subject);
    case 'EIO':
      return new IoError('input/output error', subject);
    case 'EDQUOT':
      return new IoError('disk quota exceeded', subject);
    case 'EFBIG':
      return new IoError('file too large for this file system', subject);
    case 'ERR_FILE_SHRANK':
      // A mapped file cut short while it was being read (SIGBUS, caught by native/xxh3blocks.c).
      return new ContentChangedError('the file shrank while it was being hashed', subject);
    default:
      if (e && typeof e.code === 'string') return new IoError(`${e.code}: ${e.message}`, subject);
      return err instanceof Error ? err : new Error(String(err));
  }
}

/** A refused HTTP request (`serve`): the status to answer with, and a one-line reason for the body and the log. */
export class RequestError extends VhdsyncError {
  constructor(
    readonly status: number,
    message: string,
    subject?: string,
    /** Extra response headers (WWW-Authenticate, Retry-After, Allow). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message, subject);
  }
}

/** Something in a backup repository is damaged or missing: a manifest, a restore point's image or its metafile. */
export class RepositoryDamageError extends VhdsyncError {}

/** A conditional write lost: the object (or file) changed since it was read (`If-Match` failed). */
export class ConflictError extends VhdsyncError {}

/** A service refused or lacks the credentials (S3: wrong keys, expired token, no permission). Never carries a key. */
export class CredentialsError extends VhdsyncError {}

/**
 * A manifest generation was written (created), then a step right after it failed: the generation stands, and the
 * message says so and what did not happen. `generation` is the one written; `unfinished` is the message without the
 * "generation N ... is written, but" opening, for a caller (backup) that words it for what the generation records.
 */
export class ManifestWrittenError extends VhdsyncError {
  constructor(
    readonly generation: number,
    readonly unfinished: string,
    message: string,
    subject?: string,
  ) {
    super(message, subject);
  }
}

/**
 * A backup's restore point is recorded, but a step after that failed or could not be confirmed (its `--keep`, the
 * check that no other run superseded it): exit 3, so that a script tells it from a backup that made nothing (exit 1).
 */
export class RecordedError extends VhdsyncError {
  override readonly exitCode: number = 3; // EXIT_RECORDED (cli/run.ts)
  constructor(
    message: string,
    subject?: string,
    /** The point that stands (absent on the CLI's summary of several disks), for `--json`. */
    readonly recorded?: { disk: string; point: string; generation: number },
  ) {
    super(message, subject);
  }
}

/**
 * An object repository's manifest cannot be rebuilt, or a later point recorded, because a point cannot be proven
 * from its own objects: `why` says which and why; the message is `verify --repair`'s refusal, and a caller that
 * words it otherwise (a backup recording a later point) uses `why`, never the message.
 */
export class UnprovenPointError extends RepositoryDamageError {
  constructor(
    readonly why: string,
    subject?: string,
  ) {
    super(`cannot rebuild the manifest: ${why} (nothing was written)`, subject);
  }
}
