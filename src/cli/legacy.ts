/**
 * VhdBlockBackup's flag syntax (`--createmeta f...`, `--check s t`, `--copy [--createmeta] [--diffdir=DIR] s t`)
 * mapped onto the subcommands, so scripts written for it keep working.
 */
const LEGACY: Array<[flag: string, command: string]> = [
  ['--copy', 'copy'],
  ['--check', 'check'],
  ['--merge', 'merge'],
  ['--validate', 'validate'],
  ['--createmeta', 'createmeta'],
];

/** Rewrites a VhdBlockBackup-style argument list into subcommand form; other lists pass unchanged. */
export function rewriteLegacyArgs(args: string[]): string[] {
  const firstPositional = args.find((a) => !a.startsWith('-'));
  if (firstPositional !== undefined && args.indexOf(firstPositional) === 0) return args;
  for (const [flag, command] of LEGACY) {
    const i = args.indexOf(flag);
    if (i < 0) continue;
    const rest = args.filter((_, j) => j !== i);
    // In `--copy --createmeta`, --createmeta stays a flag of copy.
    return [command, ...rest];
  }
  return args;
}
