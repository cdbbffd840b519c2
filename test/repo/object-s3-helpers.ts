/** Helpers of the radosgw repository suites: the bucket seen through the SDK, and repositories opened in-process. */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import type { Radosgw } from '../helpers/radosgw.js';
import { openRepository } from '../../src/repo/index.js';
import type { ObjectRepository } from '../../src/repo/object/object-backend.js';
import { audit } from './object-helpers.js';

/** An object's bytes, fetched with the SDK (not through our code), or null when it does not exist. */
export async function sdkGet(gw: Radosgw, bucket: string, key: string): Promise<Buffer | null> {
  try {
    const r = await gw.sdk.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return null;
    throw err;
  }
}

/** The bucket under `prefix`, listed and read with the SDK, against what the manifests reference. */
export async function auditBucket(gw: Radosgw, bucket: string, prefix: string): Promise<{ unreferenced: string[]; missing: string[] }> {
  const keys = (await gw.keys(bucket, prefix)).map((k) => k.slice(prefix.length));
  return audit(keys, (k) => sdkGet(gw, bucket, prefix + k));
}

/**
 * Registers an afterAll that closes every repository the returned function opened in this process (their store's
 * connections), so the test file ends cleanly.
 */
export function useObjectRepositories(gw: () => Radosgw): (url: string, mustExist?: boolean) => Promise<ObjectRepository> {
  const opened: ObjectRepository[] = [];
  afterAll(async () => {
    for (const r of opened) await r.close();
  });
  return async (url, mustExist = false) => {
    const r = (await openRepository(url, mustExist, { env: gw().env })) as ObjectRepository;
    opened.push(r);
    return r;
  };
}
