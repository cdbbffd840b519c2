/**
 * `PUT /import_raw_vdi?sr_id=...` without `vdi`: XAPI's way of importing into a new disk. As XAPI, only a raw body
 * with a Content-Length qualifies (its length is the new disk's size); VHD, QCOW2, XAPI frames and bodies of unknown
 * length answer 400. The served folder is the only SR, so any `sr_id` / `sr_uuid` names it.
 *
 * The new disk is a raw file `<uuid>.raw`, `uuid` fresh (its `<uuid>.raw.uuid` sidecar holds it, so `vdi=<uuid>`
 * finds it as XAPI clients expect), written under a hidden temporary name and renamed once the whole body is
 * durable: a failed or killed upload never leaves a disk behind (the next start removes its temporary file).
 */
import { randomUUID } from 'node:crypto';
import { writeAtomically, writeBytesAtomically } from '../io/atomic.js';
import type { RandomAccessFile } from '../io/store.js';
import { ForwardReader } from '../stream/index.js';
import { RequestError } from '../util/errors.js';
import { isAllZero } from '../util/struct.js';
import { UUID_SUFFIX } from './catalog.js';
import type { ServerConnection } from './connection.js';
import { writableFolder, type Outcome, type ServeContext } from './context.js';
import { answerFailure, messageOf } from './errors.js';
import { bodyFraming, param, type RequestHead } from './request.js';
import type { Task } from './tasks.js';

/** File names of disks made by imports without `vdi`. */
export const NEW_DISK_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.raw$/;
const PIECE = 4 << 20;

/** The SR a request names (`sr_id`, else `sr_uuid`), if any. */
export function srOf(req: RequestHead): string | undefined {
  const sr = param(req, 'sr_id') ?? param(req, 'sr_uuid');
  return sr === '' ? undefined : sr;
}

/** Serves an import into a new disk; `kind` is what the body holds (its format and `chunked` checked for 404s already). */
export async function importNewDisk(
  ctx: ServeContext,
  conn: ServerConnection,
  req: RequestHead,
  task: Task,
  headers: Record<string, string>,
  kind: string,
): Promise<Outcome> {
  if (kind !== 'raw') {
    throw new RequestError(400, `importing a ${kind === 'frames' ? 'chunked' : kind.toUpperCase()} stream as a new disk is not supported (as XAPI): create the disk and give vdi=, or send raw bytes with a Content-Length`);
  }
  const framing = bodyFraming(req);
  if (framing.kind !== 'length') throw new RequestError(400, 'a new disk needs a Content-Length (its size): not enough information to import');
  if (framing.length === 0) {
    // Xen Orchestra's probe (an empty PUT) makes no disk.
    await conn.writeHead(200, { ...headers, 'Content-Type': 'application/octet-stream' });
    ctx.tasks.succeed(task, { bytes: 0, disk: null, probe: true });
    return { status: 200, bytes: 0, task: task.id };
  }
  const uuid = randomUUID();
  const name = `${uuid}.raw`;
  task.disk = name;
  task.total = framing.length;
  const target = writableFolder(ctx).at(name);
  const use = await ctx.locks.acquire(target, 'write');
  try {
    if (/100-continue/i.test(req.headers.get('expect') ?? '')) await conn.writeContinue();
    const reader = new ForwardReader(conn.body(framing), `the body of the PUT creating ${name}`, framing.length);
    const progress = setInterval(() => ctx.tasks.advance(task, reader.position), 500);
    progress.unref();
    try {
      await writeAtomically(target, async (temp) => {
        // The file exists before the 200 goes out, so a server killed after answering leaves a temp file that the
        // next start's recovery finds and removes.
        const f = await temp.store.createExclusive(temp.path);
        try {
          await conn.writeHead(200, { ...headers, 'Content-Type': 'application/octet-stream' });
          await writeBody(f, reader, framing.length);
        } finally {
          await f.close();
        }
      });
    } finally {
      clearInterval(progress);
    }
    // The sidecar comes after the disk: a kill between the two leaves a disk that gets a uuid when first listed.
    await writeBytesAtomically({ store: target.store, path: target.path + UUID_SUFFIX }, Buffer.from(uuid + '\n'), { overwrite: true });
    ctx.tasks.succeed(task, { bytes: reader.position, disk: name, uuid, created: true });
    await use.release();
    await conn.finish();
    return { status: 200, bytes: reader.position, task: task.id, disk: name };
  } catch (err) {
    if (!conn.responded) throw err;
    const message = messageOf(err);
    ctx.tasks.fail(task, message);
    await use.release();
    await answerFailure(conn, message);
    return { status: 200, bytes: conn.bodyBytes, task: task.id, disk: name, error: message };
  } finally {
    await use.release();
  }
}

/** Writes `length` body bytes into the new, empty file `f`, sparse (all-zero pieces stay holes). */
async function writeBody(f: RandomAccessFile, reader: ForwardReader, length: number): Promise<void> {
  await f.truncate(length);
  const buf = Buffer.allocUnsafeSlow(PIECE);
  for (let at = 0; at < length; ) {
    const n = Math.min(PIECE, length - at);
    const data = await reader.read(n, `byte ${at} of the body`, buf);
    if (!isAllZero(data)) await f.write(at, data);
    at += n;
  }
}
