/**
 * The crash tests' kill hook on object stores: with VHDSYNC_TEST_KILL_AFTER_WRITES=N the process dies by SIGKILL
 * just before its (N+1)-th mutation, counting object puts and deletes and byte-store mutations on ONE budget.
 * Runs the built modules (dist/) in a child process, which the hook kills.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { makeTempDir } from '../../helpers/tmp.js';

const dist = (m: string) => JSON.stringify(pathToFileURL(path.resolve('dist', m)).href);

/** A child that makes `ops` (o: object put, d: object delete, D: empty delete, r: object read, f: file write), logging each. */
function runChild(ops: string, budget: string | undefined, dir: string) {
  mkdirSync(dir);
  const script = `
const { hookObjectStore } = await import(${dist('io/object-kill-hook.js')});
const { hookLocation } = await import(${dist('sync/kill-hook.js')});
const { parseLocation, openLocation } = await import(${dist('io/location.js')});
const objects = new Map();
const mem = {
  display: 'mem://', async get(k) { return objects.get(k) ?? null; }, async head() { return null; },
  async put(k, b) { objects.set(k, b); return { etag: '' }; }, async *list() {}, async delete(ks) { for (const k of ks) objects.delete(k); },
  async bucketExists() { return true; }, async close() {},
};
const store = hookObjectStore(mem);
if (hookObjectStore(store) !== store) throw new Error('hooked twice');
// The file is made before the hook sees it (a create counts too); opening it through the hook is free.
const plain = await parseLocation(${JSON.stringify(path.join(dir, 'file'))});
await (await plain.store.createExclusive(plain.path)).close();
const loc = hookLocation(plain);
const file = await loc.store.open(loc.path, 'readwrite');
let i = 0;
for (const op of ${JSON.stringify(ops)}) {
  i++;
  if (op === 'o') await store.put('k' + i, Buffer.from('x'));
  if (op === 'd') await store.delete(['k1']);
  if (op === 'D') await store.delete([]);
  if (op === 'r') await store.get('k1');
  if (op === 'f') await file.write(0, Buffer.from('y'));
  process.stdout.write(op);
}
await file.close();
`;
  const env = { ...process.env };
  if (budget === undefined) delete env.VHDSYNC_TEST_KILL_AFTER_WRITES;
  else env.VHDSYNC_TEST_KILL_AFTER_WRITES = budget;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env });
}

describe('object-store kill hook', () => {
  const { dir, cleanup } = makeTempDir('vhdsync-okill-');
  afterAll(cleanup);

  it('counts puts, non-empty deletes and file writes on one budget; reads and empty deletes are free', () => {
    // Budget 4: o, f, d, o pass (4 mutations); r and D are free; the next f dies before it is made.
    const r = runChild('ofrdDoff', '4', path.join(dir, 'a'));
    expect(r.signal).toBe('SIGKILL');
    expect(r.stdout).toBe('ofrdDo');
  });

  it('kills before the first mutation at budget 0', () => {
    const r = runChild('rDo', '0', path.join(dir, 'b'));
    expect(r.signal).toBe('SIGKILL');
    expect(r.stdout).toBe('rD');
  });

  it('reports the number of mutations of a run that the budget does not stop, and is inert when unset', () => {
    const armed = runChild('ofdrD', '1000', path.join(dir, 'c'));
    expect(armed.status).toBe(0);
    expect(armed.stderr).toContain('vhdsync-test-hook: 3 mutations');
    const off = runChild('ofdrD', undefined, path.join(dir, 'd'));
    expect(off.status).toBe(0);
    expect(off.stderr).not.toContain('vhdsync-test-hook');
  });
});
