/** S3 failures as one-line typed errors, never carrying the keys. */
import { mapS3Error, type ErrorContext } from '../../../../src/io/s3/errors.js';
import { RetriesExhausted } from '../../../../src/io/s3/retry.js';
import { CredentialsError, IoError, NotFoundError, VhdsyncError } from '../../../../src/util/errors.js';

const KEY = 'AKIDEXAMPLE1234567890';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const ctx: ErrorContext = {
  subject: 's3://bkt/pre',
  bucket: 'bkt',
  endpoint: 'http://127.0.0.1:7480',
  credentialSource: 'AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
  secrets: [KEY, SECRET],
};
const svc = (name: string, status: number, message = name) => Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });

function line(err: Error): string {
  expect(err).toBeInstanceOf(VhdsyncError);
  const text = (err as VhdsyncError).describe();
  expect(text).not.toMatch(/\n/);
  expect(text).not.toContain(KEY);
  expect(text).not.toContain(SECRET);
  return text;
}

describe('S3 error mapping', () => {
  it.each(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied'])('%s names the store and what to check', (code) => {
    const e = mapS3Error(svc(code, 403, `The key ${KEY} with ${SECRET} is wrong`), ctx);
    expect(e).toBeInstanceOf(CredentialsError);
    expect(line(e)).toBe(`s3://bkt/pre: access refused by http://127.0.0.1:7480 (${code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`);
  });

  it('a 403 without a body (HEAD) is a credentials error too', () => {
    expect(mapS3Error(svc('403', 403), ctx)).toBeInstanceOf(CredentialsError);
  });

  it('a missing bucket is NotFoundError', () => {
    const e = mapS3Error(svc('NoSuchBucket', 404), ctx);
    expect(e).toBeInstanceOf(NotFoundError);
    expect(line(e)).toMatch(/no bucket 'bkt' at http:\/\/127\.0\.0\.1:7480/);
  });

  it('an unreachable endpoint is IoError naming it and the attempts', () => {
    const e = mapS3Error(new RetriesExhausted(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 6), ctx);
    expect(e).toBeInstanceOf(IoError);
    expect(line(e)).toBe('s3://bkt/pre: cannot reach http://127.0.0.1:7480: ECONNREFUSED (after 6 attempts)');
  });

  it('a service that keeps failing is IoError with its code', () => {
    expect(line(mapS3Error(new RetriesExhausted(svc('SlowDown', 503), 6), ctx))).toMatch(/keeps failing: SlowDown \(HTTP 503\) \(after 6 attempts\)/);
  });

  it('unknown failures keep their text without the keys, on one line', () => {
    const e = mapS3Error(new Error(`odd\nfailure with ${SECRET}`), ctx);
    expect(line(e)).toMatch(/request failed: odd failure with <redacted>/);
  });

  it('passes our own errors through', () => {
    const own = new NotFoundError('x', 'y');
    expect(mapS3Error(own, ctx)).toBe(own);
  });
});
