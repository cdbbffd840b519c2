/** How errors become HTTP statuses in `serve`. */
import { BusyError, CorruptImageError, MetafileError, NotFoundError, ParentError, RequestError, UnsupportedError, UsageError, VhdsyncError } from '../util/errors.js';

/** The status and one line for any error a handler met before its response went out. */
export function statusOf(err: unknown): RequestError {
  if (err instanceof RequestError) return err;
  if (err instanceof VhdsyncError) {
    const line = err.describe();
    if (err instanceof NotFoundError) return new RequestError(404, line);
    if (err instanceof BusyError) return new RequestError(409, line);
    if (err instanceof UsageError) return new RequestError(400, line);
    if (err instanceof CorruptImageError || err instanceof UnsupportedError || err instanceof ParentError || err instanceof MetafileError) return new RequestError(422, line);
    return new RequestError(500, line);
  }
  return new RequestError(500, `internal error: ${(err as Error)?.message ?? String(err)}`);
}

/** One line for a failure after the response head went out (recorded on the task). */
export function messageOf(err: unknown): string {
  if (err instanceof VhdsyncError) return err.describe();
  return `internal error: ${(err as Error)?.message ?? String(err)}`;
}
