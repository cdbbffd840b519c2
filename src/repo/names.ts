/** Names in a repository: disk names, restore point ids, and `--at` (an id or a time) resolved to a point. */
import { UsageError } from '../util/errors.js';

/** A disk name: a folder name safe on every store (local, SMB, an object key), never hidden, never `..`. */
const DISK_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** True for a valid disk name. */
export function isDiskName(name: string): boolean {
  return DISK_NAME.test(name);
}

/** Throws a usage error unless `name` is a valid disk name. */
export function checkDiskName(name: string): string {
  if (!isDiskName(name)) {
    throw new UsageError(`invalid disk name '${name}': use 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return name;
}

/** The disk name a source gets by default: its file name without the extension, made safe. */
export function defaultDiskName(sourceBase: string): string {
  const stem = sourceBase.replace(/\.[A-Za-z0-9]{1,6}$/, '');
  const safe = stem.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[._-]+/, '').slice(0, 100);
  return checkDiskName(safe || 'disk');
}

/** A point id pattern: `YYYYMMDDTHHMMSSZ`, optionally `-N` when several points share a second. */
const POINT_ID = /^\d{8}T\d{6}Z(-\d{1,6})?$/;

/** True when `id` has the shape of a restore point id. */
export function isPointId(id: string): boolean {
  return POINT_ID.test(id);
}

/** Orders ids by time, then by their `-N` suffix as a number. */
export function byId(a: string, b: string): number {
  const [ta, na = '1'] = a.split('-');
  const [tb, nb = '1'] = b.split('-');
  return ta < tb ? -1 : ta > tb ? 1 : Number(na) - Number(nb);
}

/** A new point id for `time`, distinct from every id in `taken`. */
export function newPointId(time: Date, taken: Iterable<string>): string {
  const used = new Set(taken);
  const base = time.toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/[-:]/g, '');
  if (!used.has(base)) return base;
  for (let n = 2; ; n++) if (!used.has(`${base}-${n}`)) return `${base}-${n}`;
}

/**
 * A user's time for `--at`: ISO 8601 (`2026-12-03T03:31:15Z`, a date alone, or `2026-12-03 03:31` in UTC when no
 * zone is given). Returns null when `text` is not a time.
 */
export function parseTime(text: string): Date | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?)?(Z|[+-]\d{2}:\d{2})?$/.exec(text.trim());
  if (!m) return null;
  const [, y, mo, d, h = '00', mi = '00', s = '00', ms = '0', zone = 'Z'] = m;
  const date = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}.${ms.padEnd(3, '0')}${zone}`);
  return Number.isNaN(date.getTime()) ? null : date;
}

/**
 * The point `at` names among `points` (oldest first): an exact id, or the newest point taken at or before a time.
 * Without `at`, the newest point.
 */
export function resolvePoint<P extends { id: string; time: string }>(points: P[], at: string | undefined, disk: string): P {
  if (!points.length) throw new UsageError(`disk '${disk}' has no restore points`);
  if (at === undefined || at === 'latest') return points[points.length - 1];
  const exact = points.find((p) => p.id === at);
  if (exact) return exact;
  const when = parseTime(at);
  if (!when) throw new UsageError(`--at '${at}' is neither a restore point id of '${disk}' (see vhdsync list) nor a time such as 2026-12-03T03:31:15Z`);
  let found: P | null = null;
  for (const p of points) if (Date.parse(p.time) <= when.getTime()) found = p;
  if (!found) throw new UsageError(`disk '${disk}' has no restore point at or before ${when.toISOString()} (the oldest is ${points[0].id}, ${points[0].time})`);
  return found;
}
