/**
 * Writes into QCOW2 images with extended L2 entries (subclusters), external data files (raw and not) and persistent
 * bitmaps, made by qemu: after every session `qemu-img check` finds no errors and no leaks and `qemu-img compare`
 * matches a model of the writes; qemu's own view of the subcluster bitmaps, the data file and the bitmaps' flags.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { openDisk } from '../../src/formats/index.js';
import { makeTempDir } from '../helpers/tmp.js';
import { spawnSync } from 'node:child_process';
import { HAVE_QEMU, requireTool, run, runStatus } from '../helpers/tools.js';
import { checkWithQemu, fill, qemuMap, qemuRaw, randomDiskWrites, randomWrites } from './qcow2-helpers.js';

const KiB = 1024;
const MiB = 1 << 20;
const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;

d('QCOW2 writes into extended-L2, data-file and bitmap images, checked by qemu', () => {
  const tmp = makeTempDir('qcow2-write-ext-');
  afterAll(() => tmp.cleanup());
  const p = (n: string) => path.join(tmp.dir, n);
  const info = (img: string) => JSON.parse(run('sh', ['-c', 'cd "$(dirname "$1")" && qemu-img info --output=json "$1"', 'sh', img]).toString());

  test.each([16 * KiB, 64 * KiB, 2 * MiB])('extended L2 with %i-byte clusters: two sessions of random writes and zeroings', async (cs) => {
    const img = p(`x-${cs}.qcow2`);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `extended_l2=on,cluster_size=${cs}`, img, cs === 2 * MiB ? '13M' : '5M']);
    run('qemu-io', ['-f', 'qcow2', '-c', `write -q -P 0x11 0 ${cs * 2 + 3 * KiB}`, '-c', `write -q -z ${cs * 3} ${cs}`, img]);
    const model = qemuRaw(img);
    for (const seed of [1, 2]) {
      const disk = await openDisk(img, { writable: true });
      await randomDiskWrites(disk, model, cs + seed, 40, 2 * cs + 777);
      await disk.close();
      checkWithQemu(img, model);
    }
    expect(info(img)['format-specific'].data['extended-l2']).toBe(true);
  });

  test('extended L2 overlay: a small write allocates only its subclusters, the rest still reads from the backing file', async () => {
    const base = p('xb.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '4M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x21 0 4M', base]);
    const top = p('xt.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'xb.qcow2', '-F', 'qcow2', top]);
    const model = qemuRaw(base);
    const disk = await openDisk(top, { writable: true });
    await disk.write(64 * KiB + 2 * KiB + 5, fill(100, 1));
    fill(100, 1).copy(model, 64 * KiB + 2 * KiB + 5);
    await disk.writeZeroes(MiB, 10 * KiB);
    model.fill(0, MiB, MiB + 10 * KiB);
    await randomDiskWrites(disk, model, 5, 30, 100 * KiB);
    await disk.close();
    checkWithQemu(top, model);
    // The 2 KiB subcluster written and nothing else of its cluster is decided by the overlay (qemu-img map says so).
    const first = qemuMap(top).filter((e) => e.offset < 128 * KiB && e.offset + e.length > 64 * KiB);
    expect(first.find((e) => e.depth === 0 && e.offset <= 66 * KiB && e.offset + e.length >= 68 * KiB)).toBeDefined();
    expect(first.find((e) => e.depth === 1 && e.offset <= 64 * KiB)).toBeDefined();
  });

  test('extended L2 with a snapshot and compressed clusters: copied on write, the snapshot keeps its content', async () => {
    const raw = p('xc.raw');
    const text = Buffer.from('compressible words '.repeat(300000)).subarray(0, 4 * MiB);
    fill(MiB, 9).copy(text, MiB);
    writeFileSync(raw, text);
    const img = p('xc.qcow2');
    run('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'extended_l2=on', raw, img]);
    run('qemu-img', ['snapshot', '-c', 's1', img]);
    const model = qemuRaw(img);
    const disk = await openDisk(img, { writable: true });
    await randomDiskWrites(disk, model, 11, 40, 150 * KiB);
    await disk.writeZeroes(0, 64 * KiB);
    model.fill(0, 0, 64 * KiB);
    await disk.close();
    checkWithQemu(img, model);
    run('qemu-img', ['snapshot', '-a', 's1', img]);
    expect(qemuRaw(img).equals(text)).toBe(true);
  });

  test.each([
    ['a data file', 'data_file=dfa.data'],
    ['a raw data file (data_file_raw): the data file stays a raw image of the disk', 'data_file=dfb.data,data_file_raw=on'],
    ['a data file and extended L2', 'data_file=dfc.data,extended_l2=on'],
  ])('external data file: %s', async (name, options) => {
    const img = p(`${options.slice(10, 13)}.qcow2`);
    // qemu resolves a relative data file name against its working directory: create it from the image's folder.
    run('sh', ['-c', `cd "$1" && qemu-img create -q -f qcow2 -o "$2" "$3" 6M && qemu-io -f qcow2 -c 'write -q -P 0x41 0 1M' -c 'write -q -z 2M 1M' "$3"`, 'sh', tmp.dir, options, img]);
    const model = qemuRaw(img);
    for (const seed of [1, 2]) {
      const disk = await openDisk(img, { writable: true });
      await randomDiskWrites(disk, model, 40 + seed, 40, 200 * KiB);
      await disk.close();
      checkWithQemu(img, model);
    }
    const data = readFileSync(p(options.slice(10, 18)));
    if (options.includes('raw')) {
      expect(data.equals(model)).toBe(true);
      expect(info(img)['format-specific'].data['data-file-raw']).toBe(true);
    }
  });

  test('an overlay with a data file over a backing file: partial writes read the rest from the backing file', async () => {
    const base = p('db-base.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '4M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x51 0 4M', base]);
    const top = p('db-top.qcow2');
    run('sh', ['-c', 'cd "$1" && qemu-img create -q -f qcow2 -o data_file=db.data -b db-base.qcow2 -F qcow2 db-top.qcow2', 'sh', tmp.dir]);
    const model = qemuRaw(base);
    const disk = await openDisk(top, { writable: true });
    await randomDiskWrites(disk, model, 77, 30, 100 * KiB);
    await disk.close();
    checkWithQemu(top, model);
  });

  test('persistent bitmaps: enabled ones are marked in use before the first write, disabled ones kept; the image checks clean', async () => {
    const img = p('bm.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '4M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x61 0 1M', img]);
    run('qemu-img', ['bitmap', '--add', img, 'on']);
    run('qemu-img', ['bitmap', '--add', '--disable', img, 'off']);
    const model = qemuRaw(img);
    const disk = await openDisk(img, { writable: true });
    await randomDiskWrites(disk, model, 3, 20, 100 * KiB);
    await disk.close();
    checkWithQemu(img, model);
    const bitmaps = info(img)['format-specific'].data.bitmaps as Array<{ name: string; flags: string[] }>;
    expect(Object.fromEntries(bitmaps.map((b) => [b.name, b.flags.sort()]))).toEqual({ on: ['auto', 'in-use'], off: [] });
    expect(readFileSync(img).readBigUInt64BE(88) & 1n).toBe(1n);
  });

  test('dirty images (lazy refcounts, qemu-io killed; or our writer killed): the writable open rebuilds refcounts, then no leaks', async () => {
    const img = p('lazy.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', img, '3M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x10 0 1M', img]);
    const r = spawnSync('qemu-io', ['-f', 'qcow2', ...randomWrites(3 * MiB, 10, 10, 100 * KiB, 0), '-c', 'sigraise 9', img]);
    expect(r.signal).toBe('SIGKILL');
    expect(readFileSync(img).readBigUInt64BE(72) & 1n).toBe(1n);
    expect(runStatus('qemu-img', ['check', img]).status).toBe(2);
    const model = qemuRaw(img);
    const disk = await openDisk(img, { writable: true });
    expect(readFileSync(img).readBigUInt64BE(72) & 1n).toBe(0n);
    await randomDiskWrites(disk, model, 12, 20, 100 * KiB);
    // While we write the dirty bit is set; a clean close clears it.
    expect(readFileSync(img).readBigUInt64BE(72) & 1n).toBe(1n);
    await disk.close();
    expect(readFileSync(img).readBigUInt64BE(72) & 1n).toBe(0n);
    checkWithQemu(img, model);
  });
});

