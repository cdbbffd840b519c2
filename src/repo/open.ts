/** Opening a repository by the name a user gives it (a local path, an SMB location). */
import { parseLocation } from '../io/location.js';
import { NotFoundError } from '../util/errors.js';
import type { RepoBackend } from './backend.js';
import { FileRepository, REPOSITORY_MARKER } from './file-backend.js';

/** The repository at `text`; with `mustExist`, refuses a folder that is not one. */
export async function openRepository(text: string, mustExist = true): Promise<RepoBackend> {
  const repo = new FileRepository(await parseLocation(text));
  if (mustExist && !(await repo.exists())) throw new NotFoundError(`not a vhdsync repository (no ${REPOSITORY_MARKER}); vhdsync backup --repo creates one`, repo.display);
  return repo;
}
