import type { Argv, Options } from 'yargs';
import type { DiskFormat, OpenOptions } from '../formats/disk.js';
import { registeredFormats } from '../formats/open.js';
import type { ObjectStoreOptions } from '../io/object-stores.js';
import { UsageError } from '../util/errors.js';

/** Options that change how images are opened. */
export interface OpenArgs extends InputFormatArgs, VhdSizeArgs {
  'ignore-parent-mismatch'?: boolean;
  'ignore-checksums'?: boolean;
}

/** The format forced on the image(s) a command names, instead of detecting it. */
export interface InputFormatArgs {
  'input-format'?: DiskFormat;
}

/** Which VHD footer field gives the virtual size, when the creator's rule is wrong for an image. */
export interface VhdSizeArgs {
  'vhd-size'?: 'chs' | 'current';
}

/** `--vhd-size chs|current`. */
export const VHD_SIZE_OPTION = {
  choices: ['chs', 'current'] as const,
  describe: "VHD virtual size from the CHS geometry or from current_size (default: CHS for Virtual PC/Server images, current_size for all others)",
} satisfies Options;

/** Adds `--vhd-size chs|current`. */
export function withVhdSize<T>(y: Argv<T>): Argv<T & VhdSizeArgs> {
  return y.option('vhd-size', VHD_SIZE_OPTION) as Argv<T & VhdSizeArgs>;
}

/** `--input-format`, also accepted as `--format` with `formatAlias` (see withInputFormat). */
function inputFormatOption(formatAlias: boolean): Options {
  return {
    choices: registeredFormats(),
    ...(formatAlias ? { alias: 'format' } : {}),
    describe: 'take the image as this format instead of detecting it (raw: read a file that looks like another container as a raw disk)',
  };
}

/** `--input-format` (also as `--format` with `formatAlias`) as a yargs option spec, for a command that declares its options as data. */
export function inputFormatSpec(formatAlias = false): Options {
  return inputFormatOption(formatAlias);
}

/**
 * Adds `--input-format`; `formatAlias` also accepts it as `--format` on commands where `--format` means nothing
 * else (on create, convert and createmeta it names the output or metafile format).
 */
export function withInputFormat<T>(y: Argv<T>, formatAlias = false): Argv<T & InputFormatArgs> {
  return y.option('input-format', inputFormatOption(formatAlias)) as Argv<T & InputFormatArgs>;
}

/** The image-opening options but `--input-format`, as yargs option specs. */
const OPEN_FLAGS = {
  'vhd-size': VHD_SIZE_OPTION,
  'ignore-parent-mismatch': {
    type: 'boolean',
    describe: "open a differencing image even if its parent's id does not match (only if you know the parent is unchanged)",
  },
  'ignore-checksums': { type: 'boolean', describe: 'read VHD images whose checksums are wrong (recovery)' },
} satisfies Record<string, Options>;

/** The image-opening options as yargs option specs (for a command that declares its options as data). */
export function openOptionSpecs(formatAlias = false): Record<string, Options> {
  return { 'input-format': inputFormatOption(formatAlias), ...OPEN_FLAGS };
}

/** Adds the image-opening options to a command. */
export function withOpenOptions<T>(y: Argv<T>, formatAlias = false): Argv<T & OpenArgs> {
  return y.options(openOptionSpecs(formatAlias)) as Argv<T & OpenArgs>;
}

/** The image-opening options but `--input-format`, as yargs option specs, for a command that names its source's format its own way (`stream`). */
export function openFlagSpecs(): Record<string, Options> {
  return { ...OPEN_FLAGS };
}

/** Converts parsed option values into OpenOptions. */
export function openOptionsFrom(args: OpenArgs, writable = false): OpenOptions {
  return {
    writable,
    ignoreParentMismatch: Boolean(args['ignore-parent-mismatch']),
    ignoreChecksums: Boolean(args['ignore-checksums']),
    format: args['input-format'],
    vhdSize: args['vhd-size'],
  };
}

const EXTENSIONS: Record<string, DiskFormat> = {
  vhd: 'vhd',
  avhd: 'vhd',
  vhdx: 'vhdx',
  avhdx: 'vhdx',
  qcow2: 'qcow2',
  raw: 'raw',
  img: 'raw',
  bin: 'raw',
};

/** The format an output file gets when --format is not given: from its extension. */
export function formatForOutput(file: string, explicit?: string): DiskFormat {
  if (explicit) return explicit as DiskFormat;
  const ext = /\.([a-z0-9]+)$/i.exec(file)?.[1]?.toLowerCase() ?? '';
  const f = EXTENSIONS[ext];
  if (!f) throw new UsageError(`cannot tell the output format from the name '${file}': add --format raw|vhd|vhdx|qcow2`);
  return f;
}

/** The formats `--format` accepts for outputs. */
export const OUTPUT_FORMATS = ['raw', 'vhd', 'vhdx', 'qcow2'] as const;

/** How to reach a repository on an object store (`s3://`): the AWS profile and the addressing style. */
export interface ObjectStoreArgs {
  profile?: string;
  's3-path-style'?: boolean;
}

/** `--profile` and `--s3-path-style` as yargs option specs (read by yargs and by the fast path, fast-args.ts). */
export const OBJECT_STORE_OPTIONS = {
  profile: { type: 'string', describe: 'for s3:// repositories: the profile of the shared AWS config and credentials files (default AWS_PROFILE, else "default")' },
  's3-path-style': {
    type: 'boolean',
    describe: 'for s3:// repositories: put the bucket in the path, not the host name (Ceph, MinIO; on by default when an endpoint is set, --no-s3-path-style turns it off)',
  },
} satisfies Record<string, Options>;

/** Adds `--profile` and `--s3-path-style` (they apply only when the repository is `s3://BUCKET/PREFIX`). */
export function withObjectStoreOptions<T>(y: Argv<T>): Argv<T & ObjectStoreArgs> {
  return y.options(OBJECT_STORE_OPTIONS) as Argv<T & ObjectStoreArgs>;
}

/** The object-store options as the repository layer takes them. */
export function objectStoreOptionsFrom(args: ObjectStoreArgs): ObjectStoreOptions {
  return { profile: args.profile, pathStyle: args['s3-path-style'] };
}
