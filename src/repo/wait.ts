/**
 * `--wait`: a run that finds a disk's lock held waits for it instead of failing at once. The lock itself is
 * decision 0010's; this only retries taking it, polling, until it is free or the time is up.
 */
import { BusyError, UsageError } from '../util/errors.js';
import { notice } from '../util/notice.js';
import type { DiskSession, RepoBackend } from './backend.js';

/** How long to wait for a held lock: `seconds`, or without limit when null. */
export interface LockWait {
  seconds: number | null;
}

/** How often a waiting run tries the lock again. */
const POLL_MS = 1000;

/** Takes `disk`'s lock; with `wait`, retries while another run holds it (one notice on stderr, silenced by -q). */
export async function lockDiskWaiting(repo: RepoBackend, disk: string, op: string, wait?: LockWait): Promise<DiskSession> {
  if (!wait) return repo.lockDisk(disk, op);
  const deadline = wait.seconds === null ? Infinity : performance.now() + wait.seconds * 1000;
  let told = false;
  for (;;) {
    try {
      return await repo.lockDisk(disk, op);
    } catch (err) {
      if (!(err instanceof BusyError)) throw err;
      const left = deadline - performance.now();
      if (left <= 0) throw new BusyError(`${err.message} (waited ${wait.seconds} s for it)`, err.subject);
      if (!told) {
        notice(`disk '${disk}'`, `${err.message.replace(/;.*$/, '')}: waiting for it${wait.seconds === null ? '' : ` (at most ${wait.seconds} s)`}`);
        told = true;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(POLL_MS, left)));
    }
  }
}

/** Parses `--wait[=SECONDS]`: absent = no waiting, bare = without limit. */
export function parseWait(value: string | number | boolean | undefined): LockWait | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true || value === '') return { seconds: null };
  const n = typeof value === 'number' ? value : /^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isFinite(n)) throw new UsageError(`--wait takes a number of seconds (--wait=SECONDS), not '${String(value).slice(0, 40)}'`);
  return { seconds: n };
}
