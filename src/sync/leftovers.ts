/** Cleaning up after killed runs: the hidden `.partial` files writeAtomically leaves when a process dies mid-write. */
import type { Location } from '../io/location.js';

/**
 * Removes `.<name>.<random>.partial` files next to `file` (the temp names io/atomic.ts uses for it). Only call
 * this while holding the right to write `file`, so a concurrent writer's temp file is not taken for a leftover.
 */
export async function removePartials(file: Location): Promise<void> {
  const { store, path } = file;
  const dir = store.paths.dirname(path);
  const prefix = `.${store.paths.basename(path)}.`;
  for (const name of await store.list(dir).catch(() => [] as string[])) {
    if (name.startsWith(prefix) && name.endsWith('.partial')) await store.unlink(store.paths.join(dir, name)).catch(() => {});
  }
}
