/**
 * Bad input against the real engine and against small fault servers: wrong keys, a missing bucket, an endpoint
 * that is down, one that accepts and never answers, one that keeps throttling. Each ends in one typed line that
 * names the store and never a key, within seconds. Also: settings from a shared config file and a profile reach
 * the engine.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { openS3ObjectStore } from '../../src/io/s3/s3-store.js';
import { AlreadyExistsError, BusyError, ConflictError, CredentialsError, IoError, NotFoundError, VhdsyncError } from '../../src/util/errors.js';
import { describeRgw, useRadosgw } from '../helpers/radosgw.js';
import { makeTempDir } from '../helpers/tmp.js';

/** The error a promise rejects with, checked to be one line of ours. */
async function failure(p: Promise<unknown>, ...secrets: string[]): Promise<VhdsyncError> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(VhdsyncError);
  const text = (err as VhdsyncError).describe();
  expect(text).not.toMatch(/\n/);
  for (const s of secrets) expect(text).not.toContain(s);
  return err as VhdsyncError;
}

/** A server on a free port, closed after the test. */
async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

const FAST = { baseDelayMs: 20, maxDelayMs: 50 };
const KEYS = { AWS_ACCESS_KEY_ID: 'AKIDFAULTSERVER00000', AWS_SECRET_ACCESS_KEY: 'faultserversecretfaultserversecret000000', AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent' };

describe('S3 failures without an engine', () => {
  it('an endpoint nobody listens on: one line naming it, after the retries', async () => {
    // A port that was free a moment ago: taken and released.
    const probe = net.createServer();
    const downPort = await listen(probe);
    await new Promise((r) => probe.close(r));
    const s = openS3ObjectStore('s3://bucket/p', { env: { ...KEYS, AWS_ENDPOINT_URL: `http://127.0.0.1:${downPort}` }, retry: FAST });
    const err = await failure(s.get('k'), KEYS.AWS_SECRET_ACCESS_KEY, KEYS.AWS_ACCESS_KEY_ID);
    expect(err).toBeInstanceOf(IoError);
    expect(err.describe()).toBe(`s3://bucket/p/k: cannot reach http://127.0.0.1:${downPort}: ECONNREFUSED (after 6 attempts)`);
    await s.close();
  });

  it('no credentials anywhere: one line saying what to set', async () => {
    const env = { AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_CONFIG_FILE: '/nonexistent/config', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials' };
    const s = openS3ObjectStore('s3://bucket/p', { env, retry: FAST });
    const err = await failure(s.get('k'));
    expect(err).toBeInstanceOf(CredentialsError);
    expect(err.describe()).toBe('s3://bucket/p/k: no usable credentials for http://127.0.0.1:9: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (--profile, AWS_PROFILE) in /nonexistent/credentials');
    await s.close();
  });

  it('an endpoint that accepts and never answers: a timeout, not a hang', async () => {
    const sockets: net.Socket[] = [];
    const server = net.createServer((c) => sockets.push(c));
    const port = await listen(server);
    const s = openS3ObjectStore('s3://bucket', { env: { ...KEYS, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` }, retry: { ...FAST, attempts: 2 }, idleTimeoutMs: 300 });
    try {
      const err = await failure(s.put('k', Buffer.from('x')), KEYS.AWS_SECRET_ACCESS_KEY);
      expect(err).toBeInstanceOf(IoError);
      expect(err.describe()).toMatch(/^s3:\/\/bucket\/k: cannot reach http:\/\/127\.0\.0\.1:\d+: (ETIMEDOUT|timed out|ECONNRESET) \(after 2 attempts\)$/);
      expect(sockets.length).toBe(2);
    } finally {
      await s.close();
      for (const c of sockets) c.destroy();
      await new Promise((r) => server.close(r));
    }
  });

  it('answers that lie: a huge announced length, more bytes than the range, a listing that never advances', async () => {
    // A raw server: each request gets the canned answer its path selects, then the connection closes.
    const server = net.createServer((c) => {
      c.once('data', (d) => {
        const target = d.toString('latin1').split(' ')[1] ?? '';
        if (target.includes('huge')) c.end('HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\nConnection: close\r\n\r\nabc');
        else if (target.includes('ranged')) c.end('HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\nContent-Range: bytes 0-99/100\r\nConnection: close\r\n\r\n' + 'x'.repeat(100));
        else {
          const xml = '<?xml version="1.0"?><ListBucketResult><Name>bucket</Name><IsTruncated>true</IsTruncated><NextContinuationToken>same</NextContinuationToken><Contents><Key>a</Key><Size>1</Size></Contents></ListBucketResult>';
          c.end(`HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: ${xml.length}\r\nConnection: close\r\n\r\n${xml}`);
        }
      });
    });
    const port = await listen(server);
    const s = openS3ObjectStore('s3://bucket', { env: { ...KEYS, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` }, retry: FAST });
    try {
      expect((await failure(s.get('huge'))).describe()).toMatch(/^s3:\/\/bucket\/huge: (the object's body does not have its announced length|cannot reach .*) \(after 6 attempts\)$/);
      expect((await failure(s.get('ranged', { start: 0, length: 10 }))).describe()).toBe('s3://bucket/ranged: request failed: the service answered 100 bytes for a range of 10');
      const listing = failure((async () => {
        for await (const o of s.list('')) void o;
      })());
      expect((await listing).describe()).toMatch(/the listing does not advance/);
    } finally {
      await s.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('a conditional PUT whose answer was lost or a 5xx after it committed: our own write is recognised, another writer is not', async () => {
    // The first PUT of each round is "stored" and then its answer is lost (connection dropped) or a 500 (the
    // service failed after committing); later PUTs fail their condition (412). HEAD and GET tell what is stored.
    // `lostStores` decides what the first PUT leaves: our body, or another writer's object that won meanwhile;
    // `etags` whether the service's ETag is the MD5 of the content (or opaque, as with SSE-KMS).
    let stored: Buffer | null = null;
    let lostStores: 'ours' | 'theirs' | 'none' = 'ours';
    let answer: 'drop' | '500' = 'drop';
    let etags: 'md5' | 'opaque' = 'md5';
    let puts = 0;
    let heads = 0;
    let gets = 0;
    const etagOf = (b: Buffer) => (etags === 'md5' ? createHash('md5').update(b).digest('hex') : 'opaque0123456789');
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        if (req.method === 'PUT' && ++puts === 1 && lostStores !== 'none') {
          const body = Buffer.concat(chunks);
          // Another writer's object of the same size: only its bytes tell it apart.
          stored = lostStores === 'ours' ? body : Buffer.alloc(body.length, 'x');
          if (answer === 'drop') return req.socket.destroy();
          res.writeHead(500, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0"?><Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>');
        } else if (req.method === 'PUT') {
          res.writeHead(412, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>');
        } else if ((req.method === 'HEAD' || req.method === 'GET') && stored) {
          if (req.method === 'HEAD') heads++;
          else gets++;
          res.writeHead(200, { 'content-length': stored.length, etag: `"${etagOf(stored)}"` });
          res.end(req.method === 'GET' ? stored : undefined);
        } else {
          res.writeHead(404);
          res.end();
        }
      });
    });
    const port = await listen(server);
    const s = openS3ObjectStore('s3://bucket', { env: { ...KEYS, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` }, retry: FAST });
    const round = (stores: typeof lostStores, how: typeof answer, kind: typeof etags) => {
      [puts, heads, gets, stored, lostStores, answer, etags] = [0, 0, 0, null, stores, how, kind];
    };
    try {
      const body = Buffer.from('lease generation 7');
      const md5 = createHash('md5').update(body).digest('hex');
      for (const how of ['drop', '500'] as const) {
        round('ours', how, 'md5');
        expect(await s.put('lease', body, { ifNoneMatch: '*' })).toEqual({ etag: md5 });
        expect([puts, heads, gets]).toEqual([2, 1, 0]);
        // A renewal (If-Match) that committed: ours too.
        round('ours', how, 'md5');
        expect(await s.put('lease', body, { ifMatch: '"0123"' })).toEqual({ etag: md5 });
        round('theirs', how, 'md5');
        expect(await failure(s.put('lease', body, { ifNoneMatch: '*' }))).toBeInstanceOf(AlreadyExistsError);
        round('theirs', how, 'md5');
        expect(await failure(s.put('lease', body, { ifMatch: '"0123"' }))).toBeInstanceOf(ConflictError);
      }
      // An ETag that is no MD5 of the content: the object is read back and compared.
      round('ours', '500', 'opaque');
      expect(await s.put('lease', body, { ifNoneMatch: '*' })).toEqual({ etag: 'opaque0123456789' });
      expect([puts, heads, gets]).toEqual([2, 1, 1]);
      round('theirs', '500', 'opaque');
      expect(await failure(s.put('lease', body, { ifNoneMatch: '*' }))).toBeInstanceOf(AlreadyExistsError);
      expect(gets).toBe(1);

      // An answered 412 is final at once: nothing to check.
      round('none', 'drop', 'md5');
      expect(await failure(s.put('lease', Buffer.from('generation 9'), { ifNoneMatch: '*' }))).toBeInstanceOf(AlreadyExistsError);
      expect([puts, heads, gets]).toEqual([1, 0, 0]);
    } finally {
      await s.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('a fenced write: the fence is asked before every attempt, retries included, and an attempt running past it is cut off', async () => {
    // PUT `slow` is answered after 600 ms; every other PUT and POST (DeleteObjects) gets a 503.
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests++;
      req.resume();
      req.on('end', () => {
        if (req.url?.includes('slow')) {
          setTimeout(() => {
            res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"' });
            res.end();
          }, 600);
          return;
        }
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end('<?xml version="1.0"?><Error><Code>ServiceUnavailable</Code></Error>');
      });
    });
    const port = await listen(server);
    const s = openS3ObjectStore('s3://bucket', { env: { ...KEYS, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` }, retry: FAST });
    const lapsed = new BusyError("lost the lease of disk 'vm' (its lease could not be renewed for 30 s); stopped writing so that another run can take over", 's3://bucket/leases/vm/000000000001.json');
    /** A fence with `ms` of authority for its first `grants` questions, lapsed after. */
    const fence = (grants: number, ms: number) => ({
      asked: 0,
      remainingMs() {
        if (++this.asked > grants) throw lapsed;
        return ms;
      },
    });
    try {
      // The first attempt gets a 503; its retry is never sent, the fence's line is the error.
      const f = fence(1, 60_000);
      expect(await failure(s.put('k', Buffer.from('x'), { fence: f }))).toBe(lapsed);
      expect([requests, f.asked]).toEqual([1, 2]);
      requests = 0;
      const d = fence(1, 60_000);
      expect(await failure(s.delete(['a', 'b'], d))).toBe(lapsed);
      expect(requests).toBe(1);
      // Lapsed while the attempt runs (200 ms left, the 200 answer takes 600): cut off, never a success.
      expect(await failure(s.put('slow', Buffer.from('x'), { fence: fence(1, 200) }))).toBe(lapsed);
      // Renewed meanwhile (each question grants 200 ms more): the attempt runs to its answer.
      expect(await s.put('slow', Buffer.from('x'), { fence: fence(100, 200) })).toEqual({ etag: '0123456789abcdef0123456789abcdef' });
    } finally {
      await s.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('retries 5xx and SlowDown, then succeeds or gives up with the code', async () => {
    let requests = 0;
    let failFirst = 2;
    const server = http.createServer((req, res) => {
      requests++;
      req.resume();
      req.on('end', () => {
        if (failFirst-- > 0 || req.url?.includes('always')) {
          res.writeHead(503, { 'content-type': 'application/xml' });
          res.end('<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
        } else {
          res.writeHead(200, { etag: '"0123456789abcdef0123456789abcdef"' });
          res.end();
        }
      });
    });
    const port = await listen(server);
    const s = openS3ObjectStore('s3://bucket', { env: { ...KEYS, AWS_ENDPOINT_URL: `http://127.0.0.1:${port}` }, retry: FAST });
    try {
      expect(await s.put('k', Buffer.from('x'))).toEqual({ etag: '0123456789abcdef0123456789abcdef' });
      expect(requests).toBe(3);
      requests = 0;
      const err = await failure(s.put('always', Buffer.from('x')));
      expect(err).toBeInstanceOf(IoError);
      expect(err.describe()).toBe(`s3://bucket/always: http://127.0.0.1:${port} keeps failing: SlowDown (HTTP 503) (after 6 attempts)`);
      expect(requests).toBe(6);
    } finally {
      await s.close();
      await new Promise((r) => server.close(r));
    }
  });
});

describeRgw('S3 failures and settings on radosgw', () => {
  const gw = useRadosgw();
  let bucket: string;
  beforeAll(async () => {
    bucket = await gw().newBucket();
  });

  it.each([
    ['a wrong secret', (e: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ ...e, AWS_SECRET_ACCESS_KEY: 'wrongwrongwrongwrongwrongwrongwrongwrong' }), 'SignatureDoesNotMatch'],
    ['an unknown access key', (e: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ ...e, AWS_ACCESS_KEY_ID: 'AKIDNOTKNOWNHERE0000' }), 'InvalidAccessKeyId'],
  ])('%s: CredentialsError naming what to check, never the key', async (_, change, code) => {
    const env = change(gw().env);
    const s = openS3ObjectStore(`s3://${bucket}/p`, { env });
    try {
      const secrets = [env.AWS_SECRET_ACCESS_KEY!, env.AWS_ACCESS_KEY_ID!, gw().secretKey, gw().accessKey];
      const put = await failure(s.put('k', Buffer.from('x')), ...secrets);
      expect(put).toBeInstanceOf(CredentialsError);
      expect(put.describe()).toBe(`s3://${bucket}/p/k: access refused by ${gw().endpoint} (${code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`);
      // HEAD answers carry no error code: still a credentials error.
      expect(await failure(s.bucketExists(), ...secrets)).toBeInstanceOf(CredentialsError);
      expect(await failure(s.head('k'), ...secrets)).toBeInstanceOf(CredentialsError);
    } finally {
      await s.close();
    }
  });

  it('a missing bucket: NotFoundError for requests, false for bucketExists', async () => {
    const s = openS3ObjectStore('s3://vhdsync-missing-bucket/p', { env: gw().env });
    try {
      expect(await s.bucketExists()).toBe(false);
      const err = await failure(s.put('k', Buffer.from('x')), gw().secretKey);
      expect(err).toBeInstanceOf(NotFoundError);
      expect(err.describe()).toBe(`s3://vhdsync-missing-bucket/p/k: no bucket 'vhdsync-missing-bucket' at ${gw().endpoint}`);
      expect(await failure((async () => { for await (const _ of s.list('')) void _; })())).toBeInstanceOf(NotFoundError);
    } finally {
      await s.close();
    }
  });

  it('reaches the engine through a profile of the shared files (endpoint, keys, path style)', async () => {
    const { dir, cleanup } = makeTempDir('vhdsync-awsfiles-');
    try {
      writeFileSync(path.join(dir, 'config'), `[profile rgw]\nregion = us-east-1\ns3 =\n  endpoint_url = ${gw().endpoint}\n  addressing_style = path\n`);
      writeFileSync(path.join(dir, 'credentials'), `[rgw]\naws_access_key_id = ${gw().accessKey}\naws_secret_access_key = ${gw().secretKey}\n`);
      const env = { AWS_CONFIG_FILE: path.join(dir, 'config'), AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'credentials'), AWS_EC2_METADATA_DISABLED: 'true' };
      const s = openS3ObjectStore(`s3://${bucket}/via-profile`, { env, profile: 'rgw' });
      await s.put('k', Buffer.from('hello'));
      expect((await s.get('k'))!.toString()).toBe('hello');
      await s.close();
      expect(await gw().keys(bucket, 'via-profile/')).toEqual(['via-profile/k']);
      // AWS_PROFILE selects it too; a wrong key in the file is reported against the file, not the environment.
      writeFileSync(path.join(dir, 'credentials'), `[rgw]\naws_access_key_id = ${gw().accessKey}\naws_secret_access_key = notthesecretnotthesecretnotthesecret0000\n`);
      const bad = openS3ObjectStore(`s3://${bucket}/via-profile`, { env: { ...env, AWS_PROFILE: 'rgw' } });
      const err = await failure(bad.get('k'), 'notthesecretnotthesecretnotthesecret0000', gw().accessKey);
      expect(err.describe()).toMatch(/check the keys of profile 'rgw' in .*credentials$/);
      await bad.close();
    } finally {
      cleanup();
    }
  });
});
