/**
 * TEST HOOK: the crash tests' kill point for object stores. With `VHDSYNC_TEST_KILL_AFTER_WRITES` armed
 * (io/kill-budget.ts, one budget with the byte-store hook), every `put` and every non-empty `delete` call counts
 * as one mutation, and the process dies just before the one that spends the budget. Reads never count.
 */
import type { ObjectStore } from './object-store.js';
import { countMutation, killBudget } from './kill-budget.js';

const hooked = new WeakMap<ObjectStore, ObjectStore>();
const counting = new WeakSet<ObjectStore>();

/** The store through a counting decorator when the test hook is armed; otherwise `store` itself. */
export function hookObjectStore(store: ObjectStore): ObjectStore {
  if (killBudget() === null || counting.has(store)) return store;
  let out = hooked.get(store);
  if (!out) {
    const inner = store;
    out = {
      display: inner.display,
      get: (key, range) => inner.get(key, range),
      head: (key) => inner.head(key),
      async put(key, body, conditions) {
        countMutation();
        return inner.put(key, body, conditions);
      },
      list: (prefix) => inner.list(prefix),
      async delete(keys, fence) {
        if (keys.length > 0) countMutation();
        return inner.delete(keys, fence);
      },
      bucketExists: () => inner.bucketExists(),
      close: () => inner.close(),
    };
    hooked.set(store, out);
    counting.add(out);
  }
  return out;
}
