/**
 * QCOW2 images we write (new ones, and qemu's: v2, refcount widths 1 and 64, snapshots with shared clusters,
 * compressed clusters, overlays): after every session `qemu-img check` finds no errors and no leaks, and
 * `qemu-img compare` matches a model of the writes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { createDisk, openDisk } from '../../src/formats/index.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run } from '../helpers/tools.js';
import { checkWithQemu, fill, qemuRaw, randomDiskWrites } from './qcow2-helpers.js';

const KiB = 1024;
const MiB = 1 << 20;
const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;

d('QCOW2 writes checked by qemu', () => {
  const tmp = makeTempDir('qcow2-write-');
  afterAll(() => tmp.cleanup());
  const p = (n: string) => path.join(tmp.dir, n);

  test.each([512, 64 * KiB, 2 * MiB])('new image with %i-byte clusters: two sessions of random writes', async (cs) => {
    const img = p(`new-${cs}.qcow2`);
    const size = cs === 2 * MiB ? 21 * MiB + 512 : 5 * MiB + 512;
    const model = Buffer.alloc(size);
    const disk = await createDisk(img, { format: 'qcow2', type: 'dynamic', virtualSize: size, blockSize: cs });
    expect(disk.blockSize).toBe(cs);
    await randomDiskWrites(disk, model, cs, 40, 3 * cs + 5000);
    await disk.close();
    checkWithQemu(img, model);
    const again = await openDisk(img, { writable: true });
    await randomDiskWrites(again, model, cs + 1, 30, 2 * cs + 777);
    await again.close();
    checkWithQemu(img, model);
  });

  test('512-byte clusters past what one refcount table cluster counts: the table grows and moves', async () => {
    const img = p('grow.qcow2');
    const size = 9 * MiB;
    const disk = await createDisk(img, { format: 'qcow2', type: 'dynamic', virtualSize: size, blockSize: 512 });
    const data = fill(size, 3);
    for (let off = 0; off < size; off += MiB) await disk.write(off, data.subarray(off, off + MiB));
    await disk.close();
    checkWithQemu(img, data);
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', img]).toString());
    expect(info['virtual-size']).toBe(size);
  });

  test.each([
    ['v2 (compat=0.10): zeros are written as data', 'compat=0.10'],
    ['refcount_bits=1', 'refcount_bits=1'],
    ['refcount_bits=64', 'refcount_bits=64'],
    ['an unknown autoclear bit set: cleared before the first write', 'cluster_size=64k'],
  ])('qemu image, %s', async (name, options) => {
    const img = p(`q-${options.replace(/\W/g, '')}-${name.length}.qcow2`);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, img, '6M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x11 0 2M', '-c', 'write -q -z 3M 1M', '-c', 'write -q -P 0x12 5M 100k', img]);
    const autoclear = name.includes('autoclear');
    if (autoclear) {
      const b = readFileSync(img);
      b.writeBigUInt64BE(1n << 40n, 88);
      writeFileSync(img, b);
    }
    const model = qemuRaw(img);
    const disk = await openDisk(img, { writable: true });
    await randomDiskWrites(disk, model, options.length, 40, 200 * KiB);
    await disk.close();
    checkWithQemu(img, model);
    if (autoclear) expect(readFileSync(img).readBigUInt64BE(88)).toBe(0n);
    if (name.startsWith('v2')) expect(JSON.parse(run('qemu-img', ['info', '--output=json', img]).toString())['format-specific'].data.compat).toBe('0.10');
  });

  test('internal snapshots: shared clusters and shared L2 tables are copied on write, the snapshot keeps its content', async () => {
    const img = p('snap.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '6M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x21 0 6M', img]);
    run('qemu-img', ['snapshot', '-c', 's1', img]);
    const before = qemuRaw(img);
    const model = Buffer.from(before);
    const disk = await openDisk(img, { writable: true });
    await randomDiskWrites(disk, model, 77, 40, 300 * KiB);
    await disk.close();
    checkWithQemu(img, model);
    // The snapshot still reads as it was.
    run('qemu-img', ['snapshot', '-a', 's1', img]);
    expect(qemuRaw(img).equals(before)).toBe(true);
  });

  test('compressed clusters are replaced on write (their host clusters freed), others still read', async () => {
    const raw = p('c.raw');
    writeFileSync(raw, Buffer.from('some compressible text '.repeat(200000)).subarray(0, 4 * MiB));
    const img = p('c.qcow2');
    run('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', raw, img]);
    const model = qemuRaw(img);
    const disk = await openDisk(img, { writable: true });
    await randomDiskWrites(disk, model, 5, 30, 100 * KiB);
    await disk.close();
    checkWithQemu(img, model);
  });

  test('overlay we create on a qemu base: writes, zero flags over the base, backing file and format recorded', async () => {
    const base = p('ob-base.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '6M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x31 0 6M', base]);
    const top = p('ob-top.qcow2');
    const model = qemuRaw(base);
    const disk = await createDisk(top, { format: 'qcow2', type: 'differencing', parent: await openDisk(base) });
    await randomDiskWrites(disk, model, 9, 40, 300 * KiB);
    await disk.writeZeroes(MiB, 2 * 64 * KiB);
    model.fill(0, MiB, MiB + 2 * 64 * KiB);
    await disk.close();
    checkWithQemu(top, model);
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', top]).toString());
    expect(info['backing-filename']).toBe('ob-base.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    const map = JSON.parse(run('qemu-img', ['map', '--output=json', top]).toString()) as Array<{ start: number; depth: number; zero: boolean }>;
    expect(map.find((e) => e.start <= MiB && e.depth === 0 && e.zero)).toBeDefined();
  });

  test('writes to an image marked corrupt are refused with one line', async () => {
    const img = p('corrupt.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']);
    const b = readFileSync(img);
    b.writeBigUInt64BE(2n, 72);
    writeFileSync(img, b);
    await expect(openDisk(img, { writable: true })).rejects.toThrow(/marked corrupt .* never written/);
  });
});
