/**
 * Reads of objects whose size the repository can bound (manifests, maps, lists, lease records, blocks): never more
 * than the bound is buffered, whatever the store holds under the key (review finding 10). A ranged GET of bound + 1
 * bytes makes the service stop there (and the S3 store refuses an answer longer than the range it asked for), so
 * one request reads the object and proves it is no larger, with no window between a HEAD and the GET.
 */
import type { ObjectStore } from '../../io/object-store.js';

/** What a bounded read found: the bytes, `too large` (more than the bound, not read), or null (no such object). */
export type BoundedRead = Buffer | 'too large' | null;

/** `key`'s bytes when it has at most `limit` bytes; 'too large' when it has more; null when it does not exist. */
export async function getAtMost(store: ObjectStore, key: string, limit: number): Promise<BoundedRead> {
  const bytes = await store.get(key, { start: 0, length: limit + 1 });
  if (bytes === null) return null;
  return bytes.length > limit ? 'too large' : bytes;
}
