import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import type { Disk } from '../../formats/disk.js';
import { openDisk } from '../../formats/index.js';
import { displayLocation } from '../../io/location.js';
import {
  checkFresh,
  createMetafile,
  hashDisk,
  metafileLocationFor,
  readMetafile,
  resolveHashSettings,
  type BlockRange,
  type EntryBatch,
  type HashedBlock,
  type Metafile,
} from '../../meta/index.js';
import { ContentChangedError, MetafileError } from '../../util/errors.js';
import { createProgress } from '../../util/progress.js';
import { formatSize } from '../../util/units.js';
import { openOptionsFrom, withOpenOptions, type OpenArgs } from '../options.js';
import { out, outJson, wantProgress, withJson, type GlobalArgs } from '../output.js';

interface ValidateArgs extends OpenArgs, GlobalArgs {
  file: string;
  createmeta?: boolean;
}

/** `vhdsync validate`: re-hashes an image and lists the blocks its metafile gets wrong. */
export const validateCommand: CommandModule<object, ValidateArgs> = {
  ...CATALOG.validate,
  builder: (y) =>
    withJson(withOpenOptions(y, true))
      .positional('file', { type: 'string', demandOption: true, describe: 'the image' })
      .option('createmeta', { type: 'boolean', describe: 'rewrite the metafile from the image (also when the old one is stale or unreadable)' }) as never,
  handler: async (args) => {
    const disk = await openDisk(args.file, openOptionsFrom(args));
    try {
      await validate(disk, args);
    } finally {
      await disk.close();
    }
  },
};

async function validate(disk: Disk, args: ValidateArgs): Promise<void> {
  const metaLoc = metafileLocationFor(disk.location);
  const metaName = displayLocation(metaLoc);
  const image = displayLocation(disk.location);
  const exists = Boolean(await metaLoc.store.stat(metaLoc.path));
  if (!exists && !args.createmeta) throw new MetafileError(`no metafile (run vhdsync createmeta ${image})`, metaName);
  let old: Metafile | null = null;
  let problem: string | null = null;
  if (exists) {
    try {
      old = await readMetafile(metaLoc, { virtualSize: disk.virtualSize, logicalSectorSize: disk.logicalSectorSize });
      await checkFresh(old, disk);
    } catch (err) {
      // Without --createmeta a stale or broken metafile is refused; with it, it is about to be replaced anyway.
      if (!(err instanceof MetafileError) || !args.createmeta) {
        await old?.close();
        throw err;
      }
      problem = err.message;
      if (old && old.summary.blockCount !== Math.ceil(disk.virtualSize / old.summary.blockSize)) {
        await old.close();
        old = null;
      }
    }
  }
  try {
    const s = old?.summary;
    const settings = s
      ? resolveHashSettings(s.layout === 'vbb' ? { layout: 'vbb' } : { algorithm: s.algorithm as 'xxh128' | 'sha256', blockSize: s.blockSize }, disk.logicalSectorSize)
      : resolveHashSettings({}, disk.logicalSectorSize);
    const differ = old ? new DiffCollector(old) : null;
    const progress = createProgress(`validating ${disk.location.store.paths.basename(disk.location.path)}`, disk.virtualSize, wantProgress(args));
    const onBlock = async (b: HashedBlock) => {
      await differ?.add(b);
      progress.advance(b.length);
    };
    if (args.createmeta) {
      await createMetafile(disk, { ...settings, algorithm: settings.layout === 'vbb' ? undefined : (settings.algorithm as 'xxh128' | 'sha256'), onBlock });
    } else {
      for await (const b of hashDisk(disk, { algorithm: settings.algorithm, blockSize: settings.blockSize })) await onBlock(b);
    }
    progress.finish();
    const ranges = differ?.finish() ?? [];
    const differing = ranges.reduce((n, r) => n + r.count, 0);
    const blockSize = settings.blockSize;
    const total = Math.ceil(disk.virtualSize / blockSize);
    const rangeOut = ranges.map((r) => ({ firstBlock: r.first, blocks: r.count, offset: r.first * blockSize, length: Math.min(r.count * blockSize, disk.virtualSize - r.first * blockSize) }));
    if (args.json) {
      outJson({ file: image, metafile: metaName, blockSize, totalBlocks: total, differingBlocks: differing, differingRanges: rangeOut, previousProblem: problem, rewritten: Boolean(args.createmeta) });
    } else if (!args.quiet) {
      for (const r of rangeOut) {
        const which = r.blocks === 1 ? `block ${r.firstBlock}` : `blocks ${r.firstBlock}-${r.firstBlock + r.blocks - 1}`;
        out(`differs: ${which} (offset ${r.offset}, ${formatSize(r.length)})`);
      }
      if (problem) out(`${metaName}: previous metafile not usable: ${problem}`);
      if (!differing && !problem) out(`${metaName}: ${exists ? `matches the image (${total} blocks)` : 'created'}`);
      if (args.createmeta && (differing || problem)) out(`${metaName}: rewritten from the image`);
    }
    if (differing || problem) {
      const what = differing ? `${differing} of ${total} blocks differ from the image` : 'the previous metafile did not describe the image';
      throw new ContentChangedError(args.createmeta ? `${what}; the metafile has been rewritten` : `${what} (run vhdsync validate --createmeta ${image} to rewrite it)`, metaName);
    }
  } finally {
    await old?.close();
  }
}

/** Compares freshly hashed blocks with a metafile's entries (read in batches) and collects differing ranges. */
class DiffCollector {
  private batch: EntryBatch | null = null;
  private readonly ranges: BlockRange[] = [];

  constructor(private readonly meta: Metafile) {}

  async add(b: HashedBlock): Promise<void> {
    if (!this.batch || b.index >= this.batch.first + this.batch.count) this.batch = await this.meta.read(b.index, 1 << 16);
    const len = this.batch.digestLength;
    const at = (b.index - this.batch.first) * len;
    if (b.digest.equals(this.batch.digests.subarray(at, at + len))) return;
    const last = this.ranges[this.ranges.length - 1];
    if (last && last.first + last.count === b.index) last.count++;
    else this.ranges.push({ first: b.index, count: 1 });
  }

  finish(): BlockRange[] {
    return this.ranges;
  }
}
