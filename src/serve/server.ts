/**
 * `serve`'s listener: accepts connections (plain or TLS), reads one request per connection, authenticates it,
 * routes it to the import, export, session, task or listing handler, and logs one entry per request.
 */
import { randomUUID } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Location } from '../io/location.js';
import type { RepoBackend } from '../repo/backend.js';
import { RequestError, UsageError } from '../util/errors.js';
import { Authenticator, DEFAULT_RATE_LIMIT, type RateLimit } from './auth.js';
import { Catalog } from './catalog.js';
import { ServerConnection } from './connection.js';
import type { Outcome, ServeContext, ServeSettings } from './context.js';
import { DiskLocks } from './disk-locks.js';
import { statusOf } from './errors.js';
import { exportDisk } from './export.js';
import { importDisk } from './import.js';
import { recoverImports, type Recovered } from './recover.js';
import { RepositoryCatalog } from './repo-catalog.js';
import type { DiskSource } from './source.js';
import { param, redactTarget, routeOf, type RequestHead } from './request.js';
import { Tasks, type Task } from './tasks.js';
import type { PasswordHash } from './password.js';

/** One access-log entry. */
export interface LogEntry {
  time: string;
  address: string;
  method: string;
  /** The request target with session ids redacted. */
  target: string;
  status: number;
  bytes: number;
  seconds: number;
  user?: string;
  task?: string;
  disk?: string;
  error?: string;
}

/** How to start a server. */
export interface ServeOptions extends Partial<ServeSettings> {
  /** The folder of images to serve; or, with `repository`, nothing. */
  root?: Location;
  /** A backup repository whose restore points are exported, read-only (instead of `root`). */
  repository?: RepoBackend;
  host: string;
  port: number;
  /** PEM certificate and key: TLS. */
  tls?: { cert: Buffer; key: Buffer };
  /** Users and their hashes; null or absent: no authentication. */
  users?: Map<string, PasswordHash> | null;
  rateLimit?: RateLimit;
  /** Called once per request. */
  log?: (entry: LogEntry) => void;
}

/** A running server. */
export interface RunningServer {
  /** `http(s)://host:port` as clients reach it. */
  url: string;
  port: number;
  /** Leftovers of a killed earlier run that were settled at start. */
  recovered: Recovered[];
  /** Stops accepting, cuts open connections, waits for their handlers to finish. */
  close(): Promise<void>;
}

export const DEFAULT_SETTINGS: ServeSettings = {
  readOnly: false,
  atomicOnly: false,
  headTimeoutMs: 30_000,
  idleTimeoutMs: 300_000,
  maxTransfers: 16,
};

const REALMS: Record<string, string> = { import: 'VDI.import', export: 'VDI.export_raw' };

/** Starts a server on `opts.root`, after settling what a killed earlier run left there. */
export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const settings: ServeSettings = { ...DEFAULT_SETTINGS, ...Object.fromEntries(Object.entries(opts).filter(([k, v]) => k in DEFAULT_SETTINGS && v !== undefined)) };
  // Restore points are never written: a repository is always served read-only.
  if (opts.repository) settings.readOnly = true;
  const locks = new DiskLocks(settings.readOnly);
  let catalog: Catalog | null = null;
  let source: DiskSource;
  if (opts.repository) {
    source = new RepositoryCatalog(opts.repository);
  } else if (opts.root) {
    source = catalog = new Catalog(opts.root, settings.readOnly, locks);
  } else {
    throw new UsageError('serve needs a folder or a repository');
  }
  await source.init();
  const recovered = catalog && !settings.readOnly ? await recoverImports(catalog) : [];
  const ctx: ServeContext = {
    source,
    catalog,
    tasks: new Tasks(),
    locks,
    auth: new Authenticator(opts.users ?? null, opts.rateLimit ?? DEFAULT_RATE_LIMIT),
    settings,
  };
  const log = opts.log ?? (() => {});
  const sockets = new Set<net.Socket>();
  const running = new Set<Promise<void>>();
  let transfers = 0;

  const onSocket = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.setNoDelay(true);
    // No byte moving either way for this long: the client is gone or stalling (slowloris); cut it off.
    socket.setTimeout(settings.idleTimeoutMs, () => socket.destroy());
    const p = handle(socket).finally(() => running.delete(p));
    running.add(p);
  };

  async function handle(socket: net.Socket): Promise<void> {
    const started = Date.now();
    const conn = new ServerConnection(socket, socket.remoteAddress ?? 'unknown');
    // Every response carries a task-id: a transfer's task, else an id naming this request in the access log.
    const requestId = `req-${randomUUID()}`;
    let req: RequestHead | null = null;
    let outcome: Outcome & { user?: string };
    try {
      req = await conn.readHead(settings.headTimeoutMs);
      if (!req) return conn.abort();
      outcome = await dispatch(conn, req, requestId);
    } catch (err) {
      // As XAPI: a request refused before its transfer began (authentication, route, method, busy) fails the task
      // the client named, unless that task is running.
      const given = req ? clientTaskId(req) : undefined;
      const task = given !== undefined && ctx.tasks.get(given)?.status !== 'pending' ? ctx.tasks.start(routeOf(req!.path) ?? 'request', '', given) : undefined;
      outcome = await refuse(conn, err, { 'task-id': given ?? requestId }, task);
      outcome.task ??= given ?? requestId;
    }
    log({
      time: new Date(started).toISOString(),
      address: conn.address,
      method: req?.method ?? '-',
      target: req ? redactTarget(req.target) : '-',
      seconds: (Date.now() - started) / 1000,
      ...outcome,
    });
    await conn.finish();
  }

  /** Answers an error before any response went out; after one, the connection is cut. */
  async function refuse(conn: ServerConnection, err: unknown, headers: Record<string, string>, task?: Task): Promise<Outcome> {
    const e = statusOf(err);
    // Clients learn disk names, never where the folder lies on the server.
    e.message = source.hide(e.message);
    if (task) ctx.tasks.fail(task, e.message);
    if (conn.responded) {
      conn.abort();
      return { status: 500, bytes: 0, task: task?.id, error: e.message };
    }
    const body = e.message + '\n';
    await conn
      .writeHead(e.status, { ...headers, ...e.headers, 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) })
      .then(() => conn.write(body))
      .catch(() => {});
    return { status: e.status, bytes: 0, task: task?.id, error: e.message };
  }

  async function dispatch(conn: ServerConnection, req: RequestHead, requestId: string): Promise<Outcome & { user?: string }> {
    const base = { Connection: 'close', 'Cache-Control': 'no-cache, no-store' };
    const plain = { ...base, 'task-id': requestId };
    const route = routeOf(req.path);
    if (!route) throw new RequestError(404, `no such endpoint: ${req.path.slice(0, 80)}`);
    const allowed = { import: ['PUT'], export: ['GET', 'HEAD'], session: ['POST', 'DELETE'], task: ['GET'], disks: ['GET', 'HEAD'] }[route];
    if (!allowed.includes(req.method)) throw new RequestError(405, `${req.method} is not allowed on ${req.path.slice(0, 80)}`, undefined, { Allow: allowed.join(', ') });
    const realm = REALMS[route] ?? 'vhdsync';
    if (route === 'session' && req.method === 'POST') {
      // A session is opened with a password only: a token cannot beget tokens.
      const user = await ctx.auth.authenticate(conn.address, req.headers.get('authorization'), undefined, realm);
      if (!ctx.auth.required) throw new RequestError(404, 'this server runs without --credentials: there are no sessions');
      return json(conn, plain, 200, { session_id: ctx.auth.openSession(user), user }, user);
    }
    const user = await ctx.auth.authenticate(conn.address, req.headers.get('authorization'), param(req, 'session_id'), realm);
    if (route === 'session') {
      const token = param(req, 'session_id');
      return json(conn, plain, 200, { closed: token !== undefined && ctx.auth.closeSession(token) }, user);
    }
    if (route === 'task') {
      const id = decodeURIComponent(req.path.split('/')[2] ?? '');
      const task = ctx.tasks.get(id);
      if (!task) throw new RequestError(404, `no such task: ${id.slice(0, 80)}`);
      const { total: _total, ...shown } = task;
      return json(conn, plain, 200, shown, user);
    }
    if (route === 'disks') return json(conn, plain, 200, await ctx.source.list(), user, req.method === 'HEAD');
    if (transfers >= settings.maxTransfers) throw new RequestError(503, `${settings.maxTransfers} transfers are running; try again later`, undefined, { 'Retry-After': '5' });
    transfers++;
    let task: Task | undefined;
    try {
      task = ctx.tasks.start(route, '', param(req, 'task_id'));
      const headers = { ...base, 'task-id': task.id };
      try {
        const out = route === 'import' ? await importDisk(ctx, conn, req, task, headers) : await exportDisk(ctx, conn, req, task, headers);
        return { ...out, user };
      } catch (err) {
        return { ...(await refuse(conn, err, headers, task)), user };
      }
    } finally {
      transfers--;
    }
  }

  async function json(conn: ServerConnection, headers: Record<string, string>, status: number, value: unknown, user: string, headOnly = false): Promise<Outcome & { user: string }> {
    const body = JSON.stringify(value, null, 1) + '\n';
    await conn.writeHead(status, { ...headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    if (!headOnly) await conn.write(body);
    return { status, bytes: headOnly ? 0 : Buffer.byteLength(body), user, task: headers['task-id'] };
  }

  // Half-open: vhd-tool and HTTP/1.0 clients end their side after the body and wait for ours to close, which
  // says the import is done; closing when they end would report the end before the data is durable.
  const server: net.Server = opts.tls
    ? tls.createServer({ cert: opts.tls.cert, key: opts.tls.key, allowHalfOpen: true })
    : net.createServer({ allowHalfOpen: true });
  server.on(opts.tls ? 'secureConnection' : 'connection', onSocket);
  // A failed TLS handshake concerns that client only.
  server.on('tlsClientError', () => {});
  server.maxConnections = settings.maxTransfers * 8 + 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${host}:${port}`,
    port,
    recovered,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      await Promise.allSettled([...running]);
    },
  };
}

/** The client's `task_id` when it is one `Tasks` accepts (printable, at most 200 characters). */
function clientTaskId(req: RequestHead): string | undefined {
  const id = param(req, 'task_id');
  return id !== undefined && /^[\x21-\x7e]{1,200}$/.test(id) ? id : undefined;
}
