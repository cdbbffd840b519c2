/** Which failures are retried, the backoff's bounds, and the attempt and total-time limits. */
import { backoffDelay, DEFAULT_RETRY, isTransient, RetriesExhausted, withRetries, type RetryClock } from '../../../../src/io/s3/retry.js';

const svc = (name: string, status: number) => Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
const sys = (code: string) => Object.assign(new Error(code), { code });

/** A clock whose sleeps advance time instantly, recording them. */
function fakeClock(): RetryClock & { slept: number[] } {
  let t = 0;
  const slept: number[] = [];
  return { slept, now: () => t, sleep: async (ms) => void ((t += ms), slept.push(ms)) };
}

describe('S3 retries', () => {
  it.each([
    [svc('InternalError', 500), true],
    [svc('ServiceUnavailable', 503), true],
    [svc('SlowDown', 503), true],
    [svc('Throttling', 400), true],
    [svc('TooManyRequests', 429), true],
    [svc('RequestTimeout', 400), true],
    [svc('ConditionalRequestConflict', 409), true],
    [sys('ECONNRESET'), true],
    [sys('ECONNREFUSED'), true],
    [sys('EPIPE'), true],
    [Object.assign(new AggregateError([sys('ECONNREFUSED'), sys('ECONNREFUSED')]), {}), true],
    [Object.assign(new Error('t'), { name: 'TimeoutError' }), true],
    [svc('AccessDenied', 403), false],
    [svc('InvalidAccessKeyId', 403), false],
    [svc('NoSuchBucket', 404), false],
    [svc('PreconditionFailed', 412), false],
    [new Error('bug'), false],
  ])('%s -> transient %s', (err, expected) => {
    expect(isTransient(err)).toBe(expected);
  });

  it('waits between half and all of a doubling ceiling, capped', () => {
    const p = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1000 };
    for (let attempt = 1; attempt <= 8; attempt++) {
      const ceiling = Math.min(1000, 100 * 2 ** (attempt - 1));
      expect(backoffDelay(attempt, p, () => 0)).toBe(ceiling / 2);
      expect(backoffDelay(attempt, p, () => 1)).toBe(ceiling);
    }
  });

  it('retries transient failures until one succeeds', async () => {
    const clock = fakeClock();
    let calls = 0;
    const r = await withRetries(async (attempt) => {
      calls++;
      if (attempt < 4) throw sys('ECONNRESET');
      return 'done';
    }, DEFAULT_RETRY, clock);
    expect(r).toBe('done');
    expect(calls).toBe(4);
    expect(clock.slept).toHaveLength(3);
  });

  it('gives up after the attempts, wrapping the last error', async () => {
    const clock = fakeClock();
    let calls = 0;
    const err = await withRetries(async () => {
      calls++;
      throw svc('SlowDown', 503);
    }, { ...DEFAULT_RETRY, attempts: 4 }, clock).catch((e) => e);
    expect(err).toBeInstanceOf(RetriesExhausted);
    expect((err as RetriesExhausted).attempts).toBe(4);
    expect(calls).toBe(4);
  });

  it('starts no attempt past the total time', async () => {
    const clock = fakeClock();
    const err = await withRetries(async () => {
      throw sys('ETIMEDOUT');
    }, { attempts: 100, baseDelayMs: 1000, maxDelayMs: 1000, totalMs: 5000 }, clock).catch((e) => e);
    expect(err).toBeInstanceOf(RetriesExhausted);
    expect(clock.now()).toBeLessThanOrEqual(5000);
  });

  it('throws final errors at once', async () => {
    let calls = 0;
    const e = svc('AccessDenied', 403);
    await expect(withRetries(async () => {
      calls++;
      throw e;
    }, DEFAULT_RETRY, fakeClock())).rejects.toBe(e);
    expect(calls).toBe(1);
  });
});

describe('S3 retries of wrapped errors', () => {
  it("reads the code out of the SDK's wrapper for foreign-realm errors", () => {
    expect(isTransient(new Error('AWS SDK error wrapper for TimeoutError: read ECONNRESET'))).toBe(true);
    expect(isTransient(new Error('AWS SDK error wrapper for Error: connect ECONNREFUSED 127.0.0.1:9'))).toBe(true);
    expect(isTransient(new Error('AWS SDK error wrapper for Error: something else'))).toBe(false);
  });
});

describe('S3 retries of wrapped timeouts', () => {
  it('takes the wrapped name and Node\'s "socket hang up" as transient', () => {
    expect(isTransient(new Error('AWS SDK error wrapper for TimeoutError: socket hang up'))).toBe(true);
    expect(isTransient(new Error('AWS SDK error wrapper for TimeoutError: whatever'))).toBe(true);
  });
});
