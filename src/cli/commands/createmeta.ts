import type { CommandModule, Options } from 'yargs';
import type { FastCommand } from '../fast-args.js';
import { CATALOG } from './catalog.js';
import { openDisk } from '../../formats/index.js';
import { displayLocation, parseLocation, withPath, type Location } from '../../io/location.js';
import { createMetafile, describeCreated, METAFILE_SUFFIX, NATIVE_ALGORITHMS, type CreateMetafileResult, type MetafileLayout } from '../../meta/index.js';
import { NotFoundError, VhdsyncError } from '../../util/errors.js';
import { createProgress } from '../../util/progress.js';
import { parseSize } from '../../util/units.js';
import { openOptionSpecs, openOptionsFrom, type OpenArgs } from '../options.js';
import { JSON_OPTION, out, outJson, wantProgress, type GlobalArgs } from '../output.js';

interface CreatemetaArgs extends OpenArgs, GlobalArgs {
  files: string[];
  'block-size'?: string;
  hash?: 'xxh128' | 'sha256';
  format?: MetafileLayout;
}

/** createmeta's options (its positional `files` aside), as data: yargs reads them, and so does the fast path (fast-args.ts). */
export function createmetaOptions(): Record<string, Options> {
  return {
    ...openOptionSpecs(),
    json: JSON_OPTION,
    'block-size': { type: 'string', describe: 'block size, a power of two from 4K to 256M (default 2M)' },
    hash: { choices: NATIVE_ALGORITHMS, describe: 'digest: xxh128 (default, fast) or sha256 (for guests that could craft collisions)' },
    format: { choices: ['native', 'vbb'] as const, describe: "metafile layout: native (default) or vbb (VhdBlockBackup's SHA-1 list)" },
  };
}

/** `vhdsync createmeta`: hashes images into `<image>.blocklist.bin`. */
export const createmetaCommand: CommandModule<object, CreatemetaArgs> & FastCommand = {
  ...CATALOG.createmeta,
  builder: (y) =>
    y
      .positional('files', { type: 'string', array: true, demandOption: true, describe: 'images, or quoted patterns such as "/vms/*.vhdx"' })
      .options(createmetaOptions()) as never,
  fast: { positionals: { rest: 'files' }, options: createmetaOptions },
  handler: async (args) => {
    const blockSize = args['block-size'] !== undefined ? parseSize(args['block-size'], 'block size') : undefined;
    const images: Location[] = [];
    for (const f of args.files) images.push(...(await expandPattern(f)));
    const results: Array<ReturnType<typeof summaryOf>> = [];
    const failures: VhdsyncError[] = [];
    for (const image of images) {
      try {
        const started = Date.now();
        const r = await createOne(image, args, blockSize);
        const seconds = (Date.now() - started) / 1000;
        results.push(summaryOf(image, r, seconds));
        if (!args.json && !args.quiet) out(describeCreated(r, seconds));
      } catch (err) {
        // One image failing must not stop the others; with a single image the error is simply reported.
        if (images.length === 1 || !(err instanceof VhdsyncError)) throw err;
        process.stderr.write(`vhdsync: ${err.describe()}\n`);
        failures.push(err);
      }
    }
    if (args.json) outJson(results);
    if (failures.length) throw new VhdsyncError(`${failures.length} of ${images.length} images failed (see above)`);
  },
};

async function createOne(image: Location, args: CreatemetaArgs, blockSize: number | undefined): Promise<CreateMetafileResult> {
  const disk = await openDisk(image, openOptionsFrom(args));
  try {
    const progress = createProgress(`hashing ${disk.location.store.paths.basename(disk.location.path)}`, disk.virtualSize, wantProgress(args));
    const r = await createMetafile(disk, { layout: args.format, algorithm: args.hash, blockSize, onProgress: (n) => progress.advance(n) });
    progress.finish();
    return r;
  } finally {
    await disk.close();
  }
}

function summaryOf(image: Location, r: CreateMetafileResult, seconds: number) {
  return {
    file: displayLocation(image),
    metafile: displayLocation(r.metafile),
    format: r.layout,
    hash: r.algorithm,
    blockSize: r.blockSize,
    virtualSize: r.virtualSize,
    blocks: r.blockCount,
    dataBlocks: r.blocks.data,
    zeroBlocks: r.blocks.zero,
    unallocatedBlocks: r.blocks.unallocated,
    bytesRead: r.bytesRead,
    seconds,
  };
}

/**
 * Expands `*` and `?` in the last path component through the store's own listing (so quoted patterns work the
 * same on every shell and on SMB). Metafiles and hidden temp files never match. A name without wildcards is
 * returned as is.
 */
export async function expandPattern(text: string): Promise<Location[]> {
  const loc = await parseLocation(text);
  const store = loc.store;
  const paths = store.paths;
  const base = paths.basename(loc.path);
  if (!/[*?]/.test(base)) return [loc];
  const dir = paths.dirname(loc.path);
  if (/[*?]/.test(dir)) throw new NotFoundError('wildcards are supported in the last path component only', text);
  const re = new RegExp(`^${base.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 's');
  const names = (await store.list(dir)).filter(
    (n) => re.test(n) && !n.endsWith(METAFILE_SUFFIX) && !n.endsWith('.partial') && (!n.startsWith('.') || base.startsWith('.')),
  );
  const found: Location[] = [];
  for (const n of names.sort()) {
    const p = paths.join(dir, n);
    const st = await store.stat(p);
    if (st && !st.isDirectory) found.push(withPath(loc, p));
  }
  if (!found.length) throw new NotFoundError('no files match', text);
  return found;
}
