/**
 * A VHD's virtual size per creator: current_size for every producer (vhd-tool/XAPI `caml`, Xen Orchestra `xo  `,
 * ...) except Virtual PC and Virtual Server, whose guests see the CHS size. Images are built at test time exactly as
 * those producers lay them out and read by libvhdi (vhdiinfo, pyvhdi) and qemu with force_size_calc, which take the
 * size the producer meant; `--vhd-size chs|current` overrides the rule.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import '../../src/formats/index.js';
import { openDisk } from '../../src/formats/index.js';
import { cli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, haveTool, pyvhdiRead, requireTool, run } from '../helpers/tools.js';
import { BLKTAP, BLOCK, produceVhd, VHD_TOOL, VIRTUAL_PC, VIRTUAL_SERVER, XEN_ORCHESTRA, type Producer } from '../helpers/vhd-producers.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img') && requireTool(Boolean(PYTHON_VHDI), 'pyvhdi') && requireTool(haveTool('vhdiinfo'), 'vhdiinfo');
const d = ok ? describe : describe.skip;
/** 20 MiB + 1.5 KiB: the spec's CHS for it addresses 20,959,232 bytes, 13,824 fewer. */
const SIZE = (20 << 20) + 1536;

d('VHD virtual size by creator', () => {
  const tmp = makeTempDir('vhd-creators-');
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);

  const vhdiMediaSize = (file: string) => Number(/Media size\s*:.*\((\d+) bytes\)/.exec(run('vhdiinfo', [file]).toString())?.[1]);
  /** qemu's reading with the size rule forced; `null` for qemu's own default (trusted-creator list, else CHS). */
  const qemuRead = (file: string, calc: 'current_size' | 'chs' | null) => {
    const out = `${file}.${calc ?? 'default'}.raw`;
    if (calc) run('qemu-img', ['convert', '--image-opts', `driver=vpc,force_size_calc=${calc},file.filename=${file}`, '-O', 'raw', out]);
    else run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, out]);
    return readFileSync(out);
  };

  // Data in the first block, a middle one and the last (partial) one, where a GPT disk keeps its backup header.
  const blocks = [0, 4, Math.ceil(SIZE / BLOCK) - 1];
  const build = (producer: Producer, name = `${producer.creatorApp.trim()}.vhd`) => {
    const img = produceVhd(producer, SIZE, blocks);
    writeFileSync(p(name), img.file);
    return { img, file: p(name) };
  };

  test.each<[string, Producer]>([
    ['vhd-tool / XAPI (caml)', VHD_TOOL],
    ['Xen Orchestra (xo  )', XEN_ORCHESTRA],
  ])('%s: current_size, as libvhdi and qemu with force_size_calc=current_size read it', async (_name, producer) => {
    const { img, file } = build(producer);
    expect(img.chsSize).toBe(20959232);
    // The independent readers agree on the size and the content, tail included.
    expect(vhdiMediaSize(file)).toBe(SIZE);
    expect(pyvhdiRead(file).equals(img.content)).toBe(true);
    expect(qemuRead(file, 'current_size').equals(img.content)).toBe(true);
    // qemu's default (CHS for creators it does not list) loses the tail: the reason we do not follow it here.
    expect(qemuRead(file, null).length).toBe(img.chsSize);

    const disk = await openDisk(file);
    try {
      expect(disk.virtualSize).toBe(SIZE);
      expect((await disk.read(0, SIZE)).equals(img.content)).toBe(true);
    } finally {
      await disk.close();
    }
    // The override, through the CLI: CHS as qemu's default has it.
    expect(cli(['get', file, 'virtual-size', '--vhd-size', 'chs']).stdout).toBe(`${img.chsSize}\n`);
    const out = p(`${producer.creatorApp.trim()}.chs.raw`);
    expect(cli(['convert', file, out, '--vhd-size', 'chs']).status).toBe(0);
    expect(readFileSync(out).equals(qemuRead(file, 'chs'))).toBe(true);
  });

  test.each<[string, Producer]>([
    ['Virtual PC (vpc )', VIRTUAL_PC],
    ['Virtual Server (vs  )', VIRTUAL_SERVER],
  ])('%s: the CHS size its guests see, as qemu reads it', async (_name, producer) => {
    const { img, file } = build(producer);
    const chsView = qemuRead(file, 'chs');
    expect(chsView.length).toBe(img.chsSize);
    expect(qemuRead(file, null).equals(chsView)).toBe(true);
    const disk = await openDisk(file);
    try {
      expect(disk.virtualSize).toBe(img.chsSize);
      expect((await disk.read(0, img.chsSize)).equals(chsView)).toBe(true);
    } finally {
      await disk.close();
    }
    // --vhd-size current reads it as libvhdi does.
    expect(vhdiMediaSize(file)).toBe(SIZE);
    expect(cli(['get', file, 'virtual-size', '--vhd-size', 'current']).stdout).toBe(`${SIZE}\n`);
    const out = p(`${producer.creatorApp.trim()}.current.raw`);
    expect(cli(['convert', file, out, '--vhd-size', 'current']).status).toBe(0);
    expect(readFileSync(out).equals(pyvhdiRead(file))).toBe(true);
  });

  /** A backup cycle onto `target` (createmeta, check, copy, merge, validate) with `flags` on every command. */
  function cycle(target: string, source: Buffer, flags: string[]): void {
    const src = `${target}.src.raw`;
    writeFileSync(src, source);
    const step = (args: string[]) => {
      const r = cli([...args, ...flags]);
      expect({ args, status: r.status, stderr: r.stderr }).toEqual({ args, status: 0, stderr: '' });
      return r.stdout;
    };
    step(['createmeta', src, target]);
    expect(JSON.parse(step(['check', src, target, '--json'])).virtualSize).toBe(source.length);
    step(['copy', src, target]);
    step(['merge', target.replace(/\.vhd$/, '_diff.vhd')]);
    step(['validate', target]);
  }

  it("a vhd-tool export as backup target: the tail copied and merged, libvhdi reads the source back", () => {
    const { img, file: target } = build(VHD_TOOL, 'backup-caml.vhd');
    const source = Buffer.from(img.content);
    source.fill(0x5a, SIZE - 512);
    source.fill(0xa5, 1 << 20, (1 << 20) + 4096);
    cycle(target, source, []);
    expect(vhdiMediaSize(target)).toBe(SIZE);
    expect(pyvhdiRead(target).equals(source)).toBe(true);
  });

  it('a Virtual PC target with --vhd-size current on every command is read, copied and merged at current_size', () => {
    const { img, file: target } = build(VIRTUAL_PC, 'backup-vpc.vhd');
    const source = Buffer.from(img.content);
    source.fill(0x77, SIZE - 4096);
    cycle(target, source, ['--vhd-size', 'current']);
    expect(pyvhdiRead(target).equals(source)).toBe(true);
    // Without the override the image is the CHS-sized disk again, and its metafile (made at current_size) is stale.
    const r = cli(['validate', target]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/stale/);
  });

  test.each([
    ['file://./parent.vhd', 'same'],
    ['file://../base/parent.vhd', 'kids'],
  ])("a blktap differencing child on a vhd-tool parent: its MacX locator %s resolves from the child's folder", async (url, childDir) => {
    const base = p('base');
    mkdirSync(base, { recursive: true });
    const parent = produceVhd(VHD_TOOL, SIZE, [0, 1, 10]);
    writeFileSync(path.join(base, 'parent.vhd'), parent.file);
    const child = produceVhd(BLKTAP, SIZE, [1, 3], undefined, { uniqueId: parent.uniqueId, name: 'parent.vhd', macx: url });
    const dir = childDir === 'same' ? base : p(childDir);
    mkdirSync(dir, { recursive: true });
    const childFile = path.join(dir, `child-${childDir}.vhd`);
    writeFileSync(childFile, child.file);
    // Blocks the child holds come from it (its bitmaps are all set), the others from the parent.
    const expected = Buffer.from(parent.content);
    for (const b of [1, 3]) child.content.copy(expected, b * BLOCK, b * BLOCK, Math.min(SIZE, (b + 1) * BLOCK));
    expect(pyvhdiRead(childFile, path.join(base, 'parent.vhd')).equals(expected)).toBe(true);
    const disk = await openDisk(childFile);
    try {
      expect(disk.parent?.location.path).toBe(path.join(base, 'parent.vhd'));
      expect(disk.virtualSize).toBe(SIZE);
      expect((await disk.read(0, SIZE)).equals(expected)).toBe(true);
    } finally {
      await disk.close();
    }
  });
});
