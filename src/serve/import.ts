/**
 * `PUT /import_raw_vdi`: raw bytes (Content-Length, HTTP chunked, or up to the connection's end), XAPI chunked
 * frames (`chunked` in query or cookie), or a VHD stream whose present sectors are applied (so a differencing
 * stream lands as a delta), as XAPI does: the 200 goes out before the body is read.
 *
 * Unlike XAPI, an import into a VHD, VHDX or QCOW2 disk is all or nothing: the body is written into a hidden
 * differencing image on the disk, `.<name>.import-<id>.<ext>`, and folded in by the crash-safe merge only once the
 * whole body arrived and parsed. A failure before that deletes the hidden image; a kill leaves it for the next
 * start, which deletes it (upload unfinished) or finishes its merge (src/serve/recover.ts). Raw disks have no
 * differencing form and are written in place (refused with --atomic-only).
 */
import { randomBytes } from 'node:crypto';
import { createDisk } from '../formats/index.js';
import type { Disk } from '../formats/disk.js';
import type { Location } from '../io/location.js';
import { hookLocation } from '../sync/kill-hook.js';
import { mergeDiff } from '../sync/merge.js';
import { applyChunked, applyQcow2Stream, applyVhdStream, ForwardReader, readQcow2StreamHead, type Qcow2StreamHead } from '../stream/index.js';
import { CorruptImageError, RequestError, VhdsyncError } from '../util/errors.js';
import type { ServerConnection } from './connection.js';
import { writableFolder, type Outcome, type ServeContext } from './context.js';
import type { DiskUse } from './disk-locks.js';
import { importNewDisk, srOf } from './import-new.js';
import { answerFailure, messageOf } from './errors.js';
import { bodyFraming, param, type RequestHead } from './request.js';
import type { Task } from './tasks.js';

/** Hidden differencing images of imports in progress: `.<disk name>.import-<hex>.<ext>`. */
export const IMPORT_DIFF_RE = /^\.(.+)\.import-([0-9a-f]{16})\.(vhd|vhdx|qcow2)$/;
const EXTENSIONS: Record<string, string> = { vhd: 'vhd', vhdx: 'vhdx', qcow2: 'qcow2' };
const PIECE = 4 << 20;
/** How long a QCOW2 import waits for the first body bytes before answering 200 to a client that waits for it. */
const BODY_GRACE_MS = 500;

/** What the body holds. */
type BodyKind = 'raw' | 'frames' | 'vhd' | 'qcow2';

/** The body kind asked for; XAPI answers 404 to unknown formats and to `chunked` with anything but raw. */
export function importKind(req: RequestHead): BodyKind {
  const format = (param(req, 'format') ?? 'raw').toLowerCase();
  const chunked = param(req, 'chunked') !== undefined;
  if (format !== 'raw' && format !== 'vhd' && format !== 'qcow2') throw new RequestError(404, `unknown or unsupported import format '${format.slice(0, 20)}' (raw, vhd or qcow2)`);
  if (chunked && format !== 'raw') throw new RequestError(404, `cannot handle chunked ${format.toUpperCase()}: chunked frames carry raw data only`);
  return chunked ? 'frames' : format === 'raw' ? 'raw' : format;
}

/** Serves one import. `task` is already started; `headers` are the common response headers. */
export async function importDisk(ctx: ServeContext, conn: ServerConnection, req: RequestHead, task: Task, headers: Record<string, string>): Promise<Outcome> {
  const catalog = writableFolder(ctx);
  const kind = importKind(req);
  const vdi = param(req, 'vdi');
  if ((vdi === undefined || vdi === '') && srOf(req) !== undefined) return importNewDisk(ctx, conn, req, task, headers, kind);
  const framing = bodyFraming(req);
  const name = await catalog.resolve(vdi, 'vdi');
  task.disk = name;
  const target = catalog.at(name);
  if (framing.kind === 'length' && framing.length === 0 && kind !== 'frames') {
    // Xen Orchestra's probe: an empty PUT to learn whether it must follow a redirect. Nothing is written.
    await conn.writeHead(200, { ...headers, 'Content-Type': 'application/octet-stream' });
    ctx.tasks.succeed(task, { bytes: 0, disk: name, probe: true });
    return { status: 200, bytes: 0, task: task.id, disk: name };
  }
  const use = await ctx.locks.acquire(target, 'write');
  let diffLoc: Location | null = null;
  let merging = false;
  try {
    const probe = await catalog.open(name);
    const { format, virtualSize } = probe;
    await probe.close();
    if (format === 'raw' && ctx.settings.atomicOnly) throw new RequestError(403, `${name} is a raw disk, which is written in place; this server runs with --atomic-only`);
    if (kind === 'raw' && framing.kind === 'length' && framing.length > virtualSize) {
      throw new RequestError(413, `the body (${framing.length} bytes) is larger than the disk (${virtualSize} bytes)`);
    }
    const expects = /100-continue/i.test(req.headers.get('expect') ?? '');
    if (expects) await conn.writeContinue();
    const reader = new ForwardReader(conn.body(framing), `the body of the PUT to ${name}`, framing.kind === 'length' ? framing.length : null);
    // A QCOW2 body that is on its way before our answer (after a 100 Continue, or sent at once as Xen Orchestra,
    // curl and python clients do) has its header cluster checked first: what cannot be imported gets a 400 or 413
    // and nothing happens. A client that waits for the 200 (XAPI's contract) gets it first and failures on the task.
    const early = kind === 'qcow2' && framing.kind !== 'close' && (expects || (await conn.bodyArriving(BODY_GRACE_MS)));
    const qcow2Head = early ? await qcow2HeadFor(reader, virtualSize) : undefined;
    await conn.writeHead(200, { ...headers, 'Content-Type': 'application/octet-stream' });
    task.total = framing.kind === 'length' ? framing.length : null;

    const progress = setInterval(() => ctx.tasks.advance(task, reader.position), 500);
    progress.unref();
    try {
      if (format === 'raw') {
        const disk = await catalog.open(name, true);
        try {
          await applyBody(kind, reader, disk, qcow2Head);
          await disk.flush();
        } finally {
          await disk.close();
        }
      } else {
        diffLoc = catalog.at(`.${name}.import-${randomBytes(8).toString('hex')}.${EXTENSIONS[format]}`);
        const parent = await catalog.open(name);
        let diff: Disk;
        try {
          diff = await createDisk(hookLocation(diffLoc), { format, type: 'differencing', parent, finalLocation: diffLoc });
        } catch (err) {
          await parent.close().catch(() => {});
          throw err;
        }
        try {
          await applyBody(kind, reader, diff, qcow2Head);
          await diff.flush();
        } finally {
          await diff.close();
          await parent.close().catch(() => {});
        }
        merging = true;
        await mergeDiff(diffLoc, { lock: use.lock ?? undefined });
      }
    } finally {
      clearInterval(progress);
    }
    ctx.tasks.succeed(task, { bytes: reader.position, disk: name, uuid: await catalog.uuidOf(name).catch(() => null) });
    // Released before the connection closes: a client that saw the end may import into the disk again at once.
    await use.release();
    await conn.finish();
    return { status: 200, bytes: reader.position, task: task.id, disk: name };
  } catch (err) {
    if (!conn.responded) throw err;
    const message = messageOf(err);
    ctx.tasks.fail(task, message);
    if (merging) {
      // The merge records its progress; finishing it now is the way to a consistent disk.
      await retryMerge(ctx, diffLoc as Location, use, name);
    } else if (diffLoc) {
      await diffLoc.store.unlink(diffLoc.path).catch(() => {});
    }
    await use.release();
    await answerFailure(conn, message);
    return { status: 200, bytes: conn.bodyBytes, task: task.id, disk: name, error: message };
  } finally {
    await use.release();
  }
}

/** Writes the body onto `disk` as its kind says (`qcow2Head`: a QCOW2 head already read). */
async function applyBody(kind: BodyKind, reader: ForwardReader, disk: Disk, qcow2Head?: Qcow2StreamHead): Promise<void> {
  if (kind === 'frames') await applyChunked(reader, disk);
  else if (kind === 'vhd') await applyVhdStream(reader, disk);
  else if (kind === 'qcow2') await applyQcow2Stream(reader, disk, { head: qcow2Head ?? (await qcow2HeadFor(reader, disk.virtualSize)) });
  else await applyRaw(reader, disk);
}

/**
 * Reads a QCOW2 stream's header cluster and checks it against the disk: 400 for what cannot be read in one pass,
 * 413 for a disk larger than the target. A smaller disk is accepted, as XAPI does: its clusters land where they say.
 */
async function qcow2HeadFor(reader: ForwardReader, virtualSize: number): Promise<Qcow2StreamHead> {
  let head: Qcow2StreamHead;
  try {
    head = await readQcow2StreamHead(reader);
  } catch (err) {
    if (err instanceof VhdsyncError && !(err instanceof RequestError)) throw new RequestError(400, err.describe());
    throw err;
  }
  if (head.virtualSize > virtualSize) throw new RequestError(413, `the QCOW2 stream's disk (${head.virtualSize} bytes) is larger than the disk (${virtualSize} bytes)`);
  return head;
}

/** Raw bytes from offset 0, in pieces; a body longer than the disk fails before the piece that would pass its end. */
async function applyRaw(reader: ForwardReader, disk: Disk): Promise<void> {
  const buf = Buffer.allocUnsafeSlow(PIECE);
  for (let at = 0; ; at += PIECE) {
    const n = reader.length !== null ? Math.min(PIECE, reader.length - at) : PIECE;
    if (n <= 0) break;
    const got = await readUpTo(reader, n, buf);
    if (got.length === 0) break;
    if (at + got.length > disk.virtualSize) throw new CorruptImageError(`the body is larger than the disk (${disk.virtualSize} bytes)`, reader.name);
    await disk.write(at, got);
    if (got.length < n) break;
  }
}

/** Reads `n` bytes, or fewer when the input ends first. */
async function readUpTo(reader: ForwardReader, n: number, into: Buffer): Promise<Buffer> {
  let got = 0;
  while (got < n) {
    const part = await reader.readSome(n - got, into.subarray(got));
    if (part === 0) break;
    got += part;
  }
  return into.subarray(0, got);
}

/** A merge that failed part-way is resumed once; if that fails too, the disk is refused until the next start. */
async function retryMerge(ctx: ServeContext, diffLoc: Location, use: DiskUse, name: string): Promise<void> {
  try {
    await mergeDiff(diffLoc, { lock: use.lock ?? undefined });
  } catch (err) {
    ctx.locks.quarantine(writableFolder(ctx).at(name), `an import's merge stopped part-way (${messageOf(err)}); restart vhdsync serve to finish it`);
  }
}
