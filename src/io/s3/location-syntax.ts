/**
 * `s3://BUCKET/PREFIX` location strings: recognised and split here without loading the SDK. The prefix is
 * normalised (no leading, trailing or doubled slashes), so `s3://b/x/`, `s3://b//x` and `s3://b/x` name the same
 * store, and keys below it are always `PREFIX/KEY`.
 */
import { UsageError } from '../../util/errors.js';

/** A bucket and a normalised key prefix ('' for the bucket's root, otherwise without leading/trailing `/`). */
export interface S3Location {
  bucket: string;
  prefix: string;
}

/** Longest prefix accepted: S3 keys are at most 1024 bytes, and the repository's own names need room below it. */
const MAX_PREFIX_BYTES = 512;

/** True when the string is an `s3://` location (any case of the scheme). */
export function isS3Location(text: string): boolean {
  return /^s3:\/\//i.test(text);
}

/**
 * Why a bucket name is refused (S3's rules for new buckets: 3-63 characters, lower-case letters, digits, dots and
 * hyphens, a letter or digit at both ends, no `..`, not shaped like an IP address), or null when it is fine.
 */
export function bucketNameProblem(name: string): string | null {
  if (name.length < 3 || name.length > 63) return 'a bucket name has 3 to 63 characters';
  if (!/^[a-z0-9][a-z0-9.-]*[a-z0-9]$/.test(name)) {
    return 'a bucket name holds lower-case letters, digits, dots and hyphens, and starts and ends with a letter or digit';
  }
  if (name.includes('..')) return 'a bucket name has no two dots in a row';
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return 'a bucket name is not shaped like an IP address';
  return null;
}

/** Splits and checks `s3://BUCKET[/PREFIX]`; throws UsageError (naming the location) when it is malformed. */
export function parseS3Location(text: string): S3Location {
  if (!isS3Location(text)) throw new UsageError('not an s3:// location', text);
  const rest = text.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  if (!bucket) throw new UsageError('no bucket named (s3://BUCKET/PREFIX)', text);
  const problem = bucketNameProblem(bucket);
  if (problem) throw new UsageError(`bad bucket name '${bucket}': ${problem}`, text);
  const segments = (slash < 0 ? '' : rest.slice(slash + 1)).split('/').filter((s) => s !== '');
  for (const s of segments) {
    // HTTP stacks and some services resolve dot segments in paths: the object would land under another name.
    if (s === '.' || s === '..') throw new UsageError(`the prefix may not contain a '${s}' segment`, text);
    if (/[\x00-\x1f\x7f]/.test(s)) throw new UsageError('the prefix may not contain control characters', text);
  }
  const prefix = segments.join('/');
  if (Buffer.byteLength(prefix) > MAX_PREFIX_BYTES) throw new UsageError(`the prefix is longer than ${MAX_PREFIX_BYTES} bytes`, text);
  return { bucket, prefix };
}

/** The location as users write it: `s3://bucket` or `s3://bucket/prefix`. */
export function formatS3Location(loc: S3Location): string {
  return loc.prefix ? `s3://${loc.bucket}/${loc.prefix}` : `s3://${loc.bucket}`;
}
