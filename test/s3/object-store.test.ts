/**
 * S3ObjectStore against a real engine (Ceph radosgw, test/helpers/radosgw.ts): every ObjectStore method, checked
 * with the AWS SDK directly (what landed under which key), and a gateway killed with SIGKILL in the middle of a
 * PUT and restarted: the PUT completes by retrying.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { openS3ObjectStore, type S3ObjectStore } from '../../src/io/s3/s3-store.js';
import type { ObjectInfo } from '../../src/io/object-store.js';
import { AlreadyExistsError, ConflictError, NotFoundError } from '../../src/util/errors.js';
import { describeRgw, useRadosgw } from '../helpers/radosgw.js';

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function collect(it: AsyncIterable<ObjectInfo>): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of it) out.push(o);
  return out;
}

/** Runs `fn` over `items` with `n` in flight. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

describeRgw('S3ObjectStore on radosgw', () => {
  const gw = useRadosgw();
  let bucket: string;
  let store: S3ObjectStore;

  beforeAll(async () => {
    bucket = await gw().newBucket();
    // Slashes doubled and trailing on purpose: the prefix is normalised to `pre/fix`.
    store = openS3ObjectStore(`s3://${bucket}//pre/fix/`, { env: gw().env, listPageSize: 7 });
  });
  afterAll(async () => {
    await store?.close();
  });

  it('puts, gets and heads objects under the prefix', async () => {
    const body = randomBytes(100_000);
    const { etag } = await store.put('a/one', body);
    expect(etag).toBe(md5(body));
    expect(await gw().keys(bucket)).toContain('pre/fix/a/one');
    const direct = await gw().sdk.send(new GetObjectCommand({ Bucket: bucket, Key: 'pre/fix/a/one' }));
    expect(Buffer.from(await direct.Body!.transformToByteArray()).equals(body)).toBe(true);
    expect((await store.get('a/one'))!.equals(body)).toBe(true);
    const info = await store.head('a/one');
    expect(info).toMatchObject({ key: 'a/one', size: body.length, etag: md5(body) });
    expect(Math.abs(info!.lastModifiedMs - Date.now())).toBeLessThan(3600_000);
    expect(await store.get('a/missing')).toBeNull();
    expect(await store.head('a/missing')).toBeNull();
    const empty = await store.put('a/empty', new Uint8Array(0));
    expect(empty.etag).toBe(md5(new Uint8Array(0)));
    expect((await store.get('a/empty'))!.length).toBe(0);
  });

  it('reads ranges, shortened at the end of the object', async () => {
    const body = randomBytes(1 << 20);
    await store.put('ranged', body);
    for (const [start, length] of [[0, 1], [4095, 8194], [(1 << 20) - 10, 10], [12345, 500_000]]) {
      expect((await store.get('ranged', { start, length }))!.equals(body.subarray(start, start + length))).toBe(true);
    }
    expect((await store.get('ranged', { start: (1 << 20) - 5, length: 100 }))!.equals(body.subarray((1 << 20) - 5))).toBe(true);
    expect((await store.get('ranged', { start: 1 << 20, length: 10 }))!.length).toBe(0);
    expect((await store.get('ranged', { start: 7, length: 0 }))!.length).toBe(0);
    expect(await store.get('ranged-missing', { start: 0, length: 10 })).toBeNull();
  });

  it('lists in key order across pages, only below the prefix', async () => {
    const keys = Array.from({ length: 25 }, (_, i) => `list/k${String(i).padStart(3, '0')}`);
    await pool(keys, 8, (k) => store.put(k, Buffer.from(k)));
    // A neighbour whose key shares the prefix's characters but not its folder must not show up.
    await gw().sdk.send(new PutObjectCommand({ Bucket: bucket, Key: 'pre/fixture/list/k000', Body: 'x' }));
    const listed = await collect(store.list('list/'));
    expect(listed.map((o) => o.key)).toEqual(keys);
    expect(listed[3]).toMatchObject({ size: keys[3].length, etag: md5(Buffer.from(keys[3])) });
    expect((await collect(store.list('list/k01'))).map((o) => o.key)).toEqual(keys.slice(10, 20));
    expect(await collect(store.list('nothing/'))).toEqual([]);
    const all = (await collect(store.list(''))).map((o) => o.key);
    expect(all).toEqual([...all].sort());
    expect(all).not.toContain('ture/list/k000');
  });

  it('deletes more keys than one request may carry, absent ones included', async () => {
    // 1000 keys a request is the service's limit (and the default); 100 here keeps the suite quick (a PUT of
    // 1000 objects takes half a minute on a loaded CI machine), the splitting is the same.
    const batched = openS3ObjectStore(`s3://${bucket}/pre/fix`, { env: gw().env, deleteBatch: 100 });
    const keys = Array.from({ length: 250 }, (_, i) => `del/${i}`);
    await pool(keys, 16, (k) => store.put(k, Buffer.from('x')));
    expect((await gw().keys(bucket, 'pre/fix/del/')).length).toBe(250);
    await batched.delete([...keys, 'del/never-there', keys[0]]);
    await batched.close();
    expect(await gw().keys(bucket, 'pre/fix/del/')).toEqual([]);
    await store.delete([]);
  });

  it('creates only when absent, replaces only the version read', async () => {
    const first = await store.put('lease', Buffer.from('one'), { ifNoneMatch: '*' });
    await expect(store.put('lease', Buffer.from('two'), { ifNoneMatch: '*' })).rejects.toBeInstanceOf(AlreadyExistsError);
    expect((await store.get('lease'))!.toString()).toBe('one');
    // The ETag as listed (bare) and as HTTP quotes it: both work, radosgw 16 included.
    const second = await store.put('lease', Buffer.from('two'), { ifMatch: first.etag });
    const third = await store.put('lease', Buffer.from('three'), { ifMatch: `"${second.etag}"` });
    await expect(store.put('lease', Buffer.from('four'), { ifMatch: first.etag })).rejects.toBeInstanceOf(ConflictError);
    expect((await store.get('lease'))!.toString()).toBe('three');
    expect(third.etag).toBe(md5(Buffer.from('three')));
    await expect(store.put('lease-missing', Buffer.from('x'), { ifMatch: first.etag })).rejects.toBeInstanceOf(ConflictError);
  });

  it('stores user metadata with the body: a HEAD returns the version it read, a conditional replace changes both', async () => {
    const record = (n: number) => Buffer.from(JSON.stringify({ format: 'vhdsync-lease', n }) + '\n').toString('base64');
    const first = await store.put('meta', Buffer.from('one'), { ifNoneMatch: '*', metadata: { vhdsynclease: record(1) } });
    expect(await store.head('meta')).toMatchObject({ etag: first.etag, metadata: { vhdsynclease: record(1) } });
    const second = await store.put('meta', Buffer.from('two'), { ifMatch: first.etag, metadata: { vhdsynclease: record(2) } });
    expect(await store.head('meta')).toMatchObject({ etag: second.etag, metadata: { vhdsynclease: record(2) } });
    // Without metadata, a HEAD reports none (what a lease of an older version looks like).
    await store.put('meta-none', Buffer.from('x'));
    expect((await store.head('meta-none'))?.metadata ?? {}).toEqual({});
  });

  it('sends a SHA-256 the caller gives as the signed payload hash: the right one stores the body, a wrong one is refused by the service', async () => {
    const body = randomBytes(300_000);
    await store.put('hashed', body, { ifNoneMatch: '*', sha256: sha256(body) });
    expect((await store.get('hashed'))!.equals(body)).toBe(true);
    // Were the value not sent, the SDK would hash the body itself and this write would succeed.
    const wrong = sha256(Buffer.concat([body, Buffer.from('x')]));
    await expect(store.put('hashed-wrong', body, { sha256: wrong })).rejects.toThrow(/XAmzContentSHA256Mismatch/);
    expect(await store.head('hashed-wrong')).toBeNull();
  });

  it('a conditional PUT that radosgw committed but whose answer became a 503: the real 412 of its retry is recognised as ours', async () => {
    // A proxy in front of the gateway: the first conditional PUT goes through and commits, but the client gets a
    // 503 instead of the answer; the retry then meets radosgw's own 412 (If-None-Match, and If-Match with the bare
    // ETag radosgw 16 wants). Another writer's object stays a conflict.
    const target = new URL(gw().endpoint);
    // What happens to the next conditional PUT: forwarded and its answer replaced by a 503, or a 503 unforwarded.
    let next: 'swallow' | 'refuse' | null = null;
    const unavailable = (res: http.ServerResponse) => {
      res.writeHead(503, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0"?><Error><Code>ServiceUnavailable</Code></Error>');
    };
    const proxy = http.createServer((req, res) => {
      const fault = req.method === 'PUT' && (req.headers['if-none-match'] || req.headers['if-match']) ? next : null;
      if (fault) next = null;
      if (fault === 'refuse') return req.resume().on('end', () => unavailable(res));
      const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        if (fault === 'swallow') {
          expect(answer.statusCode).toBe(200);
          answer.resume();
          return unavailable(res);
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const env = { ...gw().env, AWS_ENDPOINT_URL: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` };
    const s = openS3ObjectStore(`s3://${bucket}/lost`, { env, retry: { baseDelayMs: 10, maxDelayMs: 20 } });
    try {
      const one = Buffer.from('{"token":"0001","renewals":0}');
      next = 'swallow';
      expect(await s.put('lease', one, { ifNoneMatch: '*' })).toEqual({ etag: md5(one) });
      const two = Buffer.from('{"token":"0001","renewals":1}');
      next = 'swallow';
      expect(await s.put('lease', two, { ifMatch: md5(one) })).toEqual({ etag: md5(two) });
      expect(next).toBeNull();
      // Another writer's object under the key: our create got a 503 without committing, its retry a 412: theirs.
      next = 'refuse';
      await expect(s.put('lease', Buffer.from('{"token":"0002","renewals":0}'), { ifNoneMatch: '*' })).rejects.toBeInstanceOf(AlreadyExistsError);
      next = 'refuse';
      await expect(s.put('lease', Buffer.from('{"token":"0002","renewals":1}'), { ifMatch: md5(one) })).rejects.toBeInstanceOf(ConflictError);
      expect((await s.get('lease'))!.equals(two)).toBe(true);
    } finally {
      await s.close();
      await new Promise((r) => proxy.close(r));
    }
  });

  it('tells a missing bucket apart', async () => {
    expect(await store.bucketExists()).toBe(true);
    const missing = openS3ObjectStore('s3://vhdsync-no-such-bucket/x', { env: gw().env });
    try {
      expect(await missing.bucketExists()).toBe(false);
      await expect(missing.get('k')).rejects.toBeInstanceOf(NotFoundError);
      await expect(missing.head('k')).rejects.toBeInstanceOf(NotFoundError);
      await expect(missing.put('k', Buffer.from('x'))).rejects.toBeInstanceOf(NotFoundError);
      const err = await missing.get('k').catch((e) => e);
      expect(err.describe()).toBe(`s3://vhdsync-no-such-bucket/x/k: no bucket 'vhdsync-no-such-bucket' at ${gw().endpoint}`);
    } finally {
      await missing.close();
    }
  });

  // Last: it restarts the gateway under the other tests' feet otherwise.
  it('completes a PUT whose gateway was killed mid-upload and restarted', async () => {
    const retried: unknown[] = [];
    const s = openS3ObjectStore(`s3://${bucket}/crash`, { env: gw().env, onRetry: (_, err) => retried.push(err) });
    try {
      const body = randomBytes(32 << 20);
      // Bytes the gateway's connections received (ss, from the kernel): the kill waits until 4 MiB more than
      // before arrived, so it lands inside the transfer, not before or after it.
      const port = new URL(gw().endpoint).port;
      const received = () =>
        [...execFileSync('ss', ['-tinH', 'state', 'established', 'sport', '=', `:${port}`], { encoding: 'utf8' }).matchAll(/bytes_received:(\d+)/g)]
          .reduce((sum, m) => sum + Number(m[1]), 0);
      const before = received();
      let settled = false;
      const put = s.put('big', body).finally(() => (settled = true));
      while (!settled && received() - before < 4 << 20) await new Promise((r) => setTimeout(r, 5));
      expect(settled).toBe(false);
      await gw().killGateway();
      await gw().restartGateway();
      await put;
      expect(retried.length).toBeGreaterThanOrEqual(1);
      const back = await s.get('big');
      expect(sha256(back!)).toBe(sha256(body));
    } finally {
      await s.close();
    }
  });
});
