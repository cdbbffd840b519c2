/**
 * Metafiles describe virtual content: the same content as raw, VHD and VHDX (made by qemu-img, which nobody here
 * wrote) must give the same list, and real Windows/Hyper-V images must match qemu's raw view of them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { localStore } from '../../../src/io/local.js';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import { createMetafile } from '../../../src/meta/create.js';
import { readMetafile, metafileLocationFor, type Metafile } from '../../../src/meta/metafile.js';
import { compareMetafiles } from '../../../src/meta/compare.js';
import { HAVE_QEMU, PYTHON_VHDI, pyvhdiRead, requireTool, run } from '../../helpers/tools.js';
import { haveRealImages, unpackFixture } from '../../helpers/fixtures.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;

async function metaOf(image: string, opts: Parameters<typeof createMetafile>[1] = {}): Promise<Metafile> {
  const disk = await openDisk(image);
  try {
    await createMetafile(disk, opts);
  } finally {
    await disk.close();
  }
  return readMetafile(metafileLocationFor({ store: localStore, path: image }));
}

async function changed(a: string, b: string, opts: Parameters<typeof createMetafile>[1] = {}): Promise<number[]> {
  const [ma, mb] = [await metaOf(a, opts), await metaOf(b, opts)];
  try {
    const c = await compareMetafiles(ma, mb);
    return c.changed.flatMap((r) => Array.from({ length: r.count }, (_, i) => r.first + i));
  } finally {
    await ma.close();
    await mb.close();
  }
}

const qemu = requireTool(HAVE_QEMU, 'qemu-img');
(qemu ? describe : describe.skip)('same content as raw, VHD and VHDX gives the same list (qemu-made images)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  const p = (n: string) => path.join(tmp.dir, n);
  beforeAll(() => {
    tmp = makeTempDir();
    // 24 MiB: data in blocks 0, 2 (partly), 5 and the last sector; an explicit zero write over block 7.
    run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=dynamic,block_size=1M', p('src.vhdx'), '24M']);
    run('qemu-io', ['-f', 'vhdx', '-c', 'write -q -P 0xa5 0 2M', '-c', `write -q -P 0x5a ${4 * MiB + 4096} 65536`, '-c', `write -q -P 0x3c ${10 * MiB} 2M`, '-c', `write -q -z ${14 * MiB} 2M`, '-c', `write -q -P 0xee ${24 * MiB - 512} 512`, p('src.vhdx')]);
    run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', p('src.vhdx'), p('same.raw')]);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', p('same.raw'), p('same.vhd')]);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', p('same.raw'), p('fixed.vhd')]);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=8M', p('same.raw'), p('same.vhdx')]);
  });
  afterAll(() => tmp.cleanup());

  it.each(['src.vhdx', 'same.vhd', 'fixed.vhd', 'same.vhdx'])('raw vs %s: 0 changed blocks (xxh128, 2 MiB)', async (other) => {
    expect(await changed(p('same.raw'), p(other))).toEqual([]);
  });

  it('holds at other block sizes and with sha256', async () => {
    expect(await changed(p('same.raw'), p('same.vhd'), { blockSize: 64 * 1024, algorithm: 'sha256' })).toEqual([]);
    expect(await changed(p('same.raw'), p('src.vhdx'), { blockSize: 16 * MiB })).toEqual([]);
  });

  it('finds exactly the blocks qemu-io changed in a VHDX', async () => {
    fs.copyFileSync(p('same.vhdx'), p('mod.vhdx'));
    // Blocks (2 MiB) 1, 6 and 11 change; block 7 is rewritten with the zeros it already holds (no change).
    run('qemu-io', ['-f', 'vhdx', '-c', `write -q -P 0x11 ${2 * MiB + 100 * 512} 512`, '-c', `write -q -P 0x22 ${12 * MiB} 1M`, '-c', `write -q -z ${14 * MiB} 1M`, '-c', `write -q -P 0x33 ${23 * MiB} 4096`, p('mod.vhdx')]);
    expect(await changed(p('same.raw'), p('mod.vhdx'))).toEqual([1, 6, 11]);
  });

  it('lists a differencing VHDX as its merged content (libvhdi as the oracle)', async () => {
    if (!requireTool(Boolean(PYTHON_VHDI), 'pyvhdi')) return;
    // qemu cannot write differencing VHDX, so the child is ours and libvhdi says what it holds.
    const parent = await openDisk(p('same.vhdx'));
    const child = await createDisk(p('child.vhdx'), { format: 'vhdx', type: 'differencing', parent });
    await child.write(8 * MiB, Buffer.alloc(512, 0x44));
    await child.close();
    fs.writeFileSync(p('child-oracle.raw'), pyvhdiRead(p('child.vhdx'), p('same.vhdx')));
    expect(await changed(p('child-oracle.raw'), p('child.vhdx'))).toEqual([]);
    expect(await changed(p('same.raw'), p('child.vhdx'))).toEqual([4]);
  });
});

const real = haveRealImages();
(real ? describe : describe.skip)('real Windows / Hyper-V images match qemu\'s raw view', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it.each(['dynamic.vhdx.gz', 'fixed.vhdx.gz', 'dynamic.vhd.gz', 'ext2.vhd.gz'])('%s', async (name) => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const img = await unpackFixture(name, tmp.dir);
    const raw = path.join(tmp.dir, `${name}.raw`);
    run('qemu-img', ['convert', '-f', img.endsWith('.vhdx') ? 'vhdx' : 'vpc', '-O', 'raw', img, raw]);
    expect(await changed(raw, img, { blockSize: 1 * MiB })).toEqual([]);
  });
});
