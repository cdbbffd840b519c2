/**
 * QCOW2 images qemu-img/qemu-io make, read by us: every byte as `qemu-img convert -O raw` reads it, and status()
 * as `qemu-img map --output=json` reports it (state and depth), for the whole test matrix of issue 9.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { openDisk } from '../../src/formats/index.js';
import { Refcounts } from '../../src/formats/qcow2/refcount.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run } from '../helpers/tools.js';
import { ourMap, qemuMap, qemuRaw, randomWrites, readInPieces, rng, type ForeignLayers } from './qcow2-helpers.js';

const KiB = 1024;
const MiB = 1 << 20;
const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;

/** A fixture: the image to read, layers that are raw (for map), and where qemu must run. */
interface Fixture {
  img: string;
  foreign?: ForeignLayers;
  cwd?: string;
}

const qimg = (...args: string[]) => run('qemu-img', args);
const qio = (img: string, cmds: string[], fmt = 'qcow2') => run('qemu-io', ['-f', fmt, ...cmds, img]);

/** Raw content with random, repetitive (compressible) and zero stretches. */
function mixedContent(size: number, seed: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(size);
  for (let off = 0; off < size; ) {
    const n = Math.min(size - off, 1 + Math.floor(r() * 200 * KiB));
    const kind = r();
    if (kind < 0.35) for (let i = 0; i < n; i += 4) b.writeUInt32LE((r() * 2 ** 32) >>> 0, off + i - (i + 4 > n ? i + 4 - n : 0));
    else if (kind < 0.75) b.write(`qcow2 text ${Math.floor(r() * 1000)} `.repeat(Math.ceil(n / 16)).slice(0, n), off, 'latin1');
    off += n;
  }
  return b;
}

/** An image made with `-o options` and filled by random qemu-io writes (randomWrites' arguments). */
function simple(name: string, options: string, size: string, writes: Parameters<typeof randomWrites>): (dir: string) => Fixture {
  return (dir) => {
    const img = path.join(dir, name);
    qimg('create', '-q', '-f', 'qcow2', '-o', options, img, size);
    qio(img, randomWrites(...writes));
    return { img };
  };
}

const fixtures: Array<[string, (dir: string) => Fixture]> = [
  ['v2 (compat=0.10), 64 KiB clusters, write -z as real zeros', simple('v2.qcow2', 'compat=0.10', '5M', [5 * MiB, 1, 30, 300 * KiB])],
  ['v3, 512-byte clusters', simple('c512.qcow2', 'cluster_size=512', '3M', [3 * MiB, 2, 40, 40 * KiB])],
  ['v3, 2 MiB clusters, odd virtual size', simple('c2m.qcow2', 'cluster_size=2M', `${13 * MiB + 5 * 512}`, [13 * MiB, 3, 12, 3 * MiB])],
  ['extended L2 (32 subclusters of 2 KiB) over a backing file', (dir) => {
    const base = path.join(dir, 'xbase.qcow2');
    const img = path.join(dir, 'xl2.qcow2');
    qimg('create', '-q', '-f', 'qcow2', base, '4M');
    qio(base, ['-c', 'write -q -P 0x77 0 4M']);
    qimg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', '-b', 'xbase.qcow2', '-F', 'qcow2', img);
    qio(img, [...randomWrites(4 * MiB, 4, 40, 9 * KiB, 0.3), '-c', 'write -q -z 100k 6k', '-c', 'write -q -P 9 2m 2k']);
    return { img };
  }],
  ['extended L2 without backing, 32 KiB clusters', simple('xl2b.qcow2', 'extended_l2=on,cluster_size=32k', '2M', [2 * MiB, 5, 30, 5 * KiB, 0.3])],
  ['deflate-compressed clusters (convert -c), 4 KiB clusters', (dir) => {
    const raw = path.join(dir, 'mixed.raw');
    writeFileSync(raw, mixedContent(2 * MiB + 512, 5));
    const img = path.join(dir, 'comp4k.qcow2');
    qimg('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4k', raw, img);
    return { img };
  }],
  ['deflate-compressed clusters (64 KiB) under an overlay with partial writes into them', (dir) => {
    const raw = path.join(dir, 'mixed.raw');
    writeFileSync(raw, mixedContent(3 * MiB + 512, 6));
    qimg('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', raw, path.join(dir, 'comp.qcow2'));
    const top = path.join(dir, 'comp-top.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'comp.qcow2', '-F', 'qcow2', top);
    qio(top, randomWrites(3 * MiB, 7, 10, 50 * KiB));
    return { img: top };
  }],
  ['refcount_bits=1', simple('rc1.qcow2', 'refcount_bits=1', '3M', [3 * MiB, 8, 20, 200 * KiB])],
  ['refcount_bits=64', simple('rc64.qcow2', 'refcount_bits=64', '3M', [3 * MiB, 9, 20, 200 * KiB])],
  ['lazy refcounts, dirty bit left by a killed qemu-io', (dir) => {
    const img = path.join(dir, 'lazy.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', img, '3M');
    qio(img, ['-c', 'write -q -P 0x10 0 1M']);
    const r = spawnSync('qemu-io', ['-f', 'qcow2', ...randomWrites(3 * MiB, 10, 10, 100 * KiB, 0), '-c', 'sigraise 9', img]);
    expect(r.signal).toBe('SIGKILL');
    expect(readFileSync(img).readBigUInt64BE(72) & 1n).toBe(1n);
    return { img };
  }],
  ['external data file (not raw), resolved next to the image', (dir) => {
    const sub = path.join(dir, 'ext');
    mkdirSync(sub);
    const img = path.join(sub, 'e.qcow2');
    run('sh', ['-c', `cd "${sub}" && qemu-img create -q -f qcow2 -o data_file=e.data e.qcow2 3M`]);
    run('sh', ['-c', `cd "${sub}" && qemu-io -f qcow2 ${randomWrites(3 * MiB, 11, 15, 200 * KiB).map((a) => `'${a}'`).join(' ')} e.qcow2`]);
    return { img, cwd: sub };
  }],
  ['external raw data file (data_file_raw=on)', (dir) => {
    const sub = path.join(dir, 'extraw');
    mkdirSync(sub);
    const img = path.join(sub, 'r.qcow2');
    run('sh', ['-c', `cd "${sub}" && qemu-img create -q -f qcow2 -o data_file=r.data,data_file_raw=on r.qcow2 3M`]);
    run('sh', ['-c', `cd "${sub}" && qemu-io -f qcow2 ${randomWrites(3 * MiB, 12, 15, 200 * KiB).map((a) => `'${a}'`).join(' ')} r.qcow2`]);
    return { img, cwd: sub };
  }],
  ['internal snapshot, then further writes', (dir) => {
    const img = path.join(dir, 'snap.qcow2');
    qimg('create', '-q', '-f', 'qcow2', img, '4M');
    qio(img, ['-c', 'write -q -P 0x21 0 4M']);
    qimg('snapshot', '-c', 'first', img);
    qio(img, randomWrites(4 * MiB, 13, 20, 100 * KiB));
    qimg('snapshot', '-c', 'second snapshot', img);
    qio(img, ['-c', 'write -q -P 0x22 1M 70k', '-c', 'discard -q 2M 128k']);
    return { img };
  }],
  ['3-deep chain with images in different folders', (dir) => {
    for (const f of ['a', 'b', 'c']) mkdirSync(path.join(dir, f));
    const base = path.join(dir, 'a', 'base.qcow2');
    const mid = path.join(dir, 'b', 'mid.qcow2');
    const top = path.join(dir, 'c', 'top.qcow2');
    qimg('create', '-q', '-f', 'qcow2', base, '6M');
    qio(base, randomWrites(6 * MiB, 14, 20, 300 * KiB));
    qimg('create', '-q', '-f', 'qcow2', '-b', '../a/base.qcow2', '-F', 'qcow2', mid);
    qio(mid, randomWrites(6 * MiB, 15, 20, 200 * KiB));
    qimg('create', '-q', '-f', 'qcow2', '-b', path.join(dir, 'b', 'mid.qcow2'), '-F', 'qcow2', top);
    qio(top, randomWrites(6 * MiB, 16, 20, 100 * KiB, 0.4));
    return { img: top };
  }],
  ['raw backing file', (dir) => {
    const base = path.join(dir, 'rb.raw');
    writeFileSync(base, mixedContent(4 * MiB, 17));
    const img = path.join(dir, 'over-raw.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'rb.raw', '-F', 'raw', img);
    qio(img, randomWrites(4 * MiB, 18, 20, 100 * KiB));
    return { img, foreign: [1] };
  }],
  ['shorter backing file (4 MiB under 8 MiB): reads past it are zeros', (dir) => {
    const base = path.join(dir, 'short.qcow2');
    qimg('create', '-q', '-f', 'qcow2', base, '4M');
    qio(base, ['-c', 'write -q -P 0x31 0 4M']);
    const img = path.join(dir, 'long.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'short.qcow2', '-F', 'qcow2', img, '8M');
    qio(img, ['-c', 'write -q -P 0x32 3M 2M', '-c', 'write -q -P 0x33 7M 4k']);
    return { img };
  }],
  ['qcow2 over qcow2 over VHDX (mixed chain through the generic opener)', (dir) => {
    const vhdx = path.join(dir, 'm.vhdx');
    qimg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', vhdx, '8M');
    qio(vhdx, ['-c', 'write -q -P 0x41 0 3M', '-c', 'write -q -P 0x45 6M 1M'], 'vhdx');
    const mid = path.join(dir, 'm1.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'm.vhdx', '-F', 'vhdx', mid);
    qio(mid, ['-c', 'write -q -P 0x42 1M 1M', '-c', 'write -q -z 6M 64k']);
    const img = path.join(dir, 'm2.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'm1.qcow2', '-F', 'qcow2', img);
    qio(img, ['-c', 'write -q -P 0x46 1500k 1M']);
    return { img, foreign: [2] };
  }],
  ['qcow2 over a dynamic VHD', (dir) => {
    const vhd = path.join(dir, 'm.vhd');
    qimg('create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', vhd, '8M');
    qio(vhd, ['-c', 'write -q -P 0x43 2M 3M'], 'vpc');
    const img = path.join(dir, 'over-vhd.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-b', 'm.vhd', '-F', 'vpc', img);
    qio(img, ['-c', 'write -q -P 0x44 4M 100k']);
    return { img, foreign: [1] };
  }],
];

d('QCOW2 read matrix against qemu', () => {
  const tmp = makeTempDir('qcow2-read-');
  afterAll(() => tmp.cleanup());

  test.each(fixtures)('%s', async (name, build) => {
    const dir = path.join(tmp.dir, name.replace(/[^a-z0-9]+/gi, '-'));
    mkdirSync(dir);
    const fx = build(dir);
    const expected = qemuRaw(fx.img, fx.cwd);
    // Open from another directory: relative backing and data file names resolve next to the image.
    const disk = await openDisk(fx.img);
    try {
      expect(disk.format).toBe('qcow2');
      expect(disk.virtualSize).toBe(expected.length);
      expect((await disk.read(0, disk.virtualSize)).equals(expected)).toBe(true);
      expect((await readInPieces(disk, 3 * KiB + 512 + 7)).equals(expected)).toBe(true);
      expect(await ourMap(disk, fx.foreign)).toEqual(qemuMap(fx.img, fx.foreign, fx.cwd));
    } finally {
      await disk.close();
    }
  });

  test.each([1, 2, 4, 8, 16, 32, 64])('refcount_bits=%i: every cluster qemu maps has refcount 1 in our decoding', async (bits) => {
    const img = path.join(tmp.dir, `rcw${bits}.qcow2`);
    qimg('create', '-q', '-f', 'qcow2', '-o', `refcount_bits=${bits},cluster_size=4k`, img, '2M');
    qio(img, randomWrites(2 * MiB, bits, 30, 60 * KiB, 0));
    const map = JSON.parse(run('qemu-img', ['map', '--output=json', img]).toString()) as Array<{ offset?: number; length: number }>;
    const { openQcow2Layout } = await layoutReader();
    const layout = await openQcow2Layout(img);
    const rc: Refcounts = layout.refcounts;
    expect(rc.bits).toBe(bits);
    const hosts = map.filter((e) => e.offset !== undefined).flatMap((e) => Array.from({ length: e.length / 4096 }, (_, i) => (e.offset! + i * 4096) / 4096));
    expect(hosts.length).toBeGreaterThan(10);
    for (const c of [0, ...hosts]) expect(await rc.get(c)).toBe(1);
    // Clusters past the end of the file are free.
    expect(await rc.get(readFileSync(img).length / 4096 + 5)).toBe(0);
    await layout.close();
  });

  test('info lists the header fields dump-info prints and the snapshots', async () => {
    const img = path.join(tmp.dir, 'info.qcow2');
    qimg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,lazy_refcounts=on', img, '10M');
    qimg('snapshot', '-c', 'snap one', img);
    const disk = await openDisk(img);
    try {
      const info = await disk.info();
      const q = JSON.parse(run('qemu-img', ['info', '--output=json', img]).toString());
      expect(info).toMatchObject({
        format: 'qcow2',
        version: 3,
        headerLength: 112,
        virtualSize: q['virtual-size'],
        clusterSize: q['cluster-size'],
        cryptMethod: 0,
        backingFile: null,
        l2Entries: 128 * 1024 / 8,
        refcountBits: q['format-specific'].data['refcount-bits'],
        lazyRefcounts: true,
        nbSnapshots: 1,
      });
      expect((info.features as Record<string, unknown>).compatible).toEqual(['lazy_refcounts']);
      expect((info.snapshots as string[])[0]).toMatch(/^1 "snap one" /);
    } finally {
      await disk.close();
    }
  });
});

/** Reads an image's layout directly (refcount tests need the Refcounts object, which the Disk keeps private). */
async function layoutReader() {
  const { readLayout } = await import('../../src/formats/qcow2/layout.js');
  const { localStore } = await import('../../src/io/local.js');
  return {
    async openQcow2Layout(img: string) {
      const file = await localStore.open(img, 'read');
      const layout = await readLayout(file, img);
      return { refcounts: layout.refcounts, close: () => file.close() };
    },
  };
}
