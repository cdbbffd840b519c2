/**
 * The name, usage line and one-line description of every subcommand, in the order `--help` lists them. Kept
 * apart from the commands themselves (and free of imports) so the CLI can list them all while loading only the
 * one that runs.
 */
export const CATALOG = {
  create: { command: 'create <file>', describe: 'create an empty image (fixed or dynamic) or a differencing image on --parent' },
  info: { command: 'info <file>', describe: 'show format, type, sizes, ids, parent and allocation of an image' },
  get: { command: 'get <file> <field>', describe: 'print one field of an image (virtual-size, format, type, block-size, uuid, parent, ...)' },
  convert: { command: 'convert <src> <dst>', describe: 'copy an image (flattening its parent chain) into a new raw, VHD or VHDX image' },
  copy: {
    command: 'copy <source> <target>',
    describe: 'write the blocks where SOURCE differs from TARGET into TARGET_diff.<ext>, a differencing image on TARGET',
  },
  merge: { command: 'merge <diff>', describe: 'fold a differencing image into its parent (crash-safe; rerun to resume) and rotate the metafile' },
  createmeta: {
    command: 'createmeta <files..>',
    describe: 'hash images block by block into <image>.blocklist.bin (quoted wildcards * and ? are expanded)',
  },
  check: { command: 'check <source> <target>', describe: "compare two images' metafiles and report the blocks and bytes that differ (exit 0 either way)" },
  validate: {
    command: 'validate <file>',
    describe: 're-hash an image and list block ranges that differ from its metafile (exit 1 if any); --createmeta rewrites it',
  },
  stream: {
    command: 'stream',
    describe:
      "send an image (full or relative to a base) as raw, a VHD stream, VHDX, QCOW2 or XAPI chunked frames to a file, a pipe or HTTP(S), as vhd-tool's stream does",
  },
  serve: {
    command: 'serve [dir]',
    describe: "serve the images in DIR over HTTP(S) as XAPI's /import_raw_vdi and /export_raw_vdi do (imports into VHD/VHDX/QCOW2 are all or nothing), or a backup repository's restore points read-only",
  },
  backup: {
    command: 'backup <sources..>',
    describe: 'add a restore point of each source image to a backup repository (only changed blocks are stored)',
  },
  list: {
    command: 'list [name]',
    describe: "show a backup repository's disks and their restore points, oldest first",
  },
  restore: {
    command: 'restore [name]',
    describe: 'write a disk as it was at a restore point into a new image (every block checked against the point\'s metafile)',
  },
  prune: {
    command: 'prune [name]',
    describe: 'drop restore points beyond a retention policy (the oldest is merged forward); without a policy, only finish an interrupted prune',
  },
  verify: {
    command: 'verify [name]',
    describe: 'check every restore point of a backup repository against its metafile (exit 1 on damage)',
  },
} as const;

/** A subcommand's name. */
export type CommandName = keyof typeof CATALOG;
