/** Small helpers for the in-memory metadata caches of the format drivers. */

/**
 * Drops the oldest entry of `cache` that is not in `pinned` (entries with changes not yet written stay), to make
 * room for one more. Does nothing when every entry is pinned.
 */
export function evictOneClean<K, V>(cache: Map<K, V>, pinned: ReadonlySet<K>): void {
  for (const k of cache.keys()) {
    if (!pinned.has(k)) {
      cache.delete(k);
      return;
    }
  }
}
