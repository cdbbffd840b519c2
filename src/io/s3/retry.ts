/**
 * Retries of transient service failures: which errors are worth another attempt, and the wait before it
 * (exponential backoff with jitter, a bounded number of attempts and a bounded total time). Our own loop around
 * each request rather than the SDK's retry strategy (docs/decisions, "S3 client"): it bounds the total time, retries a GET whose
 * body broke off midway (the SDK's strategy covers the request, not reading the body after it returned), and
 * knows which conditional PUTs need a look before their result can be trusted (s3-store.ts).
 */

/** How many attempts, how long to wait between them, and how long a request may take over all its attempts. */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** The first wait; each further one doubles, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** No new attempt starts once this much time has passed since the first. */
  totalMs: number;
}

/** The default: 6 attempts over about 4-8 s of waits (a restarting gateway or a throttling burst is ridden out). */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 250, maxDelayMs: 4000, totalMs: 60_000 };

/** Network-level failures where the request may simply be sent again. */
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'ENOTCONN', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET']);
/** Service answers that mean "not now": throttling and the S3 codes for transient trouble. */
const TRANSIENT_NAMES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'ThrottledException', 'RequestThrottled', 'RequestLimitExceeded', 'TooManyRequestsException', 'RequestTimeout', 'RequestTimeoutException', 'InternalError', 'ServiceUnavailable', 'ConditionalRequestConflict', 'OperationAborted', 'TimeoutError', 'TruncatedBody']);

/**
 * The error's system code (`ECONNRESET`), looking into an AggregateError (several addresses tried) too. The SDK
 * turns a thrown value that is not an Error of its own realm (Node's errors seen from a test runner's VM context)
 * into `Error('AWS SDK error wrapper for TimeoutError: read ECONNRESET')`: the code is read back from that text.
 */
export function systemCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; errors?: unknown[]; cause?: unknown; message?: unknown };
  if (typeof e?.code === 'string') return e.code;
  if (typeof e?.message === 'string' && e.message.startsWith('AWS SDK error wrapper for ')) {
    const m = /\b(E[A-Z]{3,}|UND_ERR_[A-Z_]+|ERR_STREAM_PREMATURE_CLOSE)\b/.exec(e.message);
    if (m) return m[1];
    // Node's text for a connection closed before any answer (its code is ECONNRESET).
    if (/socket hang up/.test(e.message)) return 'ECONNRESET';
  }
  if (Array.isArray(e?.errors)) for (const inner of e.errors) {
    const c = systemCode(inner);
    if (c) return c;
  }
  if (e?.cause && e.cause !== err) return systemCode(e.cause);
  return undefined;
}

/** The error's name, or for the SDK's wrapper of a foreign-realm error (see systemCode) the wrapped one's. */
export function errorName(err: unknown): string | undefined {
  const e = err as { name?: unknown; message?: unknown };
  if (typeof e?.message === 'string') {
    const m = /^AWS SDK error wrapper for (\w+):/.exec(e.message);
    if (m) return m[1];
  }
  return typeof e?.name === 'string' ? e.name : undefined;
}

/** The HTTP status of a service error, if the service answered. */
export function httpStatus(err: unknown): number | undefined {
  const s = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  return typeof s === 'number' ? s : undefined;
}

/** True when another attempt of the same request may succeed. */
export function isTransient(err: unknown): boolean {
  const status = httpStatus(err);
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  const name = errorName(err);
  if (name !== undefined && TRANSIENT_NAMES.has(name)) return true;
  const code = systemCode(err);
  return code !== undefined && TRANSIENT_CODES.has(code);
}

/** The wait before attempt `attempt + 1` (attempt 1 is the first): half fixed, half random, so waits never collapse to 0. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

/** The last error of a request that ran out of attempts, with how many were made. */
export class RetriesExhausted extends Error {
  constructor(
    readonly last: unknown,
    readonly attempts: number,
  ) {
    super('retries exhausted');
  }
}

/** Hooks for tests: a clock and a sleep they control. */
export interface RetryClock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const realClock: RetryClock = { now: () => Date.now(), sleep: (ms) => new Promise((r) => setTimeout(r, ms)) };

/**
 * Runs `op` (given the attempt number, from 1) until it succeeds, fails with a final error (thrown as is), or the
 * policy runs out (RetriesExhausted wrapping the last transient error).
 */
export async function withRetries<T>(
  op: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  clock: RetryClock = realClock,
  onRetry?: (attempt: number, err: unknown) => void,
): Promise<T> {
  const start = clock.now();
  for (let attempt = 1; ; attempt++) {
    try {
      return await op(attempt);
    } catch (err) {
      if (!isTransient(err)) throw err;
      const delay = backoffDelay(attempt, policy);
      if (attempt >= policy.attempts || clock.now() - start + delay > policy.totalMs) throw new RetriesExhausted(err, attempt);
      onRetry?.(attempt, err);
      await clock.sleep(delay);
    }
  }
}
