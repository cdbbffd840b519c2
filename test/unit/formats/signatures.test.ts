import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import '../../../src/formats/index.js';
import { containerSignatureOf, SIGNATURE_HEAD_BYTES } from '../../../src/formats/signatures.js';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import { UnsupportedError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { HAVE_QEMU, haveTool, requireTool, run } from '../../helpers/tools.js';
import { haveRealImages, REAL_IMAGES } from '../../helpers/fixtures.js';

const head = (file: string) => {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(SIGNATURE_HEAD_BYTES);
  const n = fs.readSync(fd, b, 0, b.length, 0);
  fs.closeSync(fd);
  return b.subarray(0, n);
};

describe('container signatures', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);

  // Every container qemu-img can make without a secret, in every layout it writes.
  const qemuMade: Array<[string, string[], RegExp]> = [
    ['qcow2', ['-f', 'qcow2'], /^qcow2 image$/],
    ['qcow2v2', ['-f', 'qcow2', '-o', 'compat=0.10'], /^qcow2 image$/],
    ['qcow', ['-f', 'qcow'], /^qcow \(version 1\) image$/],
    ['qed', ['-f', 'qed'], /^QED image$/],
    ['vmdk', ['-f', 'vmdk'], /^VMDK sparse extent$/],
    ['vmdk-stream', ['-f', 'vmdk', '-o', 'subformat=streamOptimized'], /^VMDK sparse extent$/],
    ['vmdk-flat', ['-f', 'vmdk', '-o', 'subformat=monolithicFlat'], /^VMDK descriptor$/],
    ['vmdk-split', ['-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse'], /^VMDK descriptor$/],
    ['vdi', ['-f', 'vdi'], /^VirtualBox VDI image$/],
    ['vdi-static', ['-f', 'vdi', '-o', 'static=on'], /^VirtualBox VDI image$/],
    ['parallels', ['-f', 'parallels'], /^Parallels image$/],
    ['raw', ['-f', 'raw'], /^$/],
  ];
  it.each(qemuMade)('names a %s file made by qemu-img', (name, args, expected) => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const f = p(`${name}.img`);
    run('qemu-img', ['create', '-q', ...args, f, '1M']);
    expect(containerSignatureOf(head(f))?.name ?? '').toMatch(expected);
  });

  it('names compressed files and tar archives made by the system tools', () => {
    const src = p('payload.vhd');
    fs.writeFileSync(src, Buffer.alloc(4096, 7));
    const tools: Array<[string, string[], string, string]> = [
      ['gzip', ['-kf', src], `${src}.gz`, 'gzip-compressed file'],
      ['xz', ['-kf', src], `${src}.xz`, 'xz-compressed file'],
      ['zstd', ['-qf', src, '-o', `${src}.zst`], `${src}.zst`, 'zstd-compressed file'],
      ['bzip2', ['-kf', src], `${src}.bz2`, 'bzip2-compressed file'],
      ['tar', ['-cf', p('disk.ova'), '-C', tmp.dir, 'payload.vhd'], p('disk.ova'), 'tar archive (an OVA?)'],
    ];
    let tried = 0;
    for (const [tool, args, out, name] of tools) {
      if (!haveTool(tool)) continue;
      run(tool, args);
      expect(containerSignatureOf(head(out))?.name).toBe(name);
      tried++;
    }
    expect(tried).toBeGreaterThanOrEqual(3);
  });

  it('names a LUKS header (LUKS1 and LUKS2 share the magic and version field position)', () => {
    for (const version of [1, 2]) {
      const h = Buffer.alloc(1024);
      Buffer.from('LUKS\xba\xbe', 'latin1').copy(h, 0);
      h.writeUInt16BE(version, 6);
      expect(containerSignatureOf(h)?.name).toBe('LUKS encrypted volume');
    }
  });

  it('does not claim random first sectors, nor images we write', async () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1024 }), (bytes) => {
        // A raw disk's first bytes are boot code, a partition table, a file system or zeros: arbitrary bytes stand in.
        const b = Buffer.from(bytes);
        const claimed = containerSignatureOf(b);
        if (claimed) expect(claimed.matches(b)).toBe(true);
        return claimed === null;
      }),
      { numRuns: 2000 },
    );
    expect(containerSignatureOf(Buffer.alloc(1024))).toBeNull();
    for (const format of ['vhd', 'vhdx', 'raw'] as const) {
      const f = p(`ours.${format}`);
      const d = await createDisk(f, { format, type: 'fixed', virtualSize: 1 << 20 });
      await d.close();
      expect(containerSignatureOf(head(f))).toBeNull();
    }
  });

  it("a container's trailing VHD footer does not make it a VHD (a fixed VHD that qemu took for raw, stored in a qcow2)", async () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    // 1 MiB - 512 of data + the footer: the qcow2's last 64 KiB cluster ends with the VHD footer, so its file does too.
    const vhd = p('nested.vhd');
    const d = await createDisk(vhd, { format: 'vhd', type: 'fixed', virtualSize: (1 << 20) - 512 });
    await d.write(0, Buffer.alloc(65536, 7));
    await d.close();
    const qcow = p('nested.qcow2');
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', vhd, qcow]);
    expect(head(qcow).toString('latin1', 0, 4)).toBe('QFI\xfb');
    const size = fs.statSync(qcow).size;
    const fd = fs.openSync(qcow, 'r');
    const tail = Buffer.alloc(8);
    fs.readSync(fd, tail, 0, 8, size - 512);
    fs.closeSync(fd);
    expect(tail.toString('latin1')).toBe('conectix');
    // The QCOW2 driver takes it (probes run before any footer search) and reads the VHD's bytes as its content.
    const disk = await openDisk(qcow);
    try {
      expect(disk.format).toBe('qcow2');
      expect((await disk.read(0, 65536)).equals(Buffer.alloc(65536, 7))).toBe(true);
    } finally {
      await disk.close();
    }
  });

  it('refuses a gzipped VHD fixture by name, and reads it once unpacked', async () => {
    if (!haveRealImages()) return;
    const gz = path.join(REAL_IMAGES, 'dynamic.vhd.gz');
    await expect(openDisk(gz)).rejects.toThrow(UnsupportedError);
    await expect(openDisk(gz)).rejects.toThrow(/gzip-compressed file.*decompress it first/);
    const raw = await openDisk(gz, { format: 'raw' });
    expect(raw.virtualSize).toBe(fs.statSync(gz).size);
    await raw.close();
  });
});
