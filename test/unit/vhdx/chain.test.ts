/** Differencing chains: finding the parent, checking it, GUID rules, and what is refused. */
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { openDisk, createDisk } from '../../../src/formats/index.js';
import { parentCandidates } from '../../../src/formats/vhdx/vhdx-disk.js';
import { VHDX_LOCATOR_TYPE } from '../../../src/formats/vhdx/parent-locator.js';
import { localStore } from '../../../src/io/local.js';
import { ParentError, UnsupportedError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;
const tmp = makeTempDir('vhdx-chain-');
afterAll(() => tmp.cleanup());

async function pair(dir: string, childDir = dir): Promise<{ parent: string; child: string }> {
  mkdirSync(dir, { recursive: true });
  mkdirSync(childDir, { recursive: true });
  const parent = path.join(dir, 'base.vhdx');
  const child = path.join(childDir, 'child.avhdx');
  const p = await createDisk(parent, { format: 'vhdx', type: 'dynamic', virtualSize: 4 * MiB, blockSize: MiB, logicalSectorSize: 4096 });
  await p.write(0, Buffer.alloc(MiB, 0x5a));
  await p.close();
  const c = await createDisk(child, { format: 'vhdx', type: 'differencing', parent: await openDisk(parent) });
  expect(c.logicalSectorSize).toBe(4096);
  expect(c.virtualSize).toBe(4 * MiB);
  await c.write(4096, Buffer.alloc(100, 0x11));
  await c.close();
  return { parent, child };
}

test('candidates: relative path first, then absolute, then their names next to the child', () => {
  const child = { store: localStore, path: '/a/b/child.avhdx' };
  const loc = {
    type: VHDX_LOCATOR_TYPE,
    entries: [
      ['parent_linkage', '{x}'],
      ['relative_path', '..\\p\\base.vhdx'],
      ['volume_path', '\\\\?\\Volume{1234}\\vms\\base.vhdx'],
      ['absolute_win32_path', 'C:\\vms\\base.vhdx'],
    ] as Array<[string, string]>,
  };
  expect(parentCandidates(loc, child).map((l) => l.path)).toEqual(['/a/p/base.vhdx', '/a/b/base.vhdx']);
  loc.entries[3] = ['absolute_win32_path', '/srv/vms/base.vhdx'];
  expect(parentCandidates(loc, child).map((l) => l.path)).toEqual(['/a/p/base.vhdx', '/a/b/base.vhdx', '/srv/vms/base.vhdx']);
});

test('a child reads through its parent, sub-sector writes keep the parent bytes around them', async () => {
  const { child } = await pair(path.join(tmp.dir, 'basic'));
  const d = await openDisk(child);
  const expected = Buffer.alloc(8192, 0x5a);
  expected.fill(0x11, 4096, 4196);
  expect((await d.read(0, 8192)).equals(expected)).toBe(true);
  expect(await d.status(0, 2 * MiB)).toEqual([
    { offset: 0, length: 4096, state: 'data', depth: 1 },
    { offset: 4096, length: 4096, state: 'data', depth: 0 },
    { offset: 8192, length: MiB - 8192, state: 'data', depth: 1 },
    { offset: MiB, length: MiB, state: 'unallocated', depth: 1 },
  ]);
  await d.close();
});

test('locator paths are computed from the final location; a moved child finds its parent', async () => {
  const dir = path.join(tmp.dir, 'moved');
  mkdirSync(path.join(dir, 'diffs'), { recursive: true });
  const parent = path.join(dir, 'base.vhdx');
  const p = await createDisk(parent, { format: 'vhdx', type: 'dynamic', virtualSize: 2 * MiB, blockSize: MiB });
  await p.close();
  const temp = path.join(dir, 'diffs', '.child.partial');
  const final = path.join(dir, 'child.avhdx');
  const c = await createDisk(temp, { format: 'vhdx', type: 'differencing', parent: await openDisk(parent), finalLocation: { store: localStore, path: final } });
  const info = await c.info();
  expect(info.parentLocator).toMatchObject({ relative_path: '.\\base.vhdx', absolute_win32_path: parent });
  await c.close();
  renameSync(temp, final);
  const d = await openDisk(final);
  expect(d.parent?.location.path).toBe(parent);
  await d.close();
  // From a sibling folder the relative path climbs up.
  const other = await createDisk(path.join(dir, 'diffs', 'x.avhdx'), { format: 'vhdx', type: 'differencing', parent: await openDisk(parent) });
  expect((await other.info()).parentLocator).toMatchObject({ relative_path: '..\\base.vhdx' });
  await other.close();
});

test('a parent that changed after the child was made is refused unless told to ignore it', async () => {
  const { parent, child } = await pair(path.join(tmp.dir, 'changed'));
  const p = await openDisk(parent, { writable: true });
  const before = (await p.identity()).contentId;
  await p.write(0, Buffer.alloc(4096, 1));
  const after = (await p.identity()).contentId;
  expect(after).not.toBe(before);
  await p.close();
  await expect(openDisk(child)).rejects.toBeInstanceOf(ParentError);
  const d = await openDisk(child, { ignoreParentMismatch: true });
  expect((await d.read(0, 1))[0]).toBe(1);
  await d.close();
});

test('opening writable without writing changes no GUID; the first write renews both', async () => {
  const { parent } = await pair(path.join(tmp.dir, 'guids'));
  const id = async () => {
    const d = await openDisk(parent);
    const i = await d.info();
    await d.close();
    return [i.dataWriteGuid, i.fileWriteGuid];
  };
  const [data0, file0] = await id();
  await (await openDisk(parent, { writable: true })).close();
  expect(await id()).toEqual([data0, file0]);
  const w = await openDisk(parent, { writable: true });
  await w.write(MiB, Buffer.alloc(4096, 9));
  await w.close();
  const [data1, file1] = await id();
  expect(data1).not.toBe(data0);
  expect(file1).not.toBe(file0);
});

test('a VHDX child of a non-VHDX parent is refused as unsupported', async () => {
  const dir = path.join(tmp.dir, 'raw-parent');
  const { parent, child } = await pair(dir);
  copyFileSync(child, child + '.bak');
  writeFileSync(parent, Buffer.alloc(4 * MiB, 3)); // now a raw image
  await expect(openDisk(child)).rejects.toBeInstanceOf(UnsupportedError);
  const raw = await openDisk(parent);
  await expect(createDisk(path.join(dir, 'c2.avhdx'), { format: 'vhdx', type: 'differencing', parent: raw })).rejects.toBeInstanceOf(UnsupportedError);
  await raw.close();
});

test('a missing parent is a clear parent error naming where it looked', async () => {
  const { parent, child } = await pair(path.join(tmp.dir, 'missing'));
  renameSync(parent, parent + '.gone');
  const err = await openDisk(child).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ParentError);
  expect((err as Error).message).toMatch(/base\.vhdx/);
});

test('create refuses options VHDX cannot hold, and honours the ones it can', async () => {
  const dir = path.join(tmp.dir, 'opts');
  mkdirSync(dir, { recursive: true });
  const at = (name: string) => path.join(dir, name);
  await expect(createDisk(at('a.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: 8 * MiB, blockSize: 3 * MiB })).rejects.toThrow(/power of two/);
  await expect(createDisk(at('b.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: 8 * MiB, logicalSectorSize: 1024 })).rejects.toThrow(/512 or 4096/);
  await expect(createDisk(at('c.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: 8 * MiB + 100 })).rejects.toThrow(/multiple of 512/);
  await expect(createDisk(at('d.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: 8 * MiB, logicalSectorSize: 4096, physicalSectorSize: 512 })).rejects.toThrow(/smaller than the logical/);
  await expect(createDisk(at('e.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: 65 * 1024 ** 4 })).rejects.toThrow(/64 TiB/);
  await expect(createDisk(at('f.vhdx'), { format: 'vhdx', type: 'differencing', virtualSize: MiB })).rejects.toThrow(/needs a parent/);
  const d = await createDisk(at('g.vhdx'), { format: 'vhdx', type: 'fixed', virtualSize: 8 * MiB, blockSize: 4 * MiB, logicalSectorSize: 4096, physicalSectorSize: 4096 });
  expect([d.type, d.virtualSize, d.blockSize, d.logicalSectorSize, d.physicalSectorSize]).toEqual(['fixed', 8 * MiB, 4 * MiB, 4096, 4096]);
  expect(await d.status(0, d.virtualSize)).toEqual([{ offset: 0, length: 8 * MiB, state: 'data', depth: 0 }]);
  await d.close();
  const dyn = await createDisk(at('h.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: 100 * MiB });
  expect([dyn.type, dyn.blockSize, dyn.logicalSectorSize, dyn.physicalSectorSize]).toEqual(['dynamic', 32 * MiB, 512, 4096]);
  expect(await dyn.status(0, dyn.virtualSize)).toEqual([{ offset: 0, length: 100 * MiB, state: 'unallocated', depth: 0 }]);
  await dyn.close();
  await expect(createDisk(at('h.vhdx'), { format: 'vhdx', type: 'dynamic', virtualSize: MiB })).rejects.toThrow(/exists/);
});

test('a three-level chain reads through every layer and reports each layer as its depth', async () => {
  const dir = path.join(tmp.dir, 'three');
  mkdirSync(dir, { recursive: true });
  const base = path.join(dir, 'base.vhdx');
  const mid = path.join(dir, 'mid.avhdx');
  const top = path.join(dir, 'top.avhdx');
  const b = await createDisk(base, { format: 'vhdx', type: 'dynamic', virtualSize: 4 * MiB, blockSize: MiB });
  await b.write(0, Buffer.alloc(3 * MiB, 1));
  await b.close();
  const m = await createDisk(mid, { format: 'vhdx', type: 'differencing', parent: await openDisk(base), blockSize: MiB });
  await m.write(MiB, Buffer.alloc(2 * MiB, 2));
  await m.writeZeroes(2 * MiB + 512, 512);
  await m.close();
  const t = await createDisk(top, { format: 'vhdx', type: 'differencing', parent: await openDisk(mid), blockSize: 2 * MiB });
  await t.write(2 * MiB, Buffer.alloc(4096, 3));
  await t.close();
  const d = await openDisk(top);
  const expected = Buffer.alloc(4 * MiB);
  expected.fill(1, 0, MiB);
  expected.fill(2, MiB, 3 * MiB);
  expected.fill(0, 2 * MiB + 512, 2 * MiB + 1024);
  expected.fill(3, 2 * MiB, 2 * MiB + 4096);
  expect((await d.read(0, 4 * MiB)).equals(expected)).toBe(true);
  expect(await d.status(0, 4 * MiB)).toEqual([
    { offset: 0, length: MiB, state: 'data', depth: 2 },
    { offset: MiB, length: MiB, state: 'data', depth: 1 },
    { offset: 2 * MiB, length: 4096, state: 'data', depth: 0 },
    { offset: 2 * MiB + 4096, length: MiB - 4096, state: 'data', depth: 1 },
    { offset: 3 * MiB, length: MiB, state: 'unallocated', depth: 2 },
  ]);
  await d.close();
});
