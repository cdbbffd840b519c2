/** Cleaning up after killed runs: the hidden `.partial` files writeAtomically leaves when a process dies mid-write. */
import type { Location } from '../io/location.js';

/**
 * Removes `.<name>.<random>.partial` files next to each of `files` (the temp names io/atomic.ts uses for them),
 * listing each folder once. Only call this while holding the right to write the files, so a concurrent writer's
 * temp file is not taken for a leftover.
 */
export async function removePartials(...files: Location[]): Promise<void> {
  // Folders by store object (two shares can hold the same path), each with the temp-name prefixes looked for in it.
  const folders = new Map<Location['store'], Map<string, string[]>>();
  for (const { store, path } of files) {
    const dirs = folders.get(store) ?? new Map<string, string[]>();
    folders.set(store, dirs);
    const dir = store.paths.dirname(path);
    dirs.set(dir, [...(dirs.get(dir) ?? []), `.${store.paths.basename(path)}.`]);
  }
  for (const [store, dirs] of folders) {
    for (const [dir, prefixes] of dirs) {
      for (const name of await store.list(dir).catch(() => [] as string[])) {
        if (name.endsWith('.partial') && prefixes.some((p) => name.startsWith(p))) await store.unlink(store.paths.join(dir, name)).catch(() => {});
      }
    }
  }
}
