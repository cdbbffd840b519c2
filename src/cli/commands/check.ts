import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { openDisk } from '../../formats/index.js';
import type { OpenOptions } from '../../formats/disk.js';
import { displayLocation, parseLocation, type Location } from '../../io/location.js';
import { checkFresh, compareMetafiles, hasMagic, imageLocationForMetafile, metafileLocationFor, METAFILE_SUFFIX, readMetafile, type Metafile } from '../../meta/index.js';
import { formatSize } from '../../util/units.js';
import { openOptionsFrom, withOpenOptions, type OpenArgs } from '../options.js';
import { out, outJson, withJson, type GlobalArgs } from '../output.js';

interface CheckArgs extends OpenArgs, GlobalArgs {
  source: string;
  target: string;
}

/** `vhdsync check`: how much a copy from SOURCE onto TARGET would move, from their metafiles. */
export const checkCommand: CommandModule<object, CheckArgs> = {
  ...CATALOG.check,
  builder: (y) =>
    withJson(withOpenOptions(y, true))
      .positional('source', { type: 'string', demandOption: true, describe: 'source image, or its metafile' })
      .positional('target', { type: 'string', demandOption: true, describe: 'target image, or its metafile' }) as never,
  handler: async (args) => {
    // A forced --input-format is SOURCE's (content from elsewhere); TARGET is always detected.
    const src = await openVerifiedMetafile(args.source, openOptionsFrom(args));
    try {
      const dst = await openVerifiedMetafile(args.target, { ...openOptionsFrom(args), format: undefined });
      try {
        const c = await compareMetafiles(src.meta, dst.meta);
        const s = src.meta.summary;
        const share = s.virtualSize ? c.changedBytes / s.virtualSize : 0;
        if (args.json) {
          outJson({
            source: src.image,
            target: dst.image,
            sourceMetafile: src.meta.name,
            targetMetafile: dst.meta.name,
            format: s.layout,
            hash: s.algorithm,
            blockSize: s.blockSize,
            virtualSize: s.virtualSize,
            totalBlocks: c.totalBlocks,
            changedBlocks: c.changedBlocks,
            changedBytes: c.changedBytes,
            changedShare: share,
            changedRanges: c.changed.map((r) => ({ firstBlock: r.first, blocks: r.count, offset: r.first * s.blockSize, length: Math.min(r.count * s.blockSize, s.virtualSize - r.first * s.blockSize) })),
          });
        } else if (!args.quiet) {
          out(`source: ${src.image} (${src.meta.name})`);
          out(`target: ${dst.image} (${dst.meta.name})`);
          out(
            c.changedBlocks
              ? `${c.changedBlocks} of ${c.totalBlocks} blocks of ${formatSize(s.blockSize)} differ: ${formatSize(c.changedBytes)} of ${formatSize(s.virtualSize)} (${(share * 100).toFixed(2)}%) would be copied`
              : `no blocks differ (${c.totalBlocks} blocks of ${formatSize(s.blockSize)} compared)`,
          );
        }
      } finally {
        await dst.meta.close();
      }
    } finally {
      await src.meta.close();
    }
  },
};

/** A metafile opened for a command, with the image it describes as the user would name it. */
export interface VerifiedMetafile {
  meta: Metafile;
  /** The image, or the metafile itself when no image belongs to it. */
  image: string;
}

/**
 * Opens the metafile an argument names (an image, whose `<image>.blocklist.bin` is used, or a metafile path) and
 * refuses it when stale. A metafile given directly is checked against the image next to it when that exists.
 */
export async function openVerifiedMetafile(arg: string, opts: OpenOptions): Promise<VerifiedMetafile> {
  const loc = await parseLocation(arg);
  let imageLoc: Location | null;
  let metaLoc: Location;
  if (await looksLikeMetafile(loc)) {
    metaLoc = loc;
    imageLoc = imageLocationForMetafile(loc);
    if (imageLoc && !(await imageLoc.store.stat(imageLoc.path))) imageLoc = null;
  } else {
    imageLoc = loc;
    metaLoc = metafileLocationFor(loc);
  }
  if (!imageLoc) return { meta: await readMetafile(metaLoc), image: displayLocation(metaLoc) };
  const disk = await openDisk(imageLoc, opts);
  try {
    const meta = await readMetafile(metaLoc, { virtualSize: disk.virtualSize, logicalSectorSize: disk.logicalSectorSize });
    try {
      await checkFresh(meta, disk);
    } catch (err) {
      await meta.close();
      throw err;
    }
    return { meta, image: displayLocation(imageLoc) };
  } finally {
    await disk.close();
  }
}

/** A metafile by name, or by the native magic at its start (an image never begins with it in practice). */
async function looksLikeMetafile(loc: Location): Promise<boolean> {
  if (loc.path.endsWith(METAFILE_SUFFIX)) return true;
  const st = await loc.store.stat(loc.path);
  if (!st || st.isDirectory || st.size < 8) return false;
  const f = await loc.store.open(loc.path, 'read');
  try {
    return hasMagic(await f.read(0, 8));
  } finally {
    await f.close();
  }
}
