/** How errors become HTTP statuses in `serve`, and how a failure after the 200 reaches the client. */
import type { ServerConnection } from './connection.js';
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

/** The page XAPI writes after its 200 when an import fails, with our one-line reason. */
export function errorPage(message: string): string {
  const text = message.replace(/[<>&]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;' })[c] as string);
  const body = `<html><body><h1>HTTP 500 internal server error</h1>The import failed; the disk is unchanged unless it is raw.<h1>Additional information</h1>${text}</body></html>`;
  return `HTTP/1.1 500 Internal Error\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** Ends an import that failed after its 200 as XAPI does: a second response in the body (which clients that read it show), then the close. */
export async function answerFailure(conn: ServerConnection, message: string): Promise<void> {
  await conn.write(errorPage(message)).catch(() => {});
  await conn.finish();
}
