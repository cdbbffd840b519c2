/**
 * TEST HOOK budget shared by every store decorator that the crash tests kill through (sync/kill-hook.ts for byte
 * stores, io/object-kill-hook.ts for object stores): with `VHDSYNC_TEST_KILL_AFTER_WRITES=N` in the environment,
 * the process kills itself with SIGKILL just before its (N+1)-th mutation, whichever store it goes to. Without
 * the variable nothing is counted.
 */
const ENV = 'VHDSYNC_TEST_KILL_AFTER_WRITES';

let remaining: number | null = null;
let parsed = false;

/** The mutations left before the kill, or null when the hook is not armed. */
export function killBudget(): number | null {
  if (!parsed) {
    parsed = true;
    const v = process.env[ENV];
    const n = v === undefined || v === '' ? NaN : Number(v);
    remaining = Number.isSafeInteger(n) && n >= 0 ? n : null;
    if (remaining !== null) {
      const armed = remaining;
      // Lets a test learn how many kill points a run has: run once with a huge budget and read this line.
      process.on('exit', () => process.stderr.write(`vhdsync-test-hook: ${armed - (remaining ?? 0)} mutations\n`));
    }
  }
  return remaining;
}

/** Counts one mutation; dies when the budget is spent. */
export function countMutation(): void {
  if (killBudget() === null || remaining === null) return;
  if (remaining === 0) process.kill(process.pid, 'SIGKILL');
  remaining--;
}
