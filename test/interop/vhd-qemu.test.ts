/**
 * VHD against qemu-img/qemu-io (`-f vpc`) and libvhdi (pyvhdi, vhdiinfo): images they make read by us,
 * images we make read by them. qemu ignores a VHD's parent, so differencing images are checked with
 * pyvhdi only; libvhdi mis-decodes partial sector bitmaps, so those tests write whole 4 KiB-aligned runs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { createDisk, openDisk, type Disk } from '../../src/formats/index.js';
import { parseLocation } from '../../src/io/location.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, haveTool, pyvhdiRead, requireTool, run, runStatus } from '../helpers/tools.js';
import { pattern } from '../unit/vhd/vhd-test-utils.js';

const MiB = 1 << 20;
const ok = requireTool(HAVE_QEMU, 'qemu-img') && requireTool(Boolean(PYTHON_VHDI), 'pyvhdi') && requireTool(haveTool('vhdiinfo'), 'vhdiinfo');
const d = ok ? describe : describe.skip;
/** 301 cylinders x 4 heads x 17 sectors: a size qemu reads exactly even from CHS. */
const CHS_EXACT = 301 * 4 * 17 * 512;

async function readAll(disk: Disk): Promise<Buffer> {
  return disk.read(0, disk.virtualSize);
}

d('VHD and qemu / libvhdi', () => {
  const tmp = makeTempDir('vhd-qemu-');
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);
  const qemuRaw = (img: string) => {
    run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, img + '.raw']);
    return readFileSync(img + '.raw');
  };

  test.each([
    ['dynamic', false],
    ['dynamic', true],
    ['fixed', false],
    ['fixed', true],
  ])('qemu %s VHD (force_size=%s) reads as qemu reads it', async (subformat, force) => {
    const img = p(`q-${subformat}-${force}.vhd`);
    const opts = `subformat=${subformat}${force ? ',force_size=on' : ''}`;
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', opts, img, '24M']);
    run('qemu-io', ['-f', 'vpc',
      '-c', 'write -q -P 0xa5 0 4096',
      '-c', 'write -q -P 0x5a 1048064 1024',
      '-c', `write -q -P 0x3c ${4 * MiB - 512} ${2 * MiB + 1024}`,
      '-c', `write -q -z ${4 * MiB + 4096} 65536`,
      '-c', `write -q -P 0x11 ${12 * MiB} ${MiB}`,
      '-c', `write -q -P 0xee ${24 * MiB - 512} 512`, img]);
    const expected = qemuRaw(img);
    const disk = await openDisk(img);
    try {
      expect(disk.format).toBe('vhd');
      expect(disk.type).toBe(subformat);
      expect(disk.virtualSize).toBe(expected.length);
      if (force) expect(disk.virtualSize).toBe(24 * MiB);
      expect((await readAll(disk)).equals(expected)).toBe(true);
      const st = await disk.status(0, disk.virtualSize);
      for (const e of st) {
        if (e.state !== 'data') expect(expected.subarray(e.offset, e.offset + e.length).every((x) => x === 0)).toBe(true);
      }
      if (subformat === 'dynamic') {
        // qemu allocated blocks 0-3, 6 and 11 (2 MiB blocks): the rest is known unallocated without reading.
        expect(st.filter((e) => e.state === 'data').map((e) => [e.offset / MiB, e.length / MiB])).toEqual([[0, 8], [12, 2], [22, 2]]);
      }
    } finally {
      await disk.close();
    }
  });

  /** Writes the same things into our image and into a model; returns the model. */
  async function fillOurs(disk: Disk): Promise<Buffer> {
    const model = Buffer.alloc(disk.virtualSize);
    const w = async (off: number, data: Buffer) => {
      await disk.write(off, data);
      data.copy(model, off);
    };
    await w(0, Buffer.alloc(4096, 0xa5));
    await w(1048064, Buffer.alloc(1024, 0x5a));
    await w(3 * MiB - 700, pattern(2 * MiB + 1500, 1));
    await w(disk.virtualSize - 512, Buffer.alloc(512, 0xee));
    await disk.writeZeroes(3 * MiB, 8192);
    model.fill(0, 3 * MiB, 3 * MiB + 8192);
    return model;
  }

  test.each([
    ['fixed', CHS_EXACT],
    ['dynamic', CHS_EXACT],
  ])('our %s VHD reads the same in qemu and libvhdi', async (type, size) => {
    const img = p(`ours-${type}.vhd`);
    const disk = await createDisk(await parseLocation(img), { format: 'vhd', type: type as 'fixed' | 'dynamic', virtualSize: size });
    const model = await fillOurs(disk);
    await disk.close();
    writeFileSync(p('expected.raw'), model);
    const cmp = runStatus('qemu-img', ['compare', '-q', '-f', 'vpc', '-F', 'raw', img, p('expected.raw')]);
    expect(cmp).toMatchObject({ status: 0, stderr: '' });
    expect(runStatus('qemu-io', ['-r', '-f', 'vpc', '-c', `read -q -P 0x5a 1048064 1024`, '-c', `read -q -P 0xee ${size - 512} 512`, img]).status).toBe(0);
    expect(pyvhdiRead(img).equals(model)).toBe(true);
    const info = run('vhdiinfo', [img]).toString();
    expect(info).toMatch(new RegExp(`Media size.*\\(${size} bytes\\)`));
    const again = await openDisk(img);
    expect(info).toContain(`Identifier\t\t: ${(await again.identity()).contentId}`);
    await again.close();
  });

  test('our dynamic VHD of a size CHS cannot describe: exact for libvhdi and for qemu, whose default reads current_size', async () => {
    const img = p('ours-24M.vhd');
    const disk = await createDisk(await parseLocation(img), { format: 'vhd', type: 'dynamic', virtualSize: 24 * MiB, blockSize: MiB });
    const model = await fillOurs(disk);
    await disk.close();
    writeFileSync(p('expected24.raw'), model);
    const cmp = runStatus('qemu-img', ['compare', '-q', '-f', 'vpc', '-F', 'raw', img, p('expected24.raw')]);
    expect(cmp).toMatchObject({ status: 0, stderr: '' });
    expect(pyvhdiRead(img).equals(model)).toBe(true);
    // The CHS geometry alone would give 722*4*17 sectors, a little less: qemu must be reading current_size.
    const qinfo = JSON.parse(run('qemu-img', ['info', '--output=json', '-f', 'vpc', img]).toString());
    expect(qinfo['virtual-size']).toBe(24 * MiB);
    expect(24 * MiB).toBeGreaterThan(722 * 4 * 17 * 512);
  });

  test('our differencing VHD on our dynamic parent and on a qemu-made parent reads the same in libvhdi', async () => {
    for (const parentMaker of ['ours', 'qemu'] as const) {
      const parentPath = p(`parent-${parentMaker}.vhd`);
      let parentModel: Buffer;
      if (parentMaker === 'qemu') {
        run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', parentPath, '8M']);
        run('qemu-io', ['-f', 'vpc', '-c', 'write -q -P 0x61 0 3M', '-c', 'write -q -P 0x62 6M 1M', parentPath]);
        parentModel = qemuRaw(parentPath);
      } else {
        const par = await createDisk(await parseLocation(parentPath), { format: 'vhd', type: 'dynamic', virtualSize: 8 * MiB });
        await par.write(0, pattern(3 * MiB, 7));
        await par.write(6 * MiB, pattern(MiB, 8));
        parentModel = await readAll(par);
        await par.close();
      }
      const childPath = p(`child-of-${parentMaker}.vhd`);
      const parent = await openDisk(parentPath);
      const child = await createDisk(await parseLocation(childPath), { format: 'vhd', type: 'differencing', parent });
      const model = Buffer.from(parentModel);
      for (const [off, len, seed] of [[4096, 8192, 1], [2 * MiB - 4096, 12288, 2], [5 * MiB, MiB, 3], [8 * MiB - 4096, 4096, 4]]) {
        await child.write(off, pattern(len, seed));
        pattern(len, seed).copy(model, off);
      }
      await child.writeZeroes(6 * MiB + 65536, 65536);
      model.fill(0, 6 * MiB + 65536, 6 * MiB + 131072);
      expect((await readAll(child)).equals(model)).toBe(true);
      await child.close();
      expect(pyvhdiRead(childPath, parentPath).equals(model)).toBe(true);
      const info = run('vhdiinfo', [childPath]).toString();
      const parentId = (await parent.identity()).contentId;
      expect(info).toContain('Disk type\t\t: Differential');
      expect(info).toContain(`Parent identifier\t: ${parentId}`);
      expect(info).toContain(`Parent filename\t\t: parent-${parentMaker}.vhd`);
      const reopened = await openDisk(childPath);
      expect((await readAll(reopened)).equals(model)).toBe(true);
      await reopened.close();
    }
  });
});
