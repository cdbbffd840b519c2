import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('vhdsync CLI basics (raw images)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);

  it('prints help and a version, exit 0', () => {
    const help = cli(['--help']);
    expect(help.status).toBe(0);
    for (const c of ['create', 'info', 'get', 'convert']) expect(help.stdout).toContain(`vhdsync ${c}`);
    expect(help.stdout).toContain('Exit codes');
    const version = cli(['--version']);
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('creates a sparse raw image and reports it', () => {
    const r = cli(['create', p('a.img'), '--size', '10M', '--json']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ format: 'raw', virtualSize: 10 * 1024 * 1024 });
    expect(fs.statSync(p('a.img')).size).toBe(10 * 1024 * 1024);
    expect(fs.statSync(p('a.img')).blocks).toBe(0);
    expect(cli(['get', p('a.img'), 'virtual-size']).stdout).toBe('10485760\n');
    expect(cli(['get', p('a.img'), 'format']).stdout).toBe('raw\n');
    const info = JSON.parse(cli(['info', p('a.img'), '--json']).stdout);
    expect(info).toMatchObject({ format: 'raw', virtualSize: 10485760, logicalSectorSize: 512 });
    expect(cli(['info', p('a.img')]).stdout).toMatch(/Virtual Size:\s+10485760 \(10 MiB\)/);
  });

  it('converts raw to raw keeping data and holes', () => {
    const src = p('src.raw');
    const data = randomBytes(300_000);
    fs.writeFileSync(src, Buffer.alloc(0));
    fs.truncateSync(src, 8 << 20);
    const fd = fs.openSync(src, 'r+');
    fs.writeSync(fd, data, 0, data.length, 3 << 20);
    fs.closeSync(fd);
    const r = cli(['convert', src, p('dst.raw'), '--json']);
    expect(r.status).toBe(0);
    expect(fs.readFileSync(p('dst.raw')).equals(fs.readFileSync(src))).toBe(true);
    // Only the 64 KiB-aligned runs holding data were written.
    expect(fs.statSync(p('dst.raw')).blocks * 512).toBeLessThanOrEqual(448 * 1024);
    expect(fs.readdirSync(tmp.dir).filter((n) => n.includes('.partial'))).toEqual([]);
  });

  it('refuses to overwrite without --force', () => {
    fs.writeFileSync(p('exists.img'), 'keep me');
    expectOneLineError(cli(['create', p('exists.img'), '--size', '1M']), 1, /already exists.*--force/);
    expect(fs.readFileSync(p('exists.img'), 'utf8')).toBe('keep me');
    expect(cli(['create', p('exists.img'), '--size', '1M', '--force']).status).toBe(0);
    expect(fs.statSync(p('exists.img')).size).toBe(1 << 20);
  });

  it.each([
    [['info', '/nonexistent/x.vhd'], 1, /x\.vhd: no such file or directory/],
    // createmeta starts its hashing threads with the process: never used, they must not keep it alive.
    [['createmeta', '/nonexistent/x.raw'], 1, /x\.raw: no such file or directory/],
    [['bogus'], 2, /Unknown argument: bogus/],
    [['create', 'x.img'], 2, /--size is required/],
    [['create', 'x.img', '--size', 'lots'], 2, /invalid size 'lots'/],
    [['create', 'x.qcow9', '--size', '1M'], 2, /cannot tell the output format/],
    [['info'], 2, /Not enough non-option arguments/],
    [['get', '/dev/null', 'nonsense'], 2, /unknown field 'nonsense'/],
    [['convert', 'smb2x://h/s/x', 'y.raw'], 2, /unsupported location scheme/],
  ])('%j fails with one clear line', (args, status, pattern) => {
    expectOneLineError(cli(args as string[], { cwd: tmp.dir }), status as number, pattern as RegExp);
  });
});
