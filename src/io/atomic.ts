import { randomBytes } from 'node:crypto';
import type { Location } from './location.js';
import type { ByteStore, RandomAccessFile } from './store.js';
import { AlreadyExistsError, NotFoundError, VhdsyncError } from '../util/errors.js';

/** The temporary name `writeAtomically` uses for `target`: hidden, next to it, unique per call. */
export function tempLocationFor(target: Location): Location {
  const { store, path } = target;
  const name = `.${store.paths.basename(path)}.${randomBytes(4).toString('hex')}.partial`;
  return { store, path: store.paths.join(store.paths.dirname(path), name) };
}

/**
 * Produces a new file under a temporary name next to its final one, then flushes and renames it, so a
 * crash never leaves a partial file under the final name. `body` creates and closes the temp file. Without
 * `overwrite`, an existing file is refused before `body` runs, unless `checked` says the caller has just found
 * none there; either way the rename refuses one that appeared meanwhile. With `flushed`, `body` has made the temp
 * file durable itself (flushByName, or a flush in its create), a failed flush thrown: only the rename is left.
 */
export async function writeAtomically<T>(
  target: Location,
  body: (temp: Location) => Promise<T>,
  opts: { overwrite?: boolean; checked?: boolean; flushed?: boolean } = {},
): Promise<T> {
  const { store, path } = target;
  if (!opts.overwrite && !opts.checked && (await store.stat(path))) {
    throw new AlreadyExistsError('already exists (use --force to replace it)', store.display(path));
  }
  const temp = tempLocationFor(target);
  let ok = false;
  try {
    const result = await body(temp);
    // Without overwrite, a file that appeared under the final name meanwhile (another run's) is never replaced.
    try {
      // The flush is answered before the rename is sent: never one chain (decision 0034).
      if (!opts.flushed) await flushByName(temp);
      await store.rename(temp.path, path, { replace: opts.overwrite === true });
    } catch (err) {
      if (err instanceof AlreadyExistsError && !opts.overwrite) throw new AlreadyExistsError('appeared while this run was writing it (another run?); left as it is', store.display(path));
      throw err;
    }
    await store.syncDir(store.paths.dirname(path));
    ok = true;
    return result;
  } catch (err) {
    // A missing folder shows up as the hidden temp name not being found: name the folder instead.
    const dir = store.paths.dirname(path);
    if (err instanceof NotFoundError && !(await store.stat(dir).catch(() => 'unknown'))) throw new NotFoundError('no such directory', store.display(dir));
    // The user never named the hidden temp file: errors about it (permission denied, no space) are about the target.
    if (err instanceof VhdsyncError && err.subject === store.display(temp.path)) {
      throw err.withSubject(store.display(path));
    }
    throw err;
  } finally {
    if (!ok) await store.unlink(temp.path).catch(() => {});
  }
}

/** Makes the data of the closed file at `loc` durable: in one step where the store can (SMB), else open, flush, close. */
export async function flushByName(loc: Location): Promise<void> {
  const { store, path } = loc;
  if (store.flushByName) return store.flushByName(path);
  // Through a fresh handle: whatever wrote the file, its data is durable once this returns.
  const f = await store.open(path, 'readwrite');
  try {
    await f.flush();
  } finally {
    await f.close();
  }
}

/** Creates `loc` exclusively (AlreadyExistsError when it exists) holding `bytes`, flushed when asked. */
export async function createWithBytes(loc: Location, bytes: Uint8Array, opts: { flush?: boolean } = {}): Promise<void> {
  if (loc.store.writeNew) return loc.store.writeNew(loc.path, bytes, opts);
  const f = await loc.store.createExclusive(loc.path);
  try {
    await f.write(0, bytes);
    if (opts.flush) await f.flush();
  } finally {
    await f.close();
  }
}

/** Writes `bytes` as the whole new content of `target` through `writeAtomically` (temp name, flush, rename). */
export async function writeBytesAtomically(target: Location, bytes: Uint8Array, opts: { overwrite?: boolean } = {}): Promise<void> {
  // Where the file is created in one step (SMB: one chain), the FLUSH rides in it, its answer checked, and the rename
  // goes alone: two round trips, not three.
  const flushed = Boolean(target.store.writeNew);
  await writeAtomically(target, (temp) => createWithBytes(temp, bytes, { flush: flushed }), { ...opts, flushed });
}

/** What a producer of a file's bytes by position needs of the file (writeSizedAtomically hands it one). */
export type PositionedWriter = Pick<RandomAccessFile, 'write'>;

/** The largest file writeSizedAtomically lays out in memory to publish in one step. */
export const ONE_STEP_LIMIT = 4 << 20;

/**
 * `writeAtomically` for a file of exactly `size` bytes that `fill` produces by positioned writes. Where the store
 * creates a small file in one step (writeNew: on a share, CREATE + WRITEs + CLOSE in one round trip) and `size` is at
 * most ONE_STEP_LIMIT, the bytes are laid out in memory first and published as writeBytesAtomically does: two round
 * trips (create, then flush and rename) instead of four (create, the writes, close, flush and rename). Elsewhere
 * they stream into the temp file. Same contract either way: temp name, flushed before the rename.
 */
export async function writeSizedAtomically(
  target: Location,
  size: number,
  fill: (out: PositionedWriter) => Promise<void>,
  opts: { overwrite?: boolean } = {},
): Promise<void> {
  if (target.store.writeNew && size <= ONE_STEP_LIMIT) {
    const bytes = Buffer.alloc(size);
    await fill({
      write: async (position, data) => {
        if (position + data.byteLength > size) throw new Error(`write of ${data.byteLength} bytes at ${position} past the file's ${size}`);
        bytes.set(data, position);
      },
    });
    return writeBytesAtomically(target, bytes, opts);
  }
  await writeAtomically(
    target,
    async (temp) => {
      const file = await temp.store.createExclusive(temp.path);
      try {
        await fill(file);
      } finally {
        await file.close();
      }
    },
    opts,
  );
}

/**
 * Reads a small file whole: null when there is none (or it is a folder); `tooLarge` is thrown for one past
 * `maxBytes`, so a stray big file is never read into memory.
 */
export async function readSmallFile(loc: Location, maxBytes: number, tooLarge: () => Error): Promise<Uint8Array | null> {
  if (loc.store.readSmall) {
    const small = await loc.store.readSmall(loc.path, maxBytes);
    if (small && small.size > maxBytes) throw tooLarge();
    return small?.bytes ?? null;
  }
  const st = await loc.store.stat(loc.path);
  if (!st || st.isDirectory) return null;
  if (st.size > maxBytes) throw tooLarge();
  const f = await loc.store.open(loc.path, 'read');
  try {
    return await f.read(0, st.size);
  } finally {
    await f.close();
  }
}
