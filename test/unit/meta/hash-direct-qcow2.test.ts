/**
 * The direct hashing path on QCOW2 images qemu-img and qemu-io make (cluster sizes 512 B-2 MiB, version 2 and 3,
 * zero and unmapped clusters, discards, compressed clusters, extended L2, raw and qcow2 backing files, a shorter
 * backing file): the same blocks as the generic pipeline, and the same digests as qemu's raw conversion of the
 * image hashed as a raw file. Images without compressed clusters are mapped whole and never read through the driver.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { openDisk } from '../../../src/formats/index.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run } from '../../helpers/tools.js';
import { fill } from '../../interop/qcow2-helpers.js';
import { digests, expectPathsAgree } from './direct-helpers.js';

const KiB = 1024;
const MiB = 1 << 20;
/** Not a multiple of any block or cluster size: the last block and cluster are partial. */
const SIZE = 3 * MiB + 3 * 512;

/** One qemu-io command on the base (bottom) layer or the top image. */
interface Op {
  top: boolean;
  kind: 'data' | 'zero' | 'zero-unmap' | 'discard';
  at: number;
  len: number;
  aligned: boolean;
}

const qimg = (...args: string[]) => run('qemu-img', args);

/** Content with random, repetitive (compressible) and zero stretches, so `convert -c` compresses some clusters. */
function mixed(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; i++) {
    const n = Math.min(size - off, 1 + ((seed * 7919 + i * 104729) % (300 * KiB)));
    const kind = (seed + i) % 3;
    if (kind === 0) fill(n, seed * 100 + i).copy(b, off);
    else if (kind === 1) b.fill(`qcow2 ${i} `, off, off + n);
    off += n;
  }
  return b;
}

/** qemu-io arguments for `ops` (offsets and lengths clipped to `size`, cluster aligned when asked). */
function ioCommands(ops: Op[], size: number, cluster: number): string[] {
  const out: string[] = [];
  for (const op of ops) {
    let at = Math.min(op.at, size - 512);
    let len = Math.max(1, Math.min(op.len, size - at));
    if (op.aligned || op.kind === 'discard') {
      at = Math.floor(at / cluster) * cluster;
      len = Math.max(cluster, Math.floor(len / cluster) * cluster);
      if (at + len > size) len = size - at;
    }
    const cmd = { data: `write -q -P ${1 + (at % 250)}`, zero: 'write -q -z', 'zero-unmap': 'write -q -z -u', discard: 'discard -q' }[op.kind];
    out.push('-c', `${cmd} ${at} ${len}`);
  }
  return out;
}

describe('the direct hashing path on QCOW2 images made by qemu', () => {
  const ok = requireTool(HAVE_QEMU, 'qemu-img/qemu-io');
  const tmp = makeTempDir('hash-direct-qcow2-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  (ok ? it : it.skip)('agrees with the generic pipeline and with the raw content qemu converts it to', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          cluster: fc.constantFrom(512, 4 * KiB, 64 * KiB, 2 * MiB),
          extended: fc.boolean(),
          v2: fc.boolean(),
          compressed: fc.boolean(),
          backing: fc.constantFrom<'none' | 'qcow2' | 'raw'>('none', 'qcow2', 'raw'),
          shortBacking: fc.boolean(),
          ops: fc.array(
            fc.record({
              top: fc.boolean(),
              kind: fc.constantFrom<Op['kind']>('data', 'data', 'zero', 'zero-unmap', 'discard'),
              at: fc.integer({ min: 0, max: SIZE - 1 }),
              len: fc.integer({ min: 1, max: 400 * KiB }),
              aligned: fc.boolean(),
            }),
            { maxLength: 8 },
          ),
          blockSize: fc.constantFrom(4 * KiB, 64 * KiB, MiB, 2 * MiB),
        }),
        async (c) => {
          const dir = path.join(tmp.dir, `case${n++}`);
          fs.mkdirSync(dir);
          // Extended L2 needs version 3 and clusters of at least 16 KiB.
          const cluster = c.extended ? Math.max(c.cluster, 16 * KiB) : c.cluster;
          const v2 = c.v2 && !c.extended;
          // Compressing 512-byte clusters makes thousands of tiny inflates per pass: slow, and nothing more to see.
          const compressed = c.compressed && cluster >= 4 * KiB;
          const options = `cluster_size=${cluster},compat=${v2 ? '0.10' : '1.1'}${c.extended ? ',extended_l2=on' : ''}`;
          const baseSize = c.backing !== 'none' && c.shortBacking ? 2 * MiB : SIZE;
          const source = path.join(dir, 'source.raw');
          fs.writeFileSync(source, mixed(baseSize, n));
          // The bottom layer: the mixed content as a raw file or a qcow2 (compressed or not) qemu-img converted.
          let base = path.join(dir, c.backing === 'raw' ? 'base.raw' : 'base.qcow2');
          if (c.backing === 'raw') fs.renameSync(source, base);
          else qimg('convert', '-q', ...(compressed ? ['-c'] : []), '-f', 'raw', '-O', 'qcow2', '-o', options, source, base);
          const baseOps = ioCommands(c.ops.filter((o) => c.backing === 'none' || !o.top), baseSize, cluster);
          if (baseOps.length) run('qemu-io', ['-f', c.backing === 'raw' ? 'raw' : 'qcow2', ...baseOps, base]);
          let img = base;
          if (c.backing !== 'none') {
            img = path.join(dir, 'top.qcow2');
            qimg('create', '-q', '-f', 'qcow2', '-o', options, '-b', path.basename(base), '-F', c.backing, img, String(SIZE));
            const topOps = ioCommands(c.ops.filter((o) => o.top), SIZE, cluster);
            if (topOps.length) run('qemu-io', ['-f', 'qcow2', ...topOps, img]);
          }
          // Compressed clusters are read through the driver (a fallback the direct path takes group by group).
          await expectPathsAgree(img, [c.blockSize], {}, !compressed || c.backing === 'raw');

          const raw = path.join(dir, 'content.raw');
          qimg('convert', '-q', '-O', 'raw', img, raw);
          const ours = await openDisk(img);
          const theirs = await openDisk(raw);
          try {
            // The raw file's zeros may be holes or written zeros, so states differ; digests must not.
            const strip = (lines: string[]) => lines.map((l) => l.split(' ').filter((_, i) => i !== 1 && i !== 3).join(' '));
            expect(strip(await digests(ours, c.blockSize, true))).toEqual(strip(await digests(theirs, c.blockSize, true)));
          } finally {
            await ours.close();
            await theirs.close();
          }
          fs.rmSync(dir, { recursive: true, force: true });
        },
      ),
      { numRuns: 8 },
    );
  });
});
