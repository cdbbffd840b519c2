/**
 * The forward-only QCOW2 decoder: streams made by our encoder (random disks and deltas), by qemu-img convert, and
 * by a Python writer in qcow2-to-stdout's layout, read from a pipe in odd pieces; and the refusals of what one pass
 * cannot read (compressed clusters, data before its L2 table, backward pointers, huge header fields, truncation).
 */
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { diskContent } from '../../../src/stream/content.js';
import { deltaContent } from '../../../src/stream/delta.js';
import { encodeQcow2 } from '../../../src/stream/qcow2-encoder.js';
import { encode } from '../../../src/stream/encode.js';
import { writeContentOnto } from '../../../src/stream/apply.js';
import { applyQcow2Stream, qcow2StreamContent } from '../../../src/stream/qcow2-stream-source.js';
import { MemDisk } from '../sync/mem-disk.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run, runStatus } from '../../helpers/tools.js';
import { qcow2Stdout, type Qcow2StdoutVariant } from '../../helpers/qcow2-stdout.js';
import { applyOps, collect, copyOf, diskOps, MIB, patternBytes, readerOf, SECTOR } from './helpers.js';

const size = fc.integer({ min: 1, max: (2 * MIB) / SECTOR + 5 }).map((s) => s * SECTOR);
const clusterSize = fc.constantFrom(512, 4096, 65536);
const piece = fc.integer({ min: 1, max: 200_000 });

/** Decodes through the content path (tables first) and writes onto a fresh disk. */
async function viaContent(bytes: Buffer, virtualSize: number, opts: { length?: number | null; piece?: number } = {}): Promise<Buffer> {
  const out = new MemDisk(virtualSize);
  await writeContentOnto(await qcow2StreamContent(readerOf(bytes, opts)), out, { fresh: true });
  return out.content();
}

/** Applies onto a disk that reads as zeros. */
async function viaApply(bytes: Buffer, virtualSize: number, opts: { length?: number | null; piece?: number } = {}): Promise<Buffer> {
  const out = new MemDisk(virtualSize);
  await applyQcow2Stream(readerOf(bytes, opts), out);
  return out.content();
}

describe('QCOW2 streams from our encoder', () => {
  it('full disks: both decoding paths give the disk back, whatever the cluster size and the pipe pieces', async () => {
    await fc.assert(
      fc.asyncProperty(size.chain((bytes) => fc.record({ bytes: fc.constant(bytes), ops: diskOps(bytes / SECTOR) })), clusterSize, piece, fc.boolean(), async ({ bytes, ops }, cs, p, known) => {
        const disk = new MemDisk(bytes);
        await applyOps(disk, ops);
        const want = await disk.content();
        const out = await collect(encodeQcow2(await diskContent(disk), { clusterSize: cs }));
        const opts = { piece: p, length: known ? out.length : null };
        expect((await viaContent(out, bytes, opts)).equals(want)).toBe(true);
        expect((await viaApply(out, bytes, opts)).equals(want)).toBe(true);
      }),
      { numRuns: 10 },
    );
  });

  it('deltas (zero flags included) applied onto the base give the source', async () => {
    await fc.assert(
      fc.asyncProperty(size.chain((bytes) => fc.record({ bytes: fc.constant(bytes), baseOps: diskOps(bytes / SECTOR), childOps: diskOps(bytes / SECTOR) })), piece, async ({ bytes, baseOps, childOps }, p) => {
        const base = new MemDisk(bytes);
        await applyOps(base, baseOps);
        const child = new MemDisk(bytes, { parent: base });
        await applyOps(child, childOps);
        const want = await child.content();
        const { source } = await deltaContent(child, base);
        const out = await collect(await encode('qcow2', source));
        const target = await copyOf(base);
        await applyQcow2Stream(readerOf(out, { piece: p }), target);
        expect((await target.content()).equals(want)).toBe(true);
        // A delta names its base: it cannot stand alone on a pipe.
        await expect(qcow2StreamContent(readerOf(out))).rejects.toThrow(/backing file .* needs its base/);
      }),
      { numRuns: 8 },
    );
  });

  it('a stream whose disk is larger than the image is refused; a smaller one lands where its clusters say', async () => {
    const small = new MemDisk(MIB);
    await small.write(4096, patternBytes(8192, 7));
    const out = await collect(encodeQcow2(await diskContent(small)));
    await expect(viaApply(out, MIB / 2)).rejects.toThrow(/more than the image's/);
    const big = new MemDisk(2 * MIB);
    await big.write(MIB, patternBytes(4096, 9));
    await applyQcow2Stream(readerOf(out), big);
    const got = await big.content();
    expect(got.subarray(4096, 4096 + 8192).equals(patternBytes(8192, 7))).toBe(true);
    expect(got.subarray(MIB, MIB + 4096).equals(patternBytes(4096, 9))).toBe(true);
  });
});

const describeTools = requireTool(HAVE_QEMU, 'qemu-img') ? describe : describe.skip;

describeTools('QCOW2 streams made by other writers', () => {
  let dir: string;
  let cleanup: () => void;
  let raw: Buffer;
  const RAW_SIZE = 2 * MIB + 64 * 1024;
  beforeAll(() => {
    ({ dir, cleanup } = makeTempDir('qcow2-stream-'));
    raw = Buffer.alloc(RAW_SIZE);
    patternBytes(MIB, 1).copy(raw, 0);
    patternBytes(12288, 2).copy(raw, 1.5 * MIB + 4096);
    patternBytes(512, 3).copy(raw, RAW_SIZE - 512);
    fs.writeFileSync(path.join(dir, 'src.raw'), raw);
  });
  afterAll(() => cleanup());

  const file = (n: string) => path.join(dir, n);

  it.each([9, 12, 16])('Python qcow2-to-stdout layout, cluster_bits %i: valid for qemu-img, read by both paths', async (bits) => {
    qcow2Stdout(file('src.raw'), file(`py${bits}.qcow2`), bits);
    expect(runStatus('qemu-img', ['check', file(`py${bits}.qcow2`)]).status).toBe(0);
    expect(runStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', file('src.raw'), file(`py${bits}.qcow2`)]).status).toBe(0);
    const bytes = fs.readFileSync(file(`py${bits}.qcow2`));
    expect((await viaContent(bytes, RAW_SIZE, { piece: 7777 })).equals(raw)).toBe(true);
    expect((await viaApply(bytes, RAW_SIZE, { length: bytes.length })).equals(raw)).toBe(true);
  });

  it('refcount table and blocks after the data (where qemu moves them): valid for qemu-img, read by both paths', async () => {
    qcow2Stdout(file('src.raw'), file('rclast.qcow2'), 12, 'refcount-last');
    expect(runStatus('qemu-img', ['check', file('rclast.qcow2')]).status).toBe(0);
    const bytes = fs.readFileSync(file('rclast.qcow2'));
    expect((await viaContent(bytes, RAW_SIZE, { length: bytes.length })).equals(raw)).toBe(true);
    expect((await viaApply(bytes, RAW_SIZE)).equals(raw)).toBe(true);
  });

  it('qemu-img convert: one L2 table is the sequential layout; with many, L2 tables sit among the data (applied, not re-encoded)', async () => {
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', file('src.raw'), file('q64k.qcow2')]);
    const one = fs.readFileSync(file('q64k.qcow2'));
    expect((await viaContent(one, RAW_SIZE)).equals(raw)).toBe(true);
    expect((await viaApply(one, RAW_SIZE)).equals(raw)).toBe(true);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=512', file('src.raw'), file('q512.qcow2')]);
    const many = fs.readFileSync(file('q512.qcow2'));
    expect((await viaApply(many, RAW_SIZE, { piece: 4099 })).equals(raw)).toBe(true);
    await expect(viaContent(many, RAW_SIZE)).rejects.toThrow(/comes before the last L2 table/);
  });

  it('qemu-img overlay (backing file, zero clusters) applied onto its base gives the overlay', async () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', file('base.qcow2'), String(RAW_SIZE)]);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x11 0 1M', '-c', 'write -q -P 0x22 1536k 128k', file('base.qcow2')]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', file('top.qcow2')]);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x33 64k 64k', '-c', 'write -q -z 1536k 64k', '-c', 'write -q -P 0x44 2M 4k', file('top.qcow2')]);
    run('qemu-img', ['convert', '-O', 'raw', file('base.qcow2'), file('base.raw')]);
    run('qemu-img', ['convert', '-O', 'raw', file('top.qcow2'), file('top.raw')]);
    const target = new MemDisk(RAW_SIZE);
    await target.write(0, fs.readFileSync(file('base.raw')));
    await applyQcow2Stream(readerOf(fs.readFileSync(file('top.qcow2'))), target);
    expect((await target.content()).equals(fs.readFileSync(file('top.raw')))).toBe(true);
  });

  it('compressed clusters (qemu-img convert -c) are refused', async () => {
    run('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', file('src.raw'), file('comp.qcow2')]);
    await expect(viaApply(fs.readFileSync(file('comp.qcow2')), RAW_SIZE)).rejects.toThrow(/compressed: a stream reader cannot take compressed clusters/);
  });

  const broken: Array<[Qcow2StdoutVariant, RegExp]> = [
    ['data-before-l2', /lies behind the stream's position .*data before its L2 table/],
    ['compressed', /compressed/],
    ['l2-backwards', /lies behind the stream's position/],
    ['duplicate', /referenced twice/],
    ['huge-cluster-bits', /cluster_bits is 30/],
    ['refcount-outside', /refcount table entry 1 .* points past the end of the stream/],
    ['huge-l1', /l1_size/],
    ['extended-l2', /extended L2 entries/],
  ];
  it.each(broken)('refused: %s', async (variant, why) => {
    qcow2Stdout(file('src.raw'), file(`${variant}.qcow2`), 12, variant);
    const bytes = fs.readFileSync(file(`${variant}.qcow2`));
    await expect(viaApply(bytes, RAW_SIZE, { length: bytes.length })).rejects.toThrow(why);
  });

  it('truncated anywhere: refused as truncated', async () => {
    qcow2Stdout(file('src.raw'), file('t.qcow2'), 12);
    const bytes = fs.readFileSync(file('t.qcow2'));
    for (const cut of [100, 600, 4096 + 10, 3 * 4096, 5 * 4096 + 1, bytes.length >> 1, bytes.length - 1]) {
      await expect(viaApply(bytes.subarray(0, cut), RAW_SIZE)).rejects.toThrow(/truncated/);
      await expect(viaContent(bytes.subarray(0, cut), RAW_SIZE)).rejects.toThrow(/truncated/);
    }
  });
});
