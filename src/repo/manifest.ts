/**
 * A disk's manifest (`<disk>/manifest.json`): its restore points, oldest first, and an interrupted prune step.
 * UTF-8 JSON whose last member is `"checksum": "sha256:<64 hex>"`: the SHA-256 of the file's bytes with those 64
 * digits written as `0`s (docs/repository.md). Written only through the backend's atomic replace.
 */
import { createHash } from 'node:crypto';
import { NATIVE_ALGORITHMS } from '../meta/index.js';
import { byId, isPointId } from './names.js';

/** Manifests larger than this are refused before they are parsed (a few thousand points fit in far less). */
export const MANIFEST_LIMIT = 4 << 20;
export const MANIFEST_FORMAT = 'vhdsync-disk';
export const MANIFEST_VERSION = 1;

/**
 * How a point's image holds its content: `full` a standalone dynamic image, `clone` a full image that shares
 * unchanged blocks with its predecessor's file (reflink), `diff` a differencing image whose parent is `parent`.
 */
export type PointKind = 'full' | 'clone' | 'diff';

/** One restore point. */
export interface RestorePoint {
  id: string;
  /** When the backup that made it started (ISO 8601, UTC). */
  time: string;
  /** File name of its image in the disk's folder; its metafile is `<image>.blocklist.bin`. */
  image: string;
  kind: PointKind;
  /** The point whose image is this image's parent (kind `diff`), else null. */
  parent: string | null;
  virtualSize: number;
  /** Virtual bytes that differ from the previous point (for the first point: the bytes that are not zero). */
  changedBytes: number;
  /** Where it was backed up from, as the user named it (never with a password). */
  source: string;
}

/** A prune step in progress: `drop` is being folded into its child `into` (docs/repository.md, "Pruning"). */
export interface PendingFold {
  op: 'fold';
  drop: string;
  into: string;
}

/** A disk's manifest. */
export interface DiskManifest {
  format: typeof MANIFEST_FORMAT;
  version: number;
  disk: string;
  /** Incremented on every write, so a reader can tell two states apart. */
  generation: number;
  /** The metafiles' digest and block size: fixed at the first backup, so every point's list compares. */
  hash: (typeof NATIVE_ALGORITHMS)[number];
  blockSize: number;
  points: RestorePoint[];
  pending: PendingFold | null;
  /**
   * A random token of the run that wrote this manifest (object repositories), so that two runs never write the same
   * bytes: a conditional create read back after a lost answer is then ours exactly when the bytes are. Absent in
   * folder repositories and in manifests of older versions.
   */
  writer?: string;
  /**
   * The high-water mark of point ids: the largest id this disk's manifest ever listed, kept when a point is dropped.
   * Ids come from the backing-up host's clock, which can step back, so the last point is not always the largest; an
   * object repository records an unlisted map only when its id is above this mark (point-proof.ts, pastManifest).
   * Absent in manifests of older versions (and in folder repositories until a prune): highWater falls back to the
   * largest listed id.
   */
  highest?: string;
}

/** The largest point id `m` lists or ever listed (its `highest`), or null when it has neither. */
export function highWater(m: DiskManifest): string | null {
  let top = m.highest ?? null;
  for (const p of m.points) if (top === null || byId(p.id, top) > 0) top = p.id;
  return top;
}

/** Why a manifest cannot be read; the caller names the file. */
export class ManifestProblem extends Error {}

/** A new, empty manifest. */
export function emptyManifest(disk: string, hash: DiskManifest['hash'], blockSize: number): DiskManifest {
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, disk, generation: 0, hash, blockSize, points: [], pending: null };
}

const ZEROS = '0'.repeat(64);
const CHECKSUM_AT_END = /"checksum"\s*:\s*"sha256:([0-9a-f]{64})"\s*\}\s*$/;

/** The manifest's bytes, checksum included. */
export function serializeManifest(m: DiskManifest): Buffer {
  const body = {
    format: m.format,
    version: m.version,
    disk: m.disk,
    generation: m.generation,
    hash: m.hash,
    blockSize: m.blockSize,
    points: m.points.map((p) => ({ id: p.id, time: p.time, image: p.image, kind: p.kind, parent: p.parent, virtualSize: p.virtualSize, changedBytes: p.changedBytes, source: p.source })),
    pending: m.pending,
    ...(m.writer === undefined ? {} : { writer: m.writer }),
    ...(m.highest === undefined ? {} : { highest: m.highest }),
    checksum: `sha256:${ZEROS}`,
  };
  const text = JSON.stringify(body, null, 2) + '\n';
  const at = text.lastIndexOf(ZEROS);
  const digest = createHash('sha256').update(text).digest('hex');
  return Buffer.from(text.slice(0, at) + digest + text.slice(at + 64));
}

/** Parses and checks a manifest; throws ManifestProblem saying what is wrong. */
export function parseManifest(bytes: Buffer): DiskManifest {
  if (bytes.length > MANIFEST_LIMIT) throw new ManifestProblem(`larger than ${MANIFEST_LIMIT} bytes`);
  const text = bytes.toString('utf8');
  const m = CHECKSUM_AT_END.exec(text);
  if (!m) throw new ManifestProblem(bytes.length ? 'truncated or not a manifest (no checksum at its end)' : 'empty');
  const at = m.index + m[0].indexOf(m[1]);
  const digest = createHash('sha256')
    .update(text.slice(0, at) + ZEROS + text.slice(at + 64))
    .digest('hex');
  if (digest !== m[1]) throw new ManifestProblem('checksum mismatch (the file was changed or damaged)');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ManifestProblem('not valid JSON');
  }
  return checkManifest(raw);
}

function fail(why: string): never {
  throw new ManifestProblem(why);
}

const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$/;

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${what} is not a non-negative integer`);
  return v;
}

function text(v: unknown, what: string, max = 4096): string {
  if (typeof v !== 'string' || v.length > max) fail(`${what} is not a string`);
  return v;
}

/** Checks every field of a parsed manifest: types, ids, names, and that parents and pending steps name known points. */
function checkManifest(raw: unknown): DiskManifest {
  if (!raw || typeof raw !== 'object') fail('not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.format !== MANIFEST_FORMAT) fail(`format is not '${MANIFEST_FORMAT}'`);
  const version = count(o.version, 'version');
  if (version !== MANIFEST_VERSION) fail(`version ${version} (written by a newer vhdsync?)`);
  const hash = o.hash as DiskManifest['hash'];
  if (!NATIVE_ALGORITHMS.includes(hash)) fail('unknown hash');
  const blockSize = count(o.blockSize, 'blockSize');
  if (blockSize < 4096 || blockSize > 256 << 20 || (blockSize & (blockSize - 1)) !== 0) fail('blockSize is not a power of two from 4 KiB to 256 MiB');
  if (!Array.isArray(o.points)) fail('points is not a list');
  const seen = new Map<string, RestorePoint>();
  const points: RestorePoint[] = [];
  for (const [i, rp] of (o.points as unknown[]).entries()) {
    if (!rp || typeof rp !== 'object') fail(`point ${i} is not an object`);
    const p = rp as Record<string, unknown>;
    const id = text(p.id, `point ${i} id`, 40);
    if (!isPointId(id) || seen.has(id)) fail(`point ${i} has a bad or repeated id`);
    const time = text(p.time, `point ${id} time`, 40);
    if (Number.isNaN(Date.parse(time))) fail(`point ${id} has a bad time`);
    const image = text(p.image, `point ${id} image`, 160);
    if (!IMAGE_NAME.test(image)) fail(`point ${id} has a bad image name`);
    const kind = p.kind as PointKind;
    if (kind !== 'full' && kind !== 'clone' && kind !== 'diff') fail(`point ${id} has an unknown kind`);
    const parent = p.parent === null ? null : text(p.parent, `point ${id} parent`, 40);
    if ((kind === 'diff') !== (parent !== null)) fail(`point ${id}: only a diff has a parent`);
    if (parent !== null && !seen.has(parent)) fail(`point ${id} names a parent that is not an earlier point`);
    const point: RestorePoint = {
      id,
      time,
      image,
      kind,
      parent,
      virtualSize: count(p.virtualSize, `point ${id} virtualSize`),
      changedBytes: count(p.changedBytes, `point ${id} changedBytes`),
      source: text(p.source, `point ${id} source`),
    };
    seen.set(id, point);
    points.push(point);
  }
  let pending: PendingFold | null = null;
  if (o.pending !== null) {
    const q = o.pending as Record<string, unknown>;
    if (!q || q.op !== 'fold') fail('pending is not a fold step');
    const drop = text(q.drop, 'pending drop', 40);
    const into = text(q.into, 'pending into', 40);
    if (!seen.has(drop) || seen.get(into)?.parent !== drop) fail('pending fold does not name a point and its child');
    pending = { op: 'fold', drop, into };
  }
  const m: DiskManifest = { format: MANIFEST_FORMAT, version, disk: text(o.disk, 'disk', 100), generation: count(o.generation, 'generation'), hash, blockSize, points, pending };
  if (o.writer !== undefined) m.writer = text(o.writer, 'writer', 64);
  if (o.highest !== undefined) {
    const h = text(o.highest, 'highest', 40);
    if (!isPointId(h)) fail('highest is not a restore point id');
    m.highest = h;
  }
  return m;
}

/** The points a pending fold makes unreadable until it is finished: the dropped one and every point reading through it. */
export function pointsAffected(m: DiskManifest): Set<string> {
  const out = new Set<string>();
  if (!m.pending) return out;
  out.add(m.pending.drop);
  for (const p of m.points) if (p.parent && out.has(p.parent)) out.add(p.id);
  return out;
}
