/**
 * An ObjectStore whose every put and delete carries a writer's fence (object-store.ts, WriteFence): an object
 * repository's session writes through it, so no request of a run whose lease lapsed is sent, not even a retry.
 */
import type { ObjectStore, WriteFence } from './object-store.js';

/** `store` with `fence` added to every mutating request. */
export function fencedStore(store: ObjectStore, fence: WriteFence): ObjectStore {
  return {
    display: store.display,
    get: (key, range) => store.get(key, range),
    head: (key) => store.head(key),
    put: (key, body, conditions) => store.put(key, body, { ...conditions, fence }),
    list: (prefix) => store.list(prefix),
    delete: (keys) => store.delete(keys, fence),
    bucketExists: () => store.bucketExists(),
    close: () => store.close(),
  };
}
