/** Real Windows / Hyper-V / qemu VHD images read by our driver, against their published digests and libvhdi. */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { jest } from '@jest/globals';
import { createDisk, openDisk, type Disk } from '../../src/formats/index.js';
import { parseLocation } from '../../src/io/location.js';
import { CorruptImageError } from '../../src/util/errors.js';
import { formatGuidBE } from '../../src/util/guid.js';
import { haveRealImages, sha256, unpackFixture } from '../helpers/fixtures.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, pyvhdiRead, requireTool, runStatus } from '../helpers/tools.js';
import { patchFooter, pattern } from '../unit/vhd/vhd-test-utils.js';

const real = haveRealImages() && requireTool(Boolean(PYTHON_VHDI), 'pyvhdi') && requireTool(HAVE_QEMU, 'qemu-img');
const d = real ? describe : describe.skip;
const MiB = 1 << 20;

async function readAll(disk: Disk): Promise<Buffer> {
  return disk.read(0, disk.virtualSize);
}

d('VHD real images', () => {
  const tmp = makeTempDir('vhd-real-');
  afterAll(() => tmp.cleanup());

  test.each([
    ['fixed.vhd.gz', 'fixed', 10485760, '459325ab1fcd1d5ec9854cba790ee26378317cda177ffc1072008a1df88e6463'],
    ['dynamic.vhd.gz', 'dynamic', 10485760, 'ecff2ef6615a3cddc6a6885f1c6d9cf13a232697e1dc6575f2c2f01f57247784'],
    ['ext2.vhd.gz', 'dynamic', 4212736, '870be7ae16c1fa8faab05c6eb9205dc9a7ae35c5f552c5cf8a267c0bc6a5cb99'],
  ])('%s matches its digest, read whole and read by status', async (name, type, size, digest) => {
    const disk = await openDisk(await unpackFixture(name, tmp.dir));
    try {
      expect(disk.format).toBe('vhd');
      expect(disk.type).toBe(type);
      expect(disk.virtualSize).toBe(size);
      expect(sha256(await readAll(disk))).toBe(digest);
      // Reading only what status calls data, zeros elsewhere, gives the same content.
      const out = Buffer.alloc(disk.virtualSize);
      for (const e of await disk.status(0, disk.virtualSize)) {
        if (e.state === 'data') await disk.read(e.offset, e.length, out.subarray(e.offset, e.offset + e.length));
      }
      expect(sha256(out)).toBe(digest);
    } finally {
      await disk.close();
    }
  });

  test('Windows dynamic.vhd written by us (new and existing blocks) reads as expected in qemu and libvhdi', async () => {
    const dir = path.join(tmp.dir, 'w');
    mkdirSync(dir);
    const file = await unpackFixture('dynamic.vhd.gz', dir);
    const before = await openDisk(file);
    const expected = await readAll(before);
    const st = await before.status(0, before.virtualSize);
    await before.close();
    const hole = st.find((e) => e.state === 'unallocated')!;
    const disk = await openDisk(file, { writable: true });
    const w = async (off: number, data: Buffer) => {
      await disk.write(off, data);
      data.copy(expected, off);
    };
    await w(hole.offset + 1000, pattern(300000, 1));
    await w(100, pattern(5000, 2));
    await disk.close();
    writeFileSync(path.join(dir, 'expected.raw'), expected);
    expect(runStatus('qemu-img', ['compare', '-q', '-f', 'vpc', '-F', 'raw', file, path.join(dir, 'expected.raw')]).status).toBe(0);
    expect(pyvhdiRead(file).equals(expected)).toBe(true);
  });

  test('Hyper-V 2012 R2 dynamic VHD: size from current_size, all unallocated, zeros read without touching the file', async () => {
    const disk = await openDisk(await unpackFixture('hyperv2012r2-dynamic.vhd.bz2', tmp.dir));
    try {
      expect(disk.virtualSize).toBe(136365211648);
      expect(await disk.status(0, disk.virtualSize)).toEqual([{ offset: 0, length: 136365211648, state: 'unallocated', depth: 0 }]);
      const spy = jest.spyOn(disk.file, 'read');
      const head = await disk.read(0, 8 * MiB);
      const tail = await disk.read(disk.virtualSize - 8 * MiB, 8 * MiB);
      expect(spy).not.toHaveBeenCalled();
      expect(head.every((x) => x === 0) && tail.every((x) => x === 0)).toBe(true);
      expect(await disk.info()).toMatchObject({ creatorApp: 'win ', allocatedBlocks: 0, totalBlocks: 65024 });
    } finally {
      await disk.close();
    }
  });

  test('Windows fat-differential.vhd opens against a stand-in parent found through its W2ru locator, and reads as libvhdi merges it', async () => {
    const dir = path.join(tmp.dir, 'fat');
    mkdirSync(dir);
    const childPath = await unpackFixture('fat-differential.vhd.gz', dir);
    const parentUniqueId = readFileSync(childPath).subarray(512 + 40, 512 + 56);
    const parentPath = path.join(dir, 'fat-parent.vhd');
    /** (Re)makes the stand-in parent with `content`, its UniqueId patched to what the child expects. */
    const standIn = async (content: Buffer | null) => {
      rmSync(parentPath, { force: true });
      const stand = await createDisk(await parseLocation(parentPath), { format: 'vhd', type: 'dynamic', virtualSize: 4 * MiB });
      if (content) await stand.write(0, content);
      await stand.close();
      patchFooter(parentPath, (f) => parentUniqueId.copy(f, 68));
    };

    // 1. An all-zero parent: every reader that honours the chain must agree exactly.
    await standIn(null);
    let disk = await openDisk(childPath);
    try {
      expect(disk.type).toBe('differencing');
      expect(disk.parent?.location.path).toBe(parentPath);
      const info = await disk.info();
      expect(info.parentUniqueId).toBe(formatGuidBE(parentUniqueId));
      expect(info.parentLocators).toEqual(['W2ku: C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd', 'W2ru: .\\fat-parent.vhd']);
      const merged = await readAll(disk);
      expect(merged.equals(pyvhdiRead(childPath, parentPath))).toBe(true);
      // What the child holds is a FAT volume's metadata: the FAT (media byte 0xf8) at 67 KiB, the root directory label.
      expect(merged.subarray(134 * 512, 134 * 512 + 4).toString('hex')).toBe('f8ffffff');
      expect(merged.subarray(152 * 512, 152 * 512 + 10).toString('latin1')).toBe('TESTVOLUME');
    } finally {
      await disk.close();
    }

    // 2. A patterned parent: the merged view mixes both layers. libvhdi tests a VHD bitmap bit without `& 1`, so it
    // takes some absent sectors from the child's block (zeros there); those are the only sectors where we differ,
    // and there we show the parent, as the MSB-first bitmap says.
    const parentContent = pattern(4 * MiB, 42);
    await standIn(parentContent);
    disk = await openDisk(childPath);
    try {
      const merged = await readAll(disk);
      const theirs = pyvhdiRead(childPath, parentPath);
      let differing = 0;
      let fromChild = 0;
      for (let s = 0; s < merged.length / 512; s++) {
        const ours = merged.subarray(s * 512, (s + 1) * 512);
        const fromParent = parentContent.subarray(s * 512, (s + 1) * 512);
        if (!ours.equals(fromParent)) fromChild++;
        if (ours.equals(theirs.subarray(s * 512, (s + 1) * 512))) continue;
        differing++;
        expect(ours.equals(fromParent)).toBe(true);
        expect(theirs.subarray(s * 512, (s + 1) * 512).every((x) => x === 0)).toBe(true);
      }
      // The child's bitmap bytes 02 01 ff cb a8 (sectors 128..199) mark 18 sectors present; libvhdi's reading
      // also takes 135, 186, 187, 189, 193, 195, 197, 198, 199 from the child.
      expect(fromChild).toBe(18);
      expect(differing).toBe(9);
      const st = await disk.status(0, disk.virtualSize);
      expect(st.some((e) => e.depth === 0 && e.state === 'data')).toBe(true);
      expect(st.some((e) => e.depth === 1 && e.state === 'data')).toBe(true);
    } finally {
      await disk.close();
    }
  });

  test('image.vhd and image-differential.vhd (wrong footer checksums) are refused, and open with ignoreChecksums', async () => {
    const dir = path.join(tmp.dir, 'image');
    mkdirSync(dir);
    const base = await unpackFixture('image.vhd.gz', dir);
    const child = await unpackFixture('image-differential.vhd.gz', dir);
    for (const f of [base, child]) {
      await expect(openDisk(f)).rejects.toThrow(CorruptImageError);
      await expect(openDisk(f)).rejects.toThrow(/footer checksum is wrong/);
    }
    const disk = await openDisk(child, { ignoreChecksums: true });
    try {
      expect(disk.type).toBe('differencing');
      expect(disk.parent?.location.path).toBe(base);
      expect((await disk.info()).footerChecksum).toBe('wrong (ignored)');
      expect((await readAll(disk)).equals(pyvhdiRead(child, base))).toBe(true);
    } finally {
      await disk.close();
    }
  });
});
