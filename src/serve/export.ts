/**
 * `GET /export_raw_vdi`: a disk as raw bytes, a VHD stream in vhd-tool's layout, or a one-pass VHDX or QCOW2, full
 * or as a delta against `base=` (a differencing VHD or VHDX, a QCOW2 overlay backed by the base). Unlike XAPI the length is
 * computed before the first byte and sent as Content-Length (a truncated transfer is then visible), and raw
 * exports answer `Range`. Errors before the head get a status; errors after it
 * cut the connection (the client sees fewer bytes than announced) and fail the task.
 */
import { deltaContent, encode, fullContent, sendToSink, type ContentSource, type StreamFormat } from '../stream/index.js';
import { RequestError } from '../util/errors.js';
import type { ServerConnection } from './connection.js';
import type { Outcome, ServeContext } from './context.js';
import { messageOf } from './errors.js';
import { param, parseRange, type RequestHead } from './request.js';
import type { ExportedDisk } from './source.js';
import type { Task } from './tasks.js';

const CONTENT_TYPES: Record<string, string> = { raw: 'application/octet-stream', vhd: 'application/vhd', qcow2: 'application/x-qemu-disk', vhdx: 'application/octet-stream' };
const PIECE = 4 << 20;

/** The export format asked for; XAPI answers 404 to a format it does not know. */
export function exportFormat(req: RequestHead): StreamFormat {
  const f = (param(req, 'format') ?? 'raw').toLowerCase();
  if (f === 'raw' || f === 'vhd' || f === 'qcow2' || f === 'vhdx') return f;
  throw new RequestError(404, `unknown or unsupported export format '${f.slice(0, 20)}' (raw, vhd, vhdx or qcow2)`);
}

/** Serves one export. `task` is already started; `headers` are the common response headers. */
export async function exportDisk(ctx: ServeContext, conn: ServerConnection, req: RequestHead, task: Task, headers: Record<string, string>): Promise<Outcome> {
  const format = exportFormat(req);
  const name = await ctx.source.resolve(param(req, 'vdi'), 'vdi');
  task.disk = name;
  const baseText = param(req, 'base');
  const baseName = baseText !== undefined ? await ctx.source.resolve(baseText, 'base') : null;
  if (baseName !== null && format === 'raw') throw new RequestError(400, 'a raw export cannot hold a delta (it would read as zeros where the base has data): use format=vhd');
  const opened: ExportedDisk[] = [];
  try {
    const src = await ctx.source.openExport(name);
    opened.push(src);
    const disk = src.disk;
    let content: ContentSource;
    if (baseName !== null) {
      const base = await ctx.source.openExport(baseName);
      opened.push(base);
      const lists = src.list && base.list ? { source: src.list, base: base.list } : undefined;
      content = (await deltaContent(disk, base.disk, { lists })).source;
    } else {
      content = await fullContent(disk, format, { zeroScan: src.zeroScan });
    }
    const stream = await encode(format, content);
    const common = {
      ...headers,
      'Content-Type': CONTENT_TYPES[format],
      'Content-Disposition': `attachment; filename="${fileStem(name)}.${format}"`,
    };
    const range = format === 'raw' ? parseRange(req.headers.get('range'), stream.length) : null;
    if (range === 'unsatisfiable') throw new RequestError(416, `Range outside the ${stream.length}-byte disk`, undefined, { 'Content-Range': `bytes */${stream.length}` });
    if (range) {
      const length = range.end - range.start + 1;
      await conn.writeHead(206, { ...common, 'Accept-Ranges': 'bytes', 'Content-Range': `bytes ${range.start}-${range.end}/${stream.length}`, 'Content-Length': length });
      if (req.method === 'HEAD') return done(ctx, task, 206, 0, name);
      task.total = length;
      let sent = 0;
      for (let at = range.start; at <= range.end; at += PIECE) {
        const n = Math.min(PIECE, range.end + 1 - at);
        await conn.write(await disk.read(at, n));
        sent += n;
        ctx.tasks.advance(task, sent);
      }
      return done(ctx, task, 206, sent, name);
    }
    await conn.writeHead(200, { ...common, ...(format === 'raw' ? { 'Accept-Ranges': 'bytes' } : {}), 'Content-Length': stream.length });
    if (req.method === 'HEAD') return done(ctx, task, 200, 0, name);
    task.total = stream.length;
    let sent = 0;
    try {
      await sendToSink(stream, { write: (d) => conn.write(d) }, (n) => ctx.tasks.advance(task, (sent += n)));
    } catch (err) {
      // The head promised a length: cutting the connection is how the client learns the body is incomplete.
      conn.abort();
      const message = ctx.source.hide(messageOf(err));
      ctx.tasks.fail(task, message);
      return { status: 200, bytes: sent, task: task.id, disk: name, error: message };
    }
    return done(ctx, task, 200, sent, name);
  } finally {
    for (const o of opened) await o.close().catch(() => {});
  }
}

function done(ctx: ServeContext, task: Task, status: number, bytes: number, disk: string): Outcome {
  ctx.tasks.succeed(task, { bytes, disk });
  return { status, bytes, task: task.id, disk };
}

/** A file name without its extension, safe inside a quoted header value. */
export function fileStem(name: string): string {
  const dot = name.lastIndexOf('.');
  return (dot > 0 ? name.slice(0, dot) : name).replace(/[^\w.-]/g, '_');
}
