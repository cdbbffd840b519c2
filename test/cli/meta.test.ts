import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run } from '../helpers/tools.js';

const MiB = 1 << 20;

describe('vhdsync createmeta / check / validate (raw images)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);

  /** A sparse raw image with random data in the given 2 MiB blocks. */
  function image(name: string, size: number, dataBlocks: number[]): string {
    const f = p(name);
    fs.writeFileSync(f, Buffer.alloc(0));
    fs.truncateSync(f, size);
    const fd = fs.openSync(f, 'r+');
    for (const b of dataBlocks) fs.writeSync(fd, randomBytes(Math.min(2 * MiB, size - b * 2 * MiB)), 0, undefined, b * 2 * MiB);
    fs.closeSync(fd);
    return f;
  }

  /** A whole-second mtime, exactly restorable (utimes cannot restore a nanosecond one bit for bit). */
  const FIXED_MTIME = 1_700_000_000;

  /**
   * Changes every one of `length` bytes at `offset` to a random other value; `keepMtime` puts back FIXED_MTIME (a writer
   * that hides its tracks). Plain random bytes made this test flaky: one byte in 256 equalled the old one (a zero in a
   * hole), so the block did not change at all.
   */
  function scribble(f: string, offset: number, length: number, keepMtime = false): void {
    const fd = fs.openSync(f, 'r+');
    const bytes = Buffer.alloc(length);
    fs.readSync(fd, bytes, 0, length, offset);
    const flips = randomBytes(length);
    for (let i = 0; i < length; i++) bytes[i] ^= flips[i] % 255 + 1;
    fs.writeSync(fd, bytes, 0, length, offset);
    fs.closeSync(fd);
    if (keepMtime) fs.utimesSync(f, FIXED_MTIME, FIXED_MTIME);
  }

  it('hashes several files given as a quoted wildcard, ignoring metafiles and temp files; --json per file', () => {
    fs.mkdirSync(p('w'));
    for (const n of ['a.img', 'b.img', 'c.txt']) fs.writeFileSync(path.join(p('w'), n), randomBytes(100_000));
    fs.writeFileSync(path.join(p('w'), '.a.img.blocklist.bin.1234.partial'), 'junk');
    const r = cli(['createmeta', path.join(p('w'), '*.im?'), '--json']);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.map((x: { file: string }) => path.basename(x.file))).toEqual(['a.img', 'b.img']);
    expect(out[0]).toMatchObject({ format: 'native', hash: 'xxh128', blockSize: 2 * MiB, virtualSize: 100_000, blocks: 1, dataBlocks: 1 });
    // Running it again over '*' must not hash the metafiles it just wrote.
    const again = cli(['createmeta', path.join(p('w'), '*')]);
    expect(again.status).toBe(0);
    expect(again.stdout.trim().split('\n').map((l) => path.basename(l.split(':')[0]))).toEqual(['a.img.blocklist.bin', 'b.img.blocklist.bin', 'c.txt.blocklist.bin']);
    expectOneLineError(cli(['createmeta', path.join(p('w'), 'nothing*')]), 1, /nothing\*: no files match/);
  });

  it('check: identical images differ in 0 blocks; changed blocks are counted exactly; exit 0 both ways', () => {
    const a = image('a.raw', 20 * MiB + 4096, [0, 3, 7, 10]);
    fs.copyFileSync(a, p('b.raw'));
    // Legacy VhdBlockBackup syntax for several files.
    const made = cli(['--createmeta', a, p('b.raw')]);
    expect(made.status).toBe(0);
    expect(made.stdout).toMatch(/a\.raw\.blocklist\.bin: 11 blocks of 2 MiB \(xxh128\): 4 data, 7 zero, 0 unallocated/);
    const same = cli(['check', a, p('b.raw'), '--json']);
    expect(same.status).toBe(0);
    expect(JSON.parse(same.stdout)).toMatchObject({ source: a, target: p('b.raw'), blockSize: 2 * MiB, virtualSize: 20 * MiB + 4096, totalBlocks: 11, changedBlocks: 0, changedBytes: 0 });
    scribble(p('b.raw'), 3 * 2 * MiB + 5, 10);
    scribble(p('b.raw'), 5 * 2 * MiB, 1);
    scribble(p('b.raw'), 20 * MiB + 100, 1); // the short last block
    expect(cli(['createmeta', p('b.raw')]).status).toBe(0);
    const diff = cli(['--check', a, p('b.raw')]);
    expect(diff.status).toBe(0);
    expect(diff.stdout).toMatch(/3 of 11 blocks of 2 MiB differ: 4\.00 MiB of 20\.0 MiB \(20\.\d+%\) would be copied/);
    const j = JSON.parse(cli(['check', '--json', a, p('b.raw')]).stdout);
    expect(j).toMatchObject({ totalBlocks: 11, changedBlocks: 3, changedBytes: 4 * MiB + 4096 });
    expect(j.changedRanges).toEqual([
      { firstBlock: 3, blocks: 1, offset: 6 * MiB, length: 2 * MiB },
      { firstBlock: 5, blocks: 1, offset: 10 * MiB, length: 2 * MiB },
      { firstBlock: 10, blocks: 1, offset: 20 * MiB, length: 4096 },
    ]);
    // Metafiles can be named directly; one whose image is not next to it (a target kept elsewhere) is trusted.
    expect(JSON.parse(cli(['check', '--json', `${a}.blocklist.bin`, `${p('b.raw')}.blocklist.bin`]).stdout).changedBlocks).toBe(3);
    fs.mkdirSync(p('elsewhere'));
    fs.copyFileSync(`${p('b.raw')}.blocklist.bin`, path.join(p('elsewhere'), 'gone.raw.blocklist.bin'));
    const away = cli(['check', '--json', a, path.join(p('elsewhere'), 'gone.raw.blocklist.bin')]);
    expect(away.status).toBe(0);
    expect(JSON.parse(away.stdout)).toMatchObject({ target: path.join(p('elsewhere'), 'gone.raw.blocklist.bin'), changedBlocks: 3 });
  });

  it('check refuses missing, stale, corrupt and incompatible metafiles with one line naming the file and the fix', () => {
    const a = image('s.raw', 8 * MiB, [1]);
    const t = image('t.raw', 8 * MiB, [2]);
    expectOneLineError(cli(['check', a, t]), 1, /s\.raw\.blocklist\.bin: no metafile \(run vhdsync createmeta .*s\.raw\)/);
    expect(cli(['createmeta', a, t]).status).toBe(0);
    const later = new Date(Date.now() + 10_000);
    fs.utimesSync(t, later, later);
    expectOneLineError(cli(['check', a, t]), 1, /t\.raw\.blocklist\.bin: stale: .*\(run vhdsync createmeta .*t\.raw\)/);
    expect(cli(['createmeta', t]).status).toBe(0);
    const meta = fs.readFileSync(`${t}.blocklist.bin`);
    for (const at of [3, 100, 512 + 5, meta.length - 6]) {
      const bad = Buffer.from(meta);
      bad[at] ^= 0x10;
      fs.writeFileSync(`${t}.blocklist.bin`, bad);
      expectOneLineError(cli(['check', a, t]), 1, /t\.raw\.blocklist\.bin: .*(corrupt|not a|newer)/);
    }
    fs.writeFileSync(`${t}.blocklist.bin`, meta.subarray(0, meta.length - 20));
    expectOneLineError(cli(['check', a, t]), 1, /truncated.*createmeta/);
    expect(cli(['createmeta', '--block-size', '1M', t]).status).toBe(0);
    expectOneLineError(cli(['check', a, t]), 1, /block sizes differ \(2 MiB here, 1 MiB in .*\): run vhdsync createmeta --block-size 1048576 .*s\.raw/);
    expect(cli(['createmeta', '--hash', 'sha256', '--block-size', '2M', t]).status).toBe(0);
    expectOneLineError(cli(['check', a, t]), 1, /hash algorithms differ/);
    const small = image('small.raw', 4 * MiB, [0]);
    expect(cli(['createmeta', small]).status).toBe(0);
    expectOneLineError(cli(['check', a, small]), 1, /virtual sizes differ/);
  });

  it('validate: exit 0 when the list matches, 1 with the differing ranges, --createmeta rewrites', () => {
    const f = image('v.raw', 12 * MiB, [0, 1, 4]);
    fs.utimesSync(f, FIXED_MTIME, FIXED_MTIME);
    expectOneLineError(cli(['validate', f]), 1, /no metafile \(run vhdsync createmeta/);
    expect(cli(['createmeta', f]).status).toBe(0);
    const ok = cli(['validate', f]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/matches the image \(6 blocks\)/);
    // A change that keeps size and mtime slips past staleness; validate re-hashes and finds it.
    scribble(f, 2 * MiB + 7, 3, true);
    scribble(f, 4 * MiB, 1, true);
    scribble(f, 10 * MiB, 1, true);
    const bad = cli(['validate', f, '--json']);
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ file: f, blockSize: 2 * MiB, totalBlocks: 6, differingBlocks: 3, differingRanges: [
      { firstBlock: 1, blocks: 2, offset: 2 * MiB, length: 4 * MiB },
      { firstBlock: 5, blocks: 1, offset: 10 * MiB, length: 2 * MiB },
    ] });
    expect(bad.stderr).toMatch(/^vhdsync: .*v\.raw\.blocklist\.bin: 3 of 6 blocks differ from the image \(run vhdsync validate --createmeta .*\)\n$/);
    const text = cli(['--validate', f]);
    expect(text.stdout).toMatch(/differs: blocks 1-2 \(offset 2097152, 4 MiB\)\ndiffers: block 5 \(offset 10485760, 2 MiB\)/);
    const fixed = cli(['validate', '--createmeta', f]);
    expect(fixed.status).toBe(1);
    expect(fixed.stderr).toMatch(/has been rewritten/);
    expect(cli(['validate', f]).status).toBe(0);
    // A stale metafile is refused, unless --createmeta replaces it.
    scribble(f, 0, 1);
    const later = new Date(Date.now() + 10_000);
    fs.utimesSync(f, later, later);
    expectOneLineError(cli(['validate', f]), 1, /stale/);
    expect(cli(['validate', '--createmeta', f]).status).toBe(1);
    expect(cli(['validate', f]).status).toBe(0);
  });

  it('--format vbb writes exactly VhdBlockBackup\'s bytes: 16 bytes of SHA-1 per 2 MiB block', () => {
    const f = image('vbb.raw', 7 * MiB + 512, [0, 2, 3]);
    const r = cli(['createmeta', '--format', 'vbb', f]);
    expect(r.status).toBe(0);
    const data = fs.readFileSync(f);
    const expected: Buffer[] = [];
    for (let off = 0; off < data.length; off += 2 * MiB) expected.push(createHash('sha1').update(data.subarray(off, off + 2 * MiB)).digest().subarray(0, 16));
    expect(fs.readFileSync(`${f}.blocklist.bin`).equals(Buffer.concat(expected))).toBe(true);
    // vbb against vbb compares; vbb against native is refused with the fix.
    fs.copyFileSync(f, p('vbb2.raw'));
    scribble(p('vbb2.raw'), 6 * MiB, 4);
    expect(cli(['createmeta', '--format', 'vbb', p('vbb2.raw')]).status).toBe(0);
    expect(JSON.parse(cli(['check', '--json', f, p('vbb2.raw')]).stdout)).toMatchObject({ format: 'vbb', changedBlocks: 1, changedBytes: MiB + 512 });
    expect(cli(['createmeta', p('vbb2.raw')]).status).toBe(0);
    expectOneLineError(cli(['check', f, p('vbb2.raw')]), 1, /VhdBlockBackup \(vbb\) metafile .*run vhdsync createmeta --format vbb .*vbb2\.raw/);
  });

  it.each([
    [['createmeta', '--block-size', '3M', 'x'], /block size/],
    [['createmeta', '--block-size', '2K', 'x'], /block size/],
    [['createmeta', '--format', 'vbb', '--hash', 'sha256', 'x'], /--hash cannot be combined with --format vbb/],
    [['check', 'only-one'], /Not enough|source|target/],
  ])('usage errors exit 2: %j', (args, message) => {
    const f = image('u.raw', MiB, [0]);
    expectOneLineError(cli(args.map((a) => (a === 'x' ? f : a))), 2, message);
  });

  const qemu = requireTool(HAVE_QEMU, 'qemu-img');
  (qemu ? it : it.skip)('check across formats: a raw source against a VHDX and a VHD target made by qemu-img', () => {
    const a = image('x.raw', 16 * MiB, [1, 2, 6]);
    run('qemu-img', ['convert', '-O', 'vhdx', a, p('x.vhdx')]);
    run('qemu-img', ['convert', '-O', 'vpc', '-o', 'force_size=on', a, p('x.vhd')]);
    expect(cli(['createmeta', a, p('x.vhdx'), p('x.vhd')]).status).toBe(0);
    for (const t of ['x.vhdx', 'x.vhd']) {
      const r = cli(['check', '--json', a, p(t)]);
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ totalBlocks: 8, changedBlocks: 0 });
    }
  });
});
