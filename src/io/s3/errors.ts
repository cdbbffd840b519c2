/**
 * S3 failures as one-line VhdsyncErrors: what the service said (its error code, never its message text for
 * refused credentials), which store or object it concerns, and what to check. Keys are never part of a message;
 * as a last guard, anything that looks like the configured keys is cut out of whatever text is passed on.
 */
import { CredentialsError, IoError, NotFoundError, VhdsyncError } from '../../util/errors.js';
import { errorName, httpStatus, RetriesExhausted, systemCode } from './retry.js';

/** What a message about a failed request needs to know. */
export interface ErrorContext {
  /** The store (`s3://bucket/prefix`) or object (`s3://bucket/prefix/key`) concerned. */
  subject: string;
  bucket: string;
  /** The endpoint as users know it (a URL, or the AWS host). */
  endpoint: string;
  /** Where the credentials came from (S3Settings.credentialSource). */
  credentialSource: string;
  /** Strings that must never appear in a message (the keys in use). */
  secrets: readonly string[];
}

const CREDENTIAL_NAMES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'Forbidden', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired', 'InvalidSecurity', 'AllAccessDisabled', 'AccountProblem']);

/** The service's error code (`NoSuchBucket`), or the HTTP status for answers without a body (HEAD). */
export function serviceCode(err: unknown): string | undefined {
  const e = err as { name?: unknown; Code?: unknown };
  if (typeof e?.Code === 'string') return e.Code;
  if (httpStatus(err) === undefined) return undefined;
  return typeof e?.name === 'string' && e.name !== 'Error' ? e.name : undefined;
}

function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join('<redacted>');
  return out.replace(/\s+/g, ' ').slice(0, 200);
}

/** Translates whatever a request threw (after its retries) into a typed one-line error. */
export function mapS3Error(thrown: unknown, ctx: ErrorContext): Error {
  if (thrown instanceof VhdsyncError) return thrown;
  const attempts = thrown instanceof RetriesExhausted ? thrown.attempts : 1;
  const err = thrown instanceof RetriesExhausted ? thrown.last : thrown;
  const after = attempts > 1 ? ` (after ${attempts} attempts)` : '';
  const status = httpStatus(err);
  const code = serviceCode(err);
  const name = errorName(err);

  if (name === 'CredentialsProviderError' || name === 'ProviderError') {
    return new CredentialsError(`no usable credentials for ${ctx.endpoint}: set ${ctx.credentialSource}`, ctx.subject);
  }
  if (status === 403 || (code && CREDENTIAL_NAMES.has(code))) {
    return new CredentialsError(`access refused by ${ctx.endpoint} (${code ?? `HTTP ${status}`}): check ${ctx.credentialSource}`, ctx.subject);
  }
  if (code === 'NoSuchBucket') return new NotFoundError(`no bucket '${ctx.bucket}' at ${ctx.endpoint}`, ctx.subject);
  if (status === undefined) {
    const sys = systemCode(err);
    if (sys || name === 'TimeoutError') {
      return new IoError(`cannot reach ${ctx.endpoint}: ${sys ?? 'timed out'}${after}`, ctx.subject);
    }
    if (name === 'TruncatedBody') return new IoError(`the object's body does not have its announced length${after}`, ctx.subject);
    // A bug or an SDK failure we do not know: keep the text (without keys) so it can be told apart.
    const text = err instanceof Error ? err.message : String(err);
    return new IoError(`request failed: ${redact(text, ctx.secrets)}${after}`, ctx.subject);
  }
  if (status >= 500 || status === 429 || code === 'SlowDown') {
    return new IoError(`${ctx.endpoint} keeps failing: ${code ?? 'error'} (HTTP ${status})${after}`, ctx.subject);
  }
  const message = (err as { message?: unknown }).message;
  const detail = typeof message === 'string' && message && message !== code ? `: ${redact(message, ctx.secrets)}` : '';
  return new IoError(`${code ?? 'refused'} (HTTP ${status})${detail}`, ctx.subject);
}
