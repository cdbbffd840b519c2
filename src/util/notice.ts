/**
 * One-line notices on stderr from layers below the CLI (a lock being watched, an image read despite a flag), in
 * the same `vhdsync: <subject>: <text>` shape as errors. `-q` silences them; errors are never silenced.
 */
let silenced = false;

/** Turns notices off (the CLI's `-q`) or on. */
export function silenceNotices(on: boolean): void {
  silenced = on;
}

/** Prints one notice line about `subject`, unless silenced. */
export function notice(subject: string, text: string): void {
  if (!silenced) process.stderr.write(`vhdsync: ${subject}: ${text}\n`);
}
