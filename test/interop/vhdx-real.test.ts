/** Real Hyper-V / Windows / qemu VHDX images read by our driver, against their published digests and libvhdi. */
import { readFileSync, copyFileSync, writeFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { openDisk, createDisk } from '../../src/formats/index.js';
import { haveRealImages, unpackFixture, sha256 } from '../helpers/fixtures.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, requireTool, runStatus } from '../helpers/tools.js';
import { crc32cWithZeroedField } from '../../src/util/crc32c.js';
import { parseGuidLE } from '../../src/util/guid.js';
import { digestByStatus, pyvhdiReadRange, readAll } from '../unit/vhdx/helpers.js';

const real = haveRealImages();
const d = real ? describe : describe.skip;

d('VHDX real images', () => {
  const tmp = makeTempDir('vhdx-real-');
  afterAll(() => tmp.cleanup());

  test('Windows dynamic.vhdx and fixed.vhdx match their digests', async () => {
    for (const [name, digest, type] of [
      ['dynamic.vhdx.gz', '8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac', 'dynamic'],
      ['fixed.vhdx.gz', 'bc0be4623b15aa84216fb31ba24e3b621ec7f1c72d198c990ac0eced222d9f62', 'fixed'],
    ]) {
      const file = await unpackFixture(name, tmp.dir);
      const disk = await openDisk(file);
      try {
        expect(disk.format).toBe('vhdx');
        expect(disk.type).toBe(type);
        expect(sha256(await readAll(disk))).toBe(digest);
        expect(await digestByStatus(disk)).toBe(digest);
      } finally {
        await disk.close();
      }
    }
  });

  test('Hyper-V dynamic 1 GiB with 4 KiB physical sectors and ZERO blocks', async () => {
    const file = await unpackFixture('iotest-dynamic-1G.vhdx.bz2', tmp.dir);
    const disk = await openDisk(file);
    try {
      expect(disk.physicalSectorSize).toBe(4096);
      expect(disk.blockSize).toBe(32 << 20);
      const st = await disk.status(0, disk.virtualSize);
      expect(st[0]).toEqual({ offset: 0, length: 96 << 20, state: 'data', depth: 0 });
      expect(st.slice(1).every((e) => e.state === 'zero')).toBe(true);
      expect(await digestByStatus(disk)).toBe('d3d112d8dab7fd360609f7d5a7b769904b7a2a7d7b6b8c535f65a23293c05478');
      const info = await disk.info();
      expect(info.allocatedBlocks).toBe(3);
    } finally {
      await disk.close();
    }
  });

  test('dirty-log image: replayed in memory read-only, file unchanged; replayed in place when writable', async () => {
    const file = await unpackFixture('iotest-dirtylog-10G-4M.vhdx.bz2', tmp.dir);
    const before = sha256(readFileSync(file));
    const disk = await openDisk(file);
    try {
      expect((await disk.info()).logState).toMatch(/in memory/);
      const st = await disk.status(0, disk.virtualSize);
      const data = st.filter((e) => e.state === 'data');
      expect(data.reduce((n, e) => n + e.length, 0)).toBe(18 << 20);
      expect(data[0].offset).toBe(0);
      const head = await disk.read(0, 18 << 20);
      expect(head.equals(Buffer.alloc(18 << 20, 0xa5))).toBe(true);
      expect((await disk.read(18 << 20, 1 << 20)).equals(Buffer.alloc(1 << 20))).toBe(true);
      expect(await digestByStatus(disk, 1 << 30)).toBe('179cefe8b0587f123393eedf2aa7aa8d25798591178e6bc3950a09762f38f96f');
    } finally {
      await disk.close();
    }
    expect(sha256(readFileSync(file))).toBe(before);

    const copy = path.join(tmp.dir, 'dirty-copy.vhdx');
    copyFileSync(file, copy);
    const w = await openDisk(copy, { writable: true });
    await w.close();
    if (requireTool(HAVE_QEMU, 'qemu-img')) {
      // qemu now opens it read-only (it refuses a dirty log) and sees the replayed content.
      const check = runStatus('qemu-img', ['check', '-f', 'vhdx', copy]);
      expect(check.stdout + check.stderr).toMatch(/No errors were found/);
      const io = runStatus('qemu-io', ['-r', '-f', 'vhdx', '-c', 'read -q -P 0xa5 0 18M', '-c', 'read -q -P 0 18M 2M', copy]);
      expect(io.stdout + io.stderr).not.toMatch(/Pattern verification failed|error/i);
      expect(io.status).toBe(0);
    }
    const again = await openDisk(copy);
    try {
      expect((await again.info()).logState).toBe('empty');
      expect((await again.read(17 << 20, 1 << 20)).equals(Buffer.alloc(1 << 20, 0xa5))).toBe(true);
    } finally {
      await again.close();
    }
  });

  test('Hyper-V differencing.avhdx on a stand-in parent equals libvhdi', async () => {
    if (!requireTool(Boolean(PYTHON_VHDI), 'pyvhdi')) return;
    const child = await unpackFixture('differencing.avhdx.gz', tmp.dir);
    const probe = await openDisk(child, { ignoreParentMismatch: true }).catch((e) => e);
    // Without its parent the open must fail with a clear parent error.
    expect(probe).toBeInstanceOf(Error);
    expect(String(probe.message)).toMatch(/parent/);
    const info = await (async () => {
      const { readLayout } = await import('../../src/formats/vhdx/vhdx-disk.js');
      const { localStore } = await import('../../src/io/local.js');
      const f = await localStore.open(child, 'read');
      try {
        return (await readLayout(f, child, false)).layout;
      } finally {
        await f.close();
      }
    })();
    const entries = Object.fromEntries(info.meta.parentLocator!.entries);
    expect(entries.parent_linkage.toLowerCase()).toBe('{ff34003b-11ed-4cf8-a166-b2be05e20b80}');
    // A stand-in parent with deterministic content, named as the child's relative_path names it.
    const parentName = entries.relative_path.replace(/\\/g, '/').split('/').pop()!;
    const parentPath = path.join(tmp.dir, parentName);
    const parent = await createDisk(parentPath, { format: 'vhdx', type: 'dynamic', virtualSize: info.meta.virtualSize, logicalSectorSize: info.meta.logicalSectorSize, blockSize: 1 << 20 });
    const pattern = Buffer.alloc(1 << 20);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + (i >> 9)) & 0xff;
    for (let off = 0; off < 80 << 20; off += 2 << 20) await parent.write(off, pattern);
    await parent.close();
    patchDataWriteGuid(parentPath, 'ff34003b-11ed-4cf8-a166-b2be05e20b80');
    const disk = await openDisk(child);
    try {
      expect(disk.type).toBe('differencing');
      expect(disk.parent?.location.path).toBe(parentPath);
      const ours = await disk.read(0, 128 << 20);
      const theirs = pyvhdiReadRange(child, 0, 128 << 20, parentPath);
      expect(ours.equals(theirs)).toBe(true);
      const st = await disk.status(0, disk.virtualSize);
      expect(st.some((e) => e.state === 'data' && e.depth === 0)).toBe(true);
      expect(st.some((e) => e.state === 'data' && e.depth === 1)).toBe(true);
      // Every range the child itself holds, wherever it lies, agrees with libvhdi too.
      const own = st.filter((e) => e.depth === 0);
      expect(own.length).toBeGreaterThan(0);
      for (const e of own) {
        expect((await disk.read(e.offset, e.length)).equals(pyvhdiReadRange(child, e.offset, e.length, parentPath))).toBe(true);
      }
    } finally {
      await disk.close();
    }
  });
});

/** Rewrites DataWriteGuid in both headers and fixes their CRC-32C, as the README describes for a stand-in parent. */
export function patchDataWriteGuid(file: string, guid: string): void {
  const buf = readFileSync(file);
  for (const off of [64 * 1024, 128 * 1024]) {
    const h = buf.subarray(off, off + 4096);
    parseGuidLE(guid).copy(h, 32);
    h.writeUInt32LE(crc32cWithZeroedField(h, 4), 4);
  }
  writeFileSync(file, buf);
  expect(statSync(file).size).toBe(buf.length);
}
