/** VHDX against qemu-img/qemu-io and libvhdi: images they make read by us, images we make read by them. */
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { openDisk, createDisk } from '../../src/formats/index.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, haveTool, pyvhdiRead, requireTool, run, runStatus } from '../helpers/tools.js';
import { readAll } from '../unit/vhdx/helpers.js';

const MiB = 1 << 20;
const ok = requireTool(HAVE_QEMU, 'qemu-img') && requireTool(Boolean(PYTHON_VHDI), 'pyvhdi') && requireTool(haveTool('vhdiinfo'), 'vhdiinfo');
const d = ok ? describe : describe.skip;

/** A deterministic pseudo-random generator, so a failure is reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function fill(len: number, seed: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(len + 3);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((r() * 2 ** 32) >>> 0, i);
  return b.subarray(0, len);
}

d('VHDX and qemu / libvhdi', () => {
  const tmp = makeTempDir('vhdx-qemu-');
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);
  const qemuRaw = (img: string) => {
    run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', img, img + '.raw']);
    return readFileSync(img + '.raw');
  };

  // qemu's default block_state_zero=on leaves every unwritten block in the ZERO state; off leaves them NOT_PRESENT.
  test.each([
    ['1M', 64, 'off'],
    ['8M', 64, 'on'],
    ['32M', 192, 'on'],
  ])('qemu dynamic VHDX, block_size %s, %i MiB, block_state_zero=%s, reads as qemu reads it', async (bs, sizeMiB, zeroState) => {
    const img = p(`q-${bs}.vhdx`);
    run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', `subformat=dynamic,block_size=${bs},block_state_zero=${zeroState}`, img, `${sizeMiB}M`]);
    const blk = parseInt(bs) * MiB;
    run('qemu-io', ['-f', 'vhdx',
      '-c', 'write -q -P 0xa5 0 4096',
      '-c', 'write -q -P 0x5a 1048064 1024',
      '-c', `write -q -P 0x3c ${blk} ${2 * blk}`,
      '-c', `write -q -z ${blk} ${blk}`,
      '-c', `write -q -z ${3 * blk} ${blk}`,
      '-c', `write -q -P 0xee ${sizeMiB * MiB - 512} 512`, img]);
    const expected = qemuRaw(img);
    const disk = await openDisk(img);
    try {
      expect(disk.type).toBe('dynamic');
      expect(disk.blockSize).toBe(blk);
      expect((await readAll(disk)).equals(expected)).toBe(true);
      const st = await disk.status(0, disk.virtualSize);
      const at = (o: number) => st.find((e) => e.offset <= o && e.offset + e.length > o)?.state;
      expect(at(0)).toBe('data');
      expect(at(2 * blk)).toBe('data');
      expect(at(4 * blk)).toBe(zeroState === 'on' ? 'zero' : 'unallocated');
    } finally {
      await disk.close();
    }
  });

  test('qemu fixed VHDX (block_state_zero=off) reads as qemu reads it', async () => {
    const img = p('q-fixed.vhdx');
    run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_state_zero=off,block_size=2M', img, '20M']);
    run('qemu-io', ['-f', 'vhdx', '-c', 'write -q -P 0x11 0 1M', '-c', 'write -q -P 0x22 5M 3M', '-c', 'write -q -P 0x33 20479k 1k', img]);
    const disk = await openDisk(img);
    try {
      expect(disk.type).toBe('fixed');
      expect((await readAll(disk)).equals(qemuRaw(img))).toBe(true);
      expect(await disk.status(0, disk.virtualSize)).toEqual([{ offset: 0, length: 20 * MiB, state: 'data', depth: 0 }]);
    } finally {
      await disk.close();
    }
  });

  /** Applies the same writes to a disk and to an expected raw buffer. */
  async function randomWrites(disk: import('../../src/formats/disk.js').Disk, expected: Buffer, seed: number, count: number): Promise<void> {
    const r = rng(seed);
    for (let i = 0; i < count; i++) {
      const len = 1 + Math.floor(r() * (r() < 0.3 ? 3 * MiB : 20000));
      const off = Math.floor(r() * (expected.length - len));
      const data = fill(len, seed * 1000 + i);
      if (r() < 0.15) {
        await disk.writeZeroes(off, len);
        expected.fill(0, off, off + len);
      } else {
        await disk.write(off, data);
        data.copy(expected, off);
      }
    }
  }

  /** Checks an image we wrote with every independent reader. */
  async function checkOurs(img: string, expected: Buffer, subformat: string, qemuToo = true): Promise<void> {
    const raw = img + '.expected.raw';
    writeFileSync(raw, expected);
    if (!qemuToo) {
      // qemu 7.2 does not open VHDX with 4096-byte logical sectors ("Operation not supported").
      expect(runStatus('qemu-img', ['info', '-f', 'vhdx', img]).stderr).toMatch(/Operation not supported/);
    }
    if (qemuToo) {
      const check = runStatus('qemu-img', ['check', '-f', 'vhdx', img]);
      expect(check.stderr + check.stdout).toMatch(/No errors were found/);
      expect(check.status).toBe(0);
      expect(runStatus('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', img, raw]).status).toBe(0);
    }
    expect(pyvhdiRead(img).equals(expected)).toBe(true);
    const disk = await openDisk(img);
    const info = await disk.info();
    await disk.close();
    const vi = run('vhdiinfo', [img]).toString();
    expect(vi.toLowerCase()).toContain(String(info.dataWriteGuid));
    expect(vi).toMatch(new RegExp(`Disk type\\s*:\\s*${subformat}`, 'i'));
  }

  test.each([
    ['dynamic', 512, 1 * MiB],
    ['dynamic', 4096, 8 * MiB],
    ['fixed', 512, 2 * MiB],
    ['fixed', 4096, 1 * MiB],
  ] as const)('%s VHDX we write (%d-byte sectors, %d-byte blocks) passes qemu-img check and reads back in qemu and libvhdi', async (type, lss, blockSize) => {
    const img = p(`ours-${type}-${lss}-${blockSize}.vhdx`);
    const size = 40 * MiB + 3 * lss;
    const expected = Buffer.alloc(size);
    const disk = await createDisk(img, { format: 'vhdx', type, virtualSize: size, logicalSectorSize: lss, blockSize });
    await randomWrites(disk, expected, lss + blockSize, 60);
    await disk.close();
    await checkOurs(img, expected, type === 'fixed' ? 'Fixed' : 'Dynamic', lss === 512);
    // Reopen, write more (a new session: new FileWriteGuid and DataWriteGuid, a new log), check again.
    const again = await openDisk(img, { writable: true });
    const before = (await again.identity()).contentId;
    await randomWrites(again, expected, 7 + lss, 20);
    const after = (await again.identity()).contentId;
    expect(after).not.toBe(before);
    await again.close();
    await checkOurs(img, expected, type === 'fixed' ? 'Fixed' : 'Dynamic', lss === 512);
  });

  test('256 MiB blocks, the largest legal size: ours read by qemu, qemu-made read by us', async () => {
    const size = 600 * MiB;
    const ours = p('ours-256m.vhdx');
    const raw = p('ours-256m.raw');
    const disk = await createDisk(ours, { format: 'vhdx', type: 'dynamic', virtualSize: size, blockSize: 256 * MiB });
    const pieces: Array<[number, Buffer]> = [[5, fill(70000, 1)], [256 * MiB - 300, fill(1000, 2)], [590 * MiB, fill(MiB, 3)]];
    for (const [off, b] of pieces) await disk.write(off, b);
    await disk.close();
    // The expected image as a sparse raw file, so nothing 600 MiB large is held in memory.
    writeFileSync(raw, Buffer.alloc(0));
    truncateSync(raw, size);
    const fd = openSync(raw, 'r+');
    for (const [off, b] of pieces) writeSync(fd, b, 0, b.length, off);
    closeSync(fd);
    expect(runStatus('qemu-img', ['check', '-q', '-f', 'vhdx', ours]).status).toBe(0);
    expect(runStatus('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', ours, raw]).status).toBe(0);
    const theirs = p('q-256m.vhdx');
    run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=dynamic,block_size=256M', theirs, `${size}`]);
    run('qemu-io', ['-f', 'vhdx', ...pieces.flatMap(([off, b], i) => ['-c', `write -q -P ${0x41 + i} ${off} ${b.length}`]), theirs]);
    const q = await openDisk(theirs);
    try {
      expect(q.blockSize).toBe(256 * MiB);
      for (const [off, b] of pieces.map(([o, b], i) => [o, Buffer.alloc(b.length, 0x41 + i)] as const)) {
        expect((await q.read(off, b.length)).equals(b)).toBe(true);
      }
      expect((await q.read(300 * MiB, MiB)).equals(Buffer.alloc(MiB))).toBe(true);
    } finally {
      await q.close();
    }
  });

  test('default dynamic VHDX: 32 MiB blocks, reads back in qemu', async () => {
    const img = p('ours-default.vhdx');
    const disk = await createDisk(img, { format: 'vhdx', type: 'dynamic', virtualSize: 100 * MiB });
    expect(disk.blockSize).toBe(32 * MiB);
    const expected = Buffer.alloc(100 * MiB);
    await randomWrites(disk, expected, 99, 10);
    await disk.close();
    await checkOurs(img, expected, 'Dynamic');
  });

  test('qemu writes into a VHDX we made (through its own log), and we read what qemu reads', async () => {
    const img = p('ours-then-qemu.vhdx');
    const disk = await createDisk(img, { format: 'vhdx', type: 'dynamic', virtualSize: 32 * MiB, blockSize: MiB });
    await disk.write(3 * MiB, fill(MiB, 4));
    await disk.close();
    run('qemu-io', ['-f', 'vhdx', '-c', 'write -q -P 0x61 0 5000', '-c', 'write -q -P 0x62 3M 4096', '-c', 'write -q -P 0x63 20M 3M', img]);
    const expected = qemuRaw(img);
    const again = await openDisk(img, { writable: true });
    try {
      expect((await readAll(again)).equals(expected)).toBe(true);
      // And our next session on qemu's file is still clean for qemu.
      await again.write(21 * MiB + 100, fill(10000, 5));
      fill(10000, 5).copy(expected, 21 * MiB + 100);
    } finally {
      await again.close();
    }
    await checkOurs(img, expected, 'Dynamic');
  });

  test('differencing VHDX we write: qemu refuses it, libvhdi reads it on its parent', async () => {
    const parentPath = p('base.vhdx');
    const size = 24 * MiB;
    const expected = Buffer.alloc(size);
    const parent = await createDisk(parentPath, { format: 'vhdx', type: 'dynamic', virtualSize: size, blockSize: 1 * MiB });
    await randomWrites(parent, expected, 5, 30);
    await parent.write(8 * MiB, fill(4 * MiB, 3));
    fill(4 * MiB, 3).copy(expected, 8 * MiB);
    await parent.close();
    const childPath = p('child.avhdx');
    const child = await createDisk(childPath, { format: 'vhdx', type: 'differencing', parent: await openDisk(parentPath) });
    expect(child.blockSize).toBe(2 * MiB);
    // Whole blocks (FULLY_PRESENT), partial blocks (sector bitmaps), sub-sector writes (read-modify-write through the chain).
    await child.write(4 * MiB, fill(2 * MiB, 1));
    fill(2 * MiB, 1).copy(expected, 4 * MiB);
    // Whole blocks zeroed over parent data must read as zeros in libvhdi too.
    await child.writeZeroes(8 * MiB, 4 * MiB);
    expected.fill(0, 8 * MiB, 12 * MiB);
    await randomWrites(child, expected, 6, 40);
    await child.close();
    const q = runStatus('qemu-img', ['info', '-f', 'vhdx', childPath]);
    expect(q.status).not.toBe(0);
    expect(q.stderr).toMatch(/Operation not supported/);
    expect(pyvhdiRead(childPath, parentPath).equals(expected)).toBe(true);
    const reopened = await openDisk(childPath);
    try {
      expect((await readAll(reopened)).equals(expected)).toBe(true);
      const info = await reopened.info();
      expect((info.parentLocator as Record<string, string>).relative_path).toBe('.\\base.vhdx');
    } finally {
      await reopened.close();
    }
    const vi = run('vhdiinfo', [childPath]).toString();
    expect(vi).toMatch(/Disk type\s*:\s*Differential/i);
    const parentDisk = await openDisk(parentPath);
    expect(vi).toContain(`Parent identifier\t: ${(await parentDisk.identity()).contentId}`);
    await parentDisk.close();
  });
});
