/** Opening a repository by the name a user gives it (a local path, an SMB location, `s3://BUCKET/PREFIX`). */
import { parseLocation } from '../io/location.js';
import { hookObjectStore } from '../io/object-kill-hook.js';
import { isObjectStoreLocation, openObjectStore, type ObjectStoreOptions } from '../io/object-stores.js';
import { NotFoundError } from '../util/errors.js';
import type { RepoBackend } from './backend.js';
import { FileRepository, REPOSITORY_MARKER } from './file-backend.js';
import { ObjectRepository } from './object/object-backend.js';

/** The repository at `text`; with `mustExist`, refuses a folder or prefix that is not one. `objects` applies to `s3://`. */
export async function openRepository(text: string, mustExist = true, objects: ObjectStoreOptions = {}): Promise<RepoBackend> {
  const repo = isObjectStoreLocation(text)
    ? new ObjectRepository(hookObjectStore(await openObjectStore(text, objects)))
    : new FileRepository(await parseLocation(text));
  if (mustExist && !(await repo.exists())) throw new NotFoundError(`not a vhdsync repository (no ${REPOSITORY_MARKER}); vhdsync backup --repo creates one`, repo.display);
  return repo;
}

/**
 * What `serve` was pointed at when it is a repository: `s3://` always (an object-store prefix holds nothing else
 * serve could export, so one without the marker is refused), a folder only when it holds the repository marker
 * (never guessed from its content). Null for a folder without the marker: a plain folder of images.
 */
export async function repositoryToServe(text: string, objects: ObjectStoreOptions = {}): Promise<RepoBackend | null> {
  if (isObjectStoreLocation(text)) return openRepository(text, true, objects);
  const repo = new FileRepository(await parseLocation(text));
  return (await repo.exists()) ? repo : null;
}
