/**
 * The fast path past yargs for the commands whose start-up counts (createmeta, run on whole fleets of images; merge,
 * after every copy; convert and stream, measured against qemu-img and curl; copy and backup, issues 14 and 15's 1% rows): yargs and the 50 modules it loads cost about 150 ms of every
 * run's start-up on this project's 2-core machines (a quarter of `createmeta` on a 4 GiB image; docs/performance.md).
 * This reader takes the plain forms only (`--name value`,
 * `--name=value`, `--flag`, `--no-flag`, one-letter aliases alone, positional words) from the same option specs
 * yargs gets, and returns null for everything else (`--help`, `--version`, `--`, an option given twice, unknown or
 * camel-cased names, a value that is missing, starts with `-` or is not among the choices, `=` after a flag, a
 * required option missing), which
 * then goes to yargs exactly as before. So a command line means the same whichever parser read it, and every error
 * message is still yargs'; a property test checks the two against each other.
 */
import type { Options } from 'yargs';

/**
 * How a command names its positional words: `{ rest: NAME }` takes one or more words as an array (`createmeta
 * <files..>`); a list takes exactly one word per name (`merge <diff>`, `convert <src> <dst>`), none for an empty list (`stream`).
 */
export type Positionals = { rest: string } | readonly string[];

/** What a command offers the fast path: its positionals and its options as data. */
export interface FastCommand {
  fast: { positionals: Positionals; options: () => Record<string, Options> };
}

/**
 * Reads `args` (the command word at `commandAt`, options and positionals around it) against the `globals` and the
 * command's `own` options (which yargs knows only after the command word); the parsed values under their canonical
 * names (positional words under their names, options not given at their `default` as yargs sets them), or null
 * when yargs must decide.
 */
export function parseSimple(
  args: string[],
  commandAt: number,
  positionals: Positionals,
  globals: Record<string, Options>,
  own: Record<string, Options>,
): Record<string, unknown> | null {
  const options = { ...globals, ...own };
  const names = new Map<string, string>();
  for (const [name, spec] of Object.entries(options)) {
    names.set(name, name);
    for (const alias of ([] as string[]).concat(spec.alias ?? [])) names.set(alias, name);
  }
  const out: Record<string, unknown> = {};
  const words: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (i === commandAt) continue;
    if (!a.startsWith('-')) {
      words.push(a);
      continue;
    }
    if (a === '-' || a === '--') return null;
    const long = a.startsWith('--');
    const eq = long ? a.indexOf('=') : -1;
    let word = long ? a.slice(2, eq < 0 ? undefined : eq) : a.slice(1);
    // One-letter aliases only alone (`-q`); bundles (`-qj`) and `-x=1` are yargs' to read.
    if (!long && (word.length !== 1 || !names.has(word) || word.length === names.get(word)!.length)) return null;
    let negated = false;
    if (long && !names.has(word) && word.startsWith('no-') && names.has(word.slice(3))) {
      negated = true;
      word = word.slice(3);
    }
    const name = names.get(word);
    if (name === undefined || name in out || (i < commandAt && !(name in globals))) return null;
    const spec = options[name];
    if (spec.type === 'boolean') {
      // yargs takes a `true`/`false` word after a flag as its value.
      if (eq >= 0 || spec.choices || /^(true|false)$/.test(args[i + 1] ?? '')) return null;
      out[name] = !negated;
      continue;
    }
    if (negated || (spec.type !== undefined && spec.type !== 'string') || spec.array || spec.count || spec.coerce) return null;
    let value: string;
    if (eq >= 0) value = a.slice(eq + 1);
    else {
      if (i + 1 >= args.length || i + 1 === commandAt) return null;
      value = args[++i];
    }
    if (value === '' || value.startsWith('-')) return null;
    if (spec.choices && !([] as unknown[]).concat(spec.choices).includes(value)) return null;
    // An option without a type would come out of yargs as a number when it looks like one: leave those to yargs.
    if (spec.type === undefined && !spec.choices) return null;
    out[name] = value;
  }
  if ('rest' in positionals) {
    if (words.length === 0) return null;
    out[positionals.rest] = words;
  } else {
    // Too few words is yargs' usage error, too many its strict mode's "Unknown argument".
    if (words.length !== positionals.length) return null;
    positionals.forEach((name, k) => (out[name] = words[k]));
  }
  for (const [name, spec] of Object.entries(options)) {
    // A required option missing is yargs' usage error to report.
    if (!(name in out) && spec.demandOption) return null;
    if (!(name in out) && spec.default !== undefined) out[name] = spec.default;
  }
  return out;
}
