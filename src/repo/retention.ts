/**
 * Retention: which restore points a policy keeps. Rules add up (a point kept by any rule stays), the newest point is
 * always kept, and `--keep-daily D` / `--keep-weekly W` keep the newest point of each of the D (W) most recent UTC
 * days (ISO weeks, Monday to Sunday) that have points, as restic and borg count them.
 */
import { UsageError } from '../util/errors.js';

/** A retention policy; absent rules keep nothing by themselves. */
export interface RetentionPolicy {
  keep?: number;
  daily?: number;
  weekly?: number;
}

/** Throws a usage error for counts that are not positive integers. */
export function checkPolicy(p: RetentionPolicy): RetentionPolicy {
  for (const [flag, v] of [['--keep', p.keep], ['--keep-daily', p.daily], ['--keep-weekly', p.weekly]] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw new UsageError(`${flag} must be a whole number of at least 1 (got ${v})`);
  }
  return p;
}

/** True when the policy has at least one rule. */
export function hasRule(p: RetentionPolicy): boolean {
  return p.keep !== undefined || p.daily !== undefined || p.weekly !== undefined;
}

function dayOf(t: number): string {
  return new Date(t).toISOString().slice(0, 10);
}

/** The ISO week of a UTC time, as the date of its Monday. */
function weekOf(t: number): string {
  const d = new Date(t);
  const monday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) - ((d.getUTCDay() + 6) % 7) * 86_400_000;
  return dayOf(monday);
}

/** The newest point of each of the `count` most recent periods (by `period`) that have points. */
function newestPerPeriod(points: Array<{ id: string; time: string }>, count: number, period: (t: number) => string): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  for (let i = points.length - 1; i >= 0 && seen.size < count; i--) {
    const key = period(Date.parse(points[i].time));
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(points[i].id);
  }
  return out;
}

/** The ids a policy keeps among `points` (oldest first). With no rule, every point is kept. */
export function selectKept(points: Array<{ id: string; time: string }>, policy: RetentionPolicy): Set<string> {
  if (!hasRule(policy) || !points.length) return new Set(points.map((p) => p.id));
  const kept = new Set<string>([points[points.length - 1].id]);
  if (policy.keep) for (const p of points.slice(-policy.keep)) kept.add(p.id);
  if (policy.daily) for (const id of newestPerPeriod(points, policy.daily, dayOf)) kept.add(id);
  if (policy.weekly) for (const id of newestPerPeriod(points, policy.weekly, weekOf)) kept.add(id);
  return kept;
}
