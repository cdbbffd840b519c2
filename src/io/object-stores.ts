/**
 * Object-store locations (`s3://BUCKET/PREFIX`) for the layers above: recognising one costs nothing, opening one
 * loads the S3 client (src/io/s3/, the AWS SDK: about 200 modules) on first use, so commands on files never pay
 * for it.
 */
import type { ObjectStore } from './object-store.js';
import { isS3Location } from './s3/location-syntax.js';
import type { S3StoreOptions } from './s3/s3-store.js';

export type { S3StoreOptions as ObjectStoreOptions } from './s3/s3-store.js';

/** True when the string names an object store rather than a file or folder. */
export function isObjectStoreLocation(text: string): boolean {
  return isS3Location(text);
}

/**
 * Opens an object store from its location and the CLI's `--profile` / `--s3-path-style` (settings from the
 * environment and the shared AWS files: docs/cli.md). Throws UsageError for a malformed location or profile;
 * reaches the service only on the store's first request.
 */
export async function openObjectStore(location: string, opts: S3StoreOptions = {}): Promise<ObjectStore> {
  const { openS3ObjectStore } = await import('./s3/s3-store.js');
  return openS3ObjectStore(location, opts);
}
