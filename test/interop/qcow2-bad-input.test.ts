/**
 * Broken and unsupported QCOW2 images (made by qemu-img, then one field patched): every one is refused by
 * `vhdsync convert` with one line naming what is wrong, exit 1, no stack trace, no hang.
 */
import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run } from '../helpers/tools.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;

/** Field offsets of the header (qcow2.rst). */
const F = { version: 4, backingOffset: 8, clusterBits: 20, size: 24, crypt: 32, l1Size: 36, l1Offset: 40, rtOffset: 48, nbSnapshots: 60, snapOffset: 64, incompat: 72, headerLength: 100 };

d('QCOW2 bad input: one line, exit 1', () => {
  const tmp = makeTempDir('qcow2-bad-');
  afterAll(() => tmp.cleanup());
  const p = (n: string) => path.join(tmp.dir, n);
  const good = p('good.qcow2');
  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', good, '4M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x11 0 192k', '-c', 'write -q -P 0x22 3M 64k', good]);
  });

  /** A copy of the good image with `patch` applied to its bytes. */
  function patched(name: string, patch: (b: Buffer) => void): string {
    const b = readFileSync(good);
    patch(b);
    writeFileSync(p(name), b);
    return p(name);
  }
  const l1 = (b: Buffer) => Number(b.readBigUInt64BE(F.l1Offset));
  const l2 = (b: Buffer) => Number(b.readBigUInt64BE(l1(b)) & 0x00fffffffffffe00n);
  const convert = (img: string) => cli(['convert', img, `${img}.out.raw`]);

  test.each<[string, (b: Buffer) => void, RegExp]>([
    ['unpatched copy (harness check)', () => {}, /^$/],
    ['version 4', (b) => b.writeUInt32BE(4, F.version), /QCOW2 version 4 is not supported/],
    ['cluster_bits 30', (b) => b.writeUInt32BE(30, F.clusterBits), /cluster_bits is 30, outside 9\.\.21/],
    ['cluster_bits 8', (b) => b.writeUInt32BE(8, F.clusterBits), /cluster_bits is 8/],
    ['absurd virtual size', (b) => b.writeBigUInt64BE(1n << 60n, F.size), /header field size is 1152921504606846976, larger than any image/],
    ['virtual size past what the L1 limit addresses', (b) => b.writeBigUInt64BE(1n << 52n, F.size), /header field size is 4503599627370496, more than a 65536-byte-cluster image can address/],
    ['l1_size over the limit', (b) => b.writeUInt32BE(0x10000000, F.l1Size), /l1_size is 268435456 entries, more than qemu's limit/],
    ['l1_size too small for the size', (b) => b.writeBigUInt64BE(1n << 40n, F.size), /l1_size is 1, too small/],
    ['L1 offset past EOF', (b) => b.writeBigUInt64BE(1n << 40n, F.l1Offset), /l1_table_offset places the L1 table at 1099511627776\+8, past the end/],
    ['L1 offset unaligned', (b) => b.writeBigUInt64BE(BigInt(l1(b) + 512), F.l1Offset), /l1_table_offset \d+ is not a cluster-aligned/],
    ['refcount table offset past EOF', (b) => b.writeBigUInt64BE(1n << 30n, F.rtOffset), /refcount_table_offset places the refcount table at 1073741824/],
    ['unknown incompatible bit', (b) => b.writeBigUInt64BE(1n << 20n, F.incompat), /incompatible_features has unknown bits 0x100000/],
    ['encryption', (b) => b.writeUInt32BE(1, F.crypt), /crypt_method is 1 \(AES\)/],
    ['header_length not a multiple of 8', (b) => b.writeUInt32BE(105, F.headerLength), /header_length is 105/],
    ['L1 entry with reserved bits', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(l1(b)) | 2n, l1(b)), /L1 table entry 0 has reserved bits set/],
    ['L1 entry pointing past EOF', (b) => b.writeBigUInt64BE(1n << 40n, l1(b)), /L1 table entry 0 points at an L2 table at 1099511627776, past the end/],
    ['L2 entry with reserved bits', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(l2(b)) | (1n << 57n), l2(b)), /L2 entry of guest offset 0 has reserved bits set/],
    ['L2 entry with an unaligned data offset', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(l2(b) + 8) + 512n, l2(b) + 8), /L2 entry of guest offset 65536 points at \d+, not cluster aligned/],
    ['L2 entry pointing past EOF', (b) => b.writeBigUInt64BE((1n << 63n) | (1n << 40n), l2(b) + 16), /guest offset 131072 maps to 1099511627776\+65536, past the end of the file/],
    ['snapshot table overlapping the L1 table', (b) => {
      b.writeUInt32BE(1, F.nbSnapshots);
      b.writeBigUInt64BE(BigInt(l1(b)), F.snapOffset);
    }, /overlaps|snapshot table entry 0 runs past/],
    ['snapshot count over the limit', (b) => {
      b.writeUInt32BE(70000, F.nbSnapshots);
      b.writeBigUInt64BE(BigInt(l1(b)), F.snapOffset);
    }, /nb_snapshots is 70000/],
  ])('%s', (name, patch, pattern) => {
    const img = patched(`${name.replace(/\W+/g, '-')}.qcow2`, patch);
    if (pattern.source === '^$') {
      // Sanity check of the harness: the unpatched copy converts, byte for byte as qemu reads it.
      expect(convert(img).status).toBe(0);
      run('qemu-img', ['convert', '-O', 'raw', img, `${img}.qemu.raw`]);
      expect(readFileSync(`${img}.out.raw`).equals(readFileSync(`${img}.qemu.raw`))).toBe(true);
      return;
    }
    expectOneLineError(convert(img), 1, pattern);
  });

  test('truncated files: inside the header, inside the L1 table, inside the data', () => {
    const size = readFileSync(good).length;
    const cases: Array<[number, RegExp]> = [
      [50, /shorter than a QCOW2 header/],
      [3 * 65536 + 4, /L1 table at 196608\+8, past the end/],
      [size - 65536 - 100, /past the end of the file/],
    ];
    for (const [len, pattern] of cases) {
      const img = p(`trunc-${len}.qcow2`);
      copyFileSync(good, img);
      truncateSync(img, len);
      expectOneLineError(convert(img), 1, pattern);
    }
  });

  test('backing loops, json: and protocol names, unknown backing formats, missing backing files', () => {
    const a = p('loop-a.qcow2');
    const b = p('loop-b.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', a, '1M']);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'loop-a.qcow2', '-F', 'qcow2', b]);
    run('qemu-img', ['rebase', '-u', '-b', 'loop-b.qcow2', '-F', 'qcow2', a]);
    expectOneLineError(convert(b), 1, /parent chain loops back/);
    const mk = (name: string, backing: string, fmt = 'qcow2') => {
      const img = p(name);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']);
      run('qemu-img', ['rebase', '-u', '-b', backing, '-F', fmt, img]);
      return img;
    };
    expectOneLineError(convert(mk('json.qcow2', 'json:{"driver":"qcow2","file":{"driver":"file","filename":"x"}}')), 1, /backing file is a json: description/);
    expectOneLineError(convert(mk('nbd.qcow2', 'nbd://localhost:10809/x')), 1, /backing file 'nbd:\/\/localhost:10809\/x' names a protocol/);
    expectOneLineError(convert(mk('vmdk.qcow2', 'good.qcow2', 'vmdk')), 1, /backing format 'vmdk' is not supported/);
    expectOneLineError(convert(mk('missing.qcow2', 'nowhere.qcow2')), 1, /parent image not found \(looked for .*nowhere\.qcow2\)/);
  });

  test('a chain deeper than the cap (256) is refused with one line', () => {
    const name = (i: number) => `deep${String(i).padStart(3, '0')}.qcow2`;
    run('qemu-img', ['create', '-q', '-f', 'qcow2', p(name(0)), '1M']);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', name(0), '-F', 'qcow2', p(name(1))]);
    // Every further overlay is the first one with its (same-length) backing name changed.
    const template = readFileSync(p(name(1)));
    const at = template.indexOf(Buffer.from(name(0)));
    for (let i = 2; i <= 260; i++) {
      Buffer.from(name(i - 1)).copy(template, at);
      writeFileSync(p(name(i)), template);
    }
    expect(convert(p(name(200))).status).toBe(0);
    expectOneLineError(convert(p(name(260))), 1, /parent chain deeper than 256/);
  });

  test('zstd-compressed clusters are refused with one line; the zstd image without compressed clusters reads', () => {
    const raw = p('z.raw');
    writeFileSync(raw, Buffer.from('compressible '.repeat(100000)));
    const z = p('z.qcow2');
    run('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, z]);
    expectOneLineError(convert(z), 1, /is zstd-compressed \(compression_type 1\), which this tool cannot decompress/);
    const plain = p('zplain.qcow2');
    run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, plain]);
    expect(convert(plain).status).toBe(0);
  });

  test('a corrupt-marked image reads with one warning line', () => {
    const img = patched('corrupt-bit.qcow2', (b) => b.writeBigUInt64BE(2n, F.incompat));
    const r = convert(img);
    expect(r.status).toBe(0);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^vhdsync: .*corrupt-bit\.qcow2: warning: the image is marked corrupt/)]);
  });
});
