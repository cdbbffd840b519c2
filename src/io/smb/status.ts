/** NT status codes the client meets, and their translation into the project's one-line typed errors. */
import { AlreadyExistsError, IoError, NotFoundError, VhdsyncError } from '../../util/errors.js';

export const Status = {
  SUCCESS: 0x00000000,
  PENDING: 0x00000103,
  BUFFER_OVERFLOW: 0x80000005,
  NO_MORE_FILES: 0x80000006,
  INVALID_PARAMETER: 0xc000000d,
  NO_SUCH_FILE: 0xc000000f,
  END_OF_FILE: 0xc0000011,
  MORE_PROCESSING_REQUIRED: 0xc0000016,
  ACCESS_DENIED: 0xc0000022,
  OBJECT_NAME_INVALID: 0xc0000033,
  OBJECT_NAME_NOT_FOUND: 0xc0000034,
  OBJECT_NAME_COLLISION: 0xc0000035,
  OBJECT_PATH_NOT_FOUND: 0xc000003a,
  SHARING_VIOLATION: 0xc0000043,
  DELETE_PENDING: 0xc0000056,
  PASSWORD_EXPIRED: 0xc0000071,
  ACCOUNT_DISABLED: 0xc0000072,
  LOGON_FAILURE: 0xc000006d,
  ACCOUNT_RESTRICTION: 0xc000006e,
  DISK_FULL: 0xc000007f,
  INSUFFICIENT_RESOURCES: 0xc000009a,
  MEDIA_WRITE_PROTECTED: 0xc00000a2,
  FILE_IS_A_DIRECTORY: 0xc00000ba,
  NOT_SUPPORTED: 0xc00000bb,
  NETWORK_NAME_DELETED: 0xc00000c9,
  BAD_NETWORK_NAME: 0xc00000cc,
  NOT_SAME_DEVICE: 0xc00000d4,
  DIRECTORY_NOT_EMPTY: 0xc0000101,
  NOT_A_DIRECTORY: 0xc0000103,
  FILE_CLOSED: 0xc0000128,
  USER_SESSION_DELETED: 0xc0000203,
  ACCOUNT_LOCKED_OUT: 0xc0000234,
  NETWORK_SESSION_EXPIRED: 0xc000035c,
} as const;

/** An SMB reply with a failure status; `describe()` is the translated line. */
export class SmbStatusError extends IoError {
  constructor(
    readonly status: number,
    message: string,
    subject?: string,
  ) {
    super(message, subject);
  }
}

const hex = (s: number) => `0x${(s >>> 0).toString(16).padStart(8, '0')}`;

/** Turns a failure status into a typed error with one clear line; `subject` names the file or share. */
export function statusError(status: number, subject: string): VhdsyncError {
  switch (status) {
    case Status.NO_SUCH_FILE:
    case Status.OBJECT_NAME_NOT_FOUND:
    case Status.OBJECT_PATH_NOT_FOUND:
      return new NotFoundError('no such file or directory', subject);
    case Status.BAD_NETWORK_NAME:
      return new NotFoundError('no such share', subject);
    case Status.OBJECT_NAME_COLLISION:
      return new AlreadyExistsError('already exists', subject);
    case Status.LOGON_FAILURE:
      return new SmbStatusError(status, 'logon failure (wrong user name or password)', subject);
    case Status.ACCOUNT_DISABLED:
    case Status.ACCOUNT_LOCKED_OUT:
    case Status.ACCOUNT_RESTRICTION:
    case Status.PASSWORD_EXPIRED:
      return new SmbStatusError(status, 'logon failure (account disabled, locked, restricted or password expired)', subject);
    case Status.ACCESS_DENIED:
    case Status.MEDIA_WRITE_PROTECTED:
      return new SmbStatusError(status, 'permission denied', subject);
    case Status.SHARING_VIOLATION:
      return new SmbStatusError(status, 'file is in use by another program (sharing violation)', subject);
    case Status.DELETE_PENDING:
      return new SmbStatusError(status, 'file is being deleted', subject);
    case Status.DISK_FULL:
      return new SmbStatusError(status, 'no space left on share', subject);
    case Status.FILE_IS_A_DIRECTORY:
      return new SmbStatusError(status, 'is a directory', subject);
    case Status.NOT_A_DIRECTORY:
      return new SmbStatusError(status, 'a path component is not a directory', subject);
    case Status.DIRECTORY_NOT_EMPTY:
      return new SmbStatusError(status, 'directory not empty', subject);
    case Status.OBJECT_NAME_INVALID:
      return new SmbStatusError(status, 'invalid file name for SMB', subject);
    case Status.NOT_SAME_DEVICE:
      return new SmbStatusError(status, 'cannot rename across devices', subject);
    case Status.NOT_SUPPORTED:
      return new SmbStatusError(status, 'operation not supported by the SMB server', subject);
    default:
      return new SmbStatusError(status, `SMB server answered with status ${hex(status)}`, subject);
  }
}

/** The connection broke (or timed out) before a reply: positioned I/O may be retried on a new connection. */
export class ConnectionLostError extends IoError {}

/**
 * The connection was lost, or the server refused the request for a session or share it no longer knows, before the
 * server ran the request: whatever it would change is unchanged, so it may be sent again on a new connection, even
 * one that must not run twice (a FLUSH, a rename, an exclusive create).
 */
export class NotRunError extends ConnectionLostError {}

/** A handle of an earlier connection was used: nothing was sent; the file is reopened and the request sent then. */
export class StaleHandleError extends NotRunError {}

/** `err` as a NotRunError when it is a lost connection: for a request that had not been sent when it was lost. */
export function notRun(err: unknown): unknown {
  return err instanceof ConnectionLostError && !(err instanceof NotRunError) ? new NotRunError(err.message, err.subject) : err;
}
