/**
 * An SMB client for one server and user: connects and authenticates on first use, keeps tree ids per
 * share, reconnects after a dropped connection, and offers the file operations the store needs. Handles
 * carry the connection generation they were opened on, so a stale handle is never used after a reconnect.
 */
import { IoError } from '../../util/errors.js';
import { chainOutcome, RELATED_FILE_ID } from './compound.js';
import { SmbConnection, type ChainLink, type Reply } from './connection.js';
import { Access, parseCreateResponse, serializeCreateRequest, ShareAccess, type CreateRequest, type CreateResponse } from './create.js';
import { Command, HeaderFlags } from './header.js';
import { serializeSetInfoRequest } from './info.js';
import { Dialect } from './negotiate.js';
import type { NtlmCredentials } from './ntlm-messages.js';
import { parseQueryDirectoryResponse, QueryDirectoryFlags, serializeQueryDirectoryRequest, type DirectoryEntry } from './query-directory.js';
import { parseReadResponse, parseWriteResponse, serializeReadRequest, serializeWriteRequest } from './read-write.js';
import { authenticate, negotiate, type SecurityOptions } from './session.js';
import { parseCloseResponse, serializeCloseRequest, serializeEmptyRequest, serializeFlushRequest, type CloseAttributes } from './simple.js';
import { ConnectionLostError, NotRunError, StaleHandleError, Status, statusError } from './status.js';
import { parseTreeConnectResponse, serializeTreeConnectRequest, ShareFlags } from './tree-connect.js';

/** Where and as whom to connect. */
export interface SmbServerOptions extends SecurityOptions {
  host: string;
  port: number;
  credentials: NtlmCredentials;
  /** Per-request timeout (default 60 s, or VHDSYNC_SMB_TIMEOUT seconds). */
  timeoutMs?: number;
  /** How long to keep trying to reconnect after a drop (default 30 s). */
  reconnectMs?: number;
}

/**
 * The error for a reply saying the server forgot our session or tree (restarted behind a proxy, a share closed by its
 * admin), after which the client starts over as after a drop; null for any other status. The server checks both
 * before it runs a request ([MS-SMB2] 3.3.5.2.9, 3.3.5.2.11), so the request did not run (NotRunError) when the
 * refusal is the server's own (`authentic`: an unsigned status on a signed session may be forged over a reply that
 * said the request ran), came at once (no interim reply: else it was running) and was for the first request of its
 * chain (`after`: else those before it ran).
 */
export function refusal(server: string, reply: Reply, subject: string, after: boolean): ConnectionLostError | null {
  const status = reply.header.status;
  if (status !== Status.USER_SESSION_DELETED && status !== Status.NETWORK_SESSION_EXPIRED && status !== Status.NETWORK_NAME_DELETED) return null;
  const message = status === Status.NETWORK_NAME_DELETED ? `SMB share connection on ${server} ended` : `SMB session on ${server} ended`;
  const ran = after || !reply.authentic || reply.interim || (reply.header.flags & HeaderFlags.ASYNC) !== 0;
  return ran ? new ConnectionLostError(message, subject) : new NotRunError(message, subject);
}

/** An open file or directory on a share. */
export interface SmbHandle {
  share: string;
  treeId: number;
  fileId: Buffer;
  generation: number;
  info: CreateResponse;
}

/** A request on the file a chain's CREATE opened (its body names it with RELATED_FILE_ID). */
export interface ChainOp extends ChainLink {
  /** Statuses that count as success for this request (default: SUCCESS only). */
  ok?: number[];
}

/** What `openChain` returns: the CREATE's answer and each op's reply, in order. */
export interface ChainResult {
  info: CreateResponse;
  replies: Reply[];
  /** Whether the chain's own CLOSE succeeded (a server may report a write-back error only there). */
  closed: boolean;
}

/** The largest READ/WRITE this client issues: big enough to amortise per-request costs, small enough to pipeline. */
const IO_CHUNK = 1 << 20;

export class SmbClient {
  /** Bumped on every new connection; handles from older generations are dead. */
  generation = 0;
  private conn: SmbConnection | null = null;
  private connecting: Promise<SmbConnection> | null = null;
  private trees = new Map<string, Promise<number>>();
  private closed = false;
  /** A failure of prewarm's logon, for the next connection() to throw. */
  private earlyFailure: unknown = null;
  /** The last failed connect that connection() threw to a caller: prewarm does not keep that one to throw again. */
  private delivered: unknown = null;

  constructor(readonly opts: SmbServerOptions) {}

  /** `host[:port]` for messages. */
  get server(): string {
    return this.opts.port === 445 ? this.opts.host : `${this.opts.host}:${this.opts.port}`;
  }

  /**
   * Connects, logs on and joins `share` in the background (prewarm in scheme.ts). A logon that fails is kept and
   * thrown once by the next connection(), so a refused password is tried once per run, as without the head start.
   */
  prewarm(share: string): void {
    if (this.conn || this.connecting || this.closed) return;
    this.attempt()
      .then((conn) => this.tree(conn, share))
      .catch((err: unknown) => {
        // Unless a caller that joined the same attempt was already given it (then the next call tries afresh).
        if (!this.conn && err !== this.delivered) this.earlyFailure = err;
      });
  }

  /** The live connection, connecting (and authenticating) when there is none. */
  async connection(): Promise<SmbConnection> {
    if (this.closed) throw new IoError('SMB client already closed', this.server);
    if (this.conn && !this.conn.failure) return this.conn;
    if (this.earlyFailure && !this.connecting) {
      const err = this.earlyFailure;
      this.earlyFailure = null;
      throw err;
    }
    try {
      return await this.attempt();
    } catch (err) {
      // Thrown here once: a prewarm that kept this failure (before or after this) does not throw it again.
      if (this.earlyFailure === err) this.earlyFailure = null;
      else this.delivered = err;
      throw err;
    }
  }

  /** The connect in progress, or a new one. */
  private attempt(): Promise<SmbConnection> {
    if (!this.connecting) {
      this.connecting = this.connect().finally(() => {
        this.connecting = null;
      });
    }
    return this.connecting;
  }

  /** Keeps trying to connect until it works or `reconnectMs` passes (used after a drop, when a server may be restarting). */
  async reconnect(): Promise<void> {
    const deadline = Date.now() + (this.opts.reconnectMs ?? 30000);
    let delay = 100;
    for (;;) {
      try {
        await this.connection();
        return;
      } catch (err) {
        // Only transport trouble is worth waiting out; a refused logon will not get better.
        const transient = err instanceof ConnectionLostError || (err instanceof IoError && /cannot connect/.test(err.message));
        if (!transient || Date.now() + delay > deadline) throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  private async connect(): Promise<SmbConnection> {
    const timeoutMs = this.opts.timeoutMs ?? (Number(process.env.VHDSYNC_SMB_TIMEOUT) * 1000 || 60000);
    const conn = await SmbConnection.open(this.opts.host, this.opts.port, timeoutMs);
    try {
      const preauth = await negotiate(conn, this.opts);
      await authenticate(conn, this.opts.credentials, preauth, this.opts);
    } catch (err) {
      conn.close();
      throw err;
    }
    this.trees = new Map();
    this.generation++;
    this.conn = conn;
    return conn;
  }

  /** Connects to a share (once per connection), so its errors are not mistaken for a missing file. */
  async ensureShare(share: string): Promise<void> {
    await this.tree(await this.connection(), share);
  }

  /** The tree id for a share, connecting to it once per connection. */
  async tree(conn: SmbConnection, share: string): Promise<number> {
    const key = share.toLowerCase();
    let t = this.trees.get(key);
    if (!t) {
      t = this.treeConnect(conn, share);
      this.trees.set(key, t);
      t.catch(() => this.trees.delete(key));
    }
    return t;
  }

  private async treeConnect(conn: SmbConnection, share: string): Promise<number> {
    const unc = `\\\\${this.opts.host}\\${share}`;
    const r = await conn.request(Command.TREE_CONNECT, [serializeTreeConnectRequest(unc)], { forceSign: conn.dialect === Dialect.SMB311 });
    if (r.header.status !== Status.SUCCESS) throw statusError(r.header.status, `//${this.server}/${share}`);
    const res = parseTreeConnectResponse(r.msg);
    if (res.shareFlags & ShareFlags.ENCRYPT_DATA) {
      if (!conn.security.encryptionKey) throw new IoError('share requires encryption, which needs SMB 3.x', `//${this.server}/${share}`);
      conn.encryptedTrees.add(r.header.treeId);
    }
    return r.header.treeId;
  }

  /** Sends a request on a share and returns the reply; statuses other than `ok` become typed errors. */
  async call(
    share: string,
    command: number,
    body: Buffer[],
    subject: string,
    opts: { payload?: number; ok?: number[]; handle?: SmbHandle; readInto?: Buffer } = {},
  ): Promise<Reply> {
    const conn = await this.connection();
    if (opts.handle && opts.handle.generation !== this.generation) {
      throw new StaleHandleError(`connection to ${this.server} was re-established; the file must be reopened`, subject);
    }
    const treeId = opts.handle?.treeId ?? (await this.tree(conn, share));
    const r = await conn.request(command, body, { treeId, payload: opts.payload, readInto: opts.readInto });
    const ok = opts.ok ?? [Status.SUCCESS];
    if (!ok.includes(r.header.status)) throw this.failed(conn, r, subject);
    return r;
  }

  /** The error for a reply's failure status; a session or tree the server forgot also ends the connection (refusal). */
  private failed(conn: SmbConnection, reply: Reply, subject: string, after = false): Error {
    const refused = refusal(this.server, reply, subject, after);
    if (!refused) return statusError(reply.header.status, subject);
    conn.close();
    return refused;
  }

  /**
   * Opens `req`, runs `ops` on the opened file and closes it, as one chain of related requests: one round trip
   * ([MS-SMB2] 3.2.4.1.4). Throws the typed error of the CREATE when it failed, else of the first op whose status
   * is not in its `ok` list. Nothing stays open: a server may fail the rest of a chain after an error, its CLOSE
   * included (compound.ts, chainOutcome), and then a CLOSE of the real FileId follows.
   */
  async openChain(share: string, req: CreateRequest, ops: ChainOp[], subject: string): Promise<ChainResult> {
    const conn = await this.connection();
    const generation = this.generation;
    const treeId = await this.tree(conn, share);
    const links: ChainLink[] = [{ command: Command.CREATE, body: [serializeCreateRequest(req)] }, ...ops];
    links.push({ command: Command.CLOSE, body: [serializeCloseRequest(RELATED_FILE_ID)] });
    const replies = await conn.compound(links, { treeId });
    const statuses = replies.map((r) => r.header.status);
    const outcome = chainOutcome(statuses, ops.map((o) => o.ok ?? [Status.SUCCESS]));
    if (outcome.failed === 0) throw this.failed(conn, replies[0], subject);
    const info = parseCreateResponse(replies[0].msg);
    if (outcome.open) await this.close({ share, treeId, fileId: info.fileId, generation, info }).catch(() => undefined);
    if (outcome.failed > 0) throw this.failed(conn, replies[outcome.failed], subject, true);
    return { info, replies: replies.slice(1, 1 + ops.length), closed: !outcome.open };
  }

  /**
   * Opens `req` and reads its first `length` bytes (at most one READ's worth) in one round trip: CREATE + READ,
   * related. The handle stays open. `head` is empty when the READ failed (an empty file; the plain read path meets
   * any other failure again).
   */
  async createAndRead(share: string, req: CreateRequest, length: number, subject: string): Promise<{ handle: SmbHandle; head: Buffer }> {
    const conn = await this.connection();
    const generation = this.generation;
    const treeId = await this.tree(conn, share);
    const n = Math.max(1, Math.min(length, conn.maxReadSize, IO_CHUNK, conn.payloadWithin(1)));
    const [created, read] = await conn.compound(
      [
        { command: Command.CREATE, body: [serializeCreateRequest(req)] },
        { command: Command.READ, body: [serializeReadRequest(RELATED_FILE_ID, 0, n)], payload: n },
      ],
      { treeId },
    );
    if (created.header.status !== Status.SUCCESS) throw this.failed(conn, created, subject);
    const info = parseCreateResponse(created.msg);
    const head = read.header.status === Status.SUCCESS ? Buffer.from(parseReadResponse(read.msg, n)) : Buffer.alloc(0);
    return { handle: { share, treeId, fileId: info.fileId, generation, info }, head };
  }

  /** Opens or creates `name` (share-relative, backslashes). */
  async create(share: string, req: CreateRequest, subject: string): Promise<SmbHandle> {
    const conn = await this.connection();
    const generation = this.generation;
    const treeId = await this.tree(conn, share);
    const r = await this.call(share, Command.CREATE, [serializeCreateRequest(req)], subject);
    const info = parseCreateResponse(r.msg);
    return { share, treeId, fileId: info.fileId, generation, info };
  }

  /**
   * The largest READ, WRITE and QUERY_DIRECTORY answer this client asks for in one request on the live connection:
   * a READ or WRITE fits the credits granted with a CREATE and a CLOSE beside it (a chain of the three).
   */
  async requestLimits(): Promise<{ read: number; write: number; transact: number }> {
    const conn = await this.connection();
    const fit = conn.payloadWithin(2);
    return { read: Math.min(conn.maxReadSize, IO_CHUNK, fit), write: Math.min(conn.maxWriteSize, IO_CHUNK, fit), transact: Math.min(conn.maxTransactSize, 65536) };
  }

  /**
   * Whether a chain of CREATE, requests moving `payloads` bytes each and CLOSE fits the credits the server has granted
   * (SmbConnection.creditWindow); one that does not would wait for grants a server may never make.
   */
  async chainFits(payloads: number[]): Promise<boolean> {
    const conn = await this.connection();
    return conn.creditsFit([0, ...payloads, 0]);
  }

  /**
   * Closes a handle; a handle from a dead connection is already gone. Returns the file's attributes as of the close
   * (the CLOSE asks for them: no extra round trip), or null when the server sent none or the handle was gone.
   */
  async close(h: SmbHandle): Promise<CloseAttributes | null> {
    if (h.generation !== this.generation || !this.conn || this.conn.failure) return null;
    try {
      const r = await this.call(h.share, Command.CLOSE, [serializeCloseRequest(h.fileId, true)], h.share, { handle: h });
      return parseCloseResponse(r.msg);
    } catch (err) {
      if (!(err instanceof ConnectionLostError)) throw err;
      return null;
    }
  }

  /** Reads up to `length` bytes at `offset` into `into` at `at`, in parallel chunks; returns the count (short only at end of file). */
  async read(h: SmbHandle, offset: number, length: number, into: Buffer, at: number, subject: string): Promise<number> {
    const conn = await this.connection();
    const chunk = Math.min(conn.maxReadSize, IO_CHUNK, conn.payloadWithin(0));
    const jobs: Promise<number>[] = [];
    for (let done = 0; done < length; done += chunk) {
      const n = Math.min(chunk, length - done);
      jobs.push(this.readOnce(h, offset + done, n, into, at + done, subject));
    }
    const counts = await Promise.all(jobs);
    // The file ends at the first short chunk; later chunks can only have read nothing.
    let total = 0;
    for (let i = 0; i < counts.length; i++) {
      total += counts[i];
      if (counts[i] < Math.min(chunk, length - i * chunk)) break;
    }
    return total;
  }

  private async readOnce(h: SmbHandle, offset: number, length: number, into: Buffer, at: number, subject: string): Promise<number> {
    const r = await this.call(h.share, Command.READ, [serializeReadRequest(h.fileId, offset, length)], subject, {
      payload: length,
      ok: [Status.SUCCESS, Status.END_OF_FILE],
      handle: h,
      readInto: into.subarray(at, at + length),
    });
    if (r.header.status === Status.END_OF_FILE) return 0;
    if (r.placed !== undefined) return r.placed;
    const data = parseReadResponse(r.msg, length);
    data.copy(into, at);
    return data.length;
  }

  /** Writes all of `data` at `offset`, in parallel chunks. */
  async write(h: SmbHandle, offset: number, data: Uint8Array, subject: string): Promise<void> {
    const conn = await this.connection();
    const chunk = Math.min(conn.maxWriteSize, IO_CHUNK, conn.payloadWithin(0));
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const jobs: Promise<void>[] = [];
    for (let done = 0; done < buf.length; done += chunk) {
      const piece = buf.subarray(done, Math.min(buf.length, done + chunk));
      jobs.push(this.writeOnce(h, offset + done, piece, subject));
    }
    await Promise.all(jobs);
  }

  private async writeOnce(h: SmbHandle, offset: number, piece: Buffer, subject: string): Promise<void> {
    const r = await this.call(h.share, Command.WRITE, [serializeWriteRequest(h.fileId, offset, piece.length), piece], subject, {
      payload: piece.length,
      handle: h,
    });
    const n = parseWriteResponse(r.msg);
    if (n !== piece.length) throw new IoError(`short write (${n} of ${piece.length} bytes) at offset ${offset}`, subject);
  }

  /**
   * One ECHO round trip on the handle's connection, before a request that must not go out on a connection that died
   * unnoticed: a connection lost here took nothing else, so it is reported as a stale handle (reopen and send).
   */
  async echo(h: SmbHandle, subject: string): Promise<void> {
    try {
      await this.call(h.share, Command.ECHO, [serializeEmptyRequest()], subject, { handle: h });
    } catch (err) {
      throw err instanceof ConnectionLostError && !(err instanceof StaleHandleError) ? new StaleHandleError(err.message, subject) : err;
    }
  }

  /** FLUSH: the server makes the file's data durable. */
  async flush(h: SmbHandle, subject: string): Promise<void> {
    await this.call(h.share, Command.FLUSH, [serializeFlushRequest(h.fileId)], subject, { handle: h });
  }

  /** SET_INFO for a file information class. */
  async setInfo(h: SmbHandle, infoClass: number, info: Buffer, subject: string): Promise<void> {
    await this.call(h.share, Command.SET_INFO, [serializeSetInfoRequest(h.fileId, infoClass, info)], subject, { handle: h });
  }

  /** All entries of an open directory matching `pattern`. */
  async queryDirectory(h: SmbHandle, pattern: string, subject: string): Promise<DirectoryEntry[]> {
    const out: DirectoryEntry[] = [];
    const { transact: size } = await this.requestLimits();
    for (let first = true; ; first = false) {
      const body = serializeQueryDirectoryRequest(h.fileId, pattern, size, first ? QueryDirectoryFlags.RESTART_SCANS : 0);
      const r = await this.call(h.share, Command.QUERY_DIRECTORY, [body], subject, {
        ok: [Status.SUCCESS, Status.NO_MORE_FILES, Status.NO_SUCH_FILE],
        handle: h,
      });
      if (r.header.status !== Status.SUCCESS) return out;
      out.push(...parseQueryDirectoryResponse(r.msg));
    }
  }

  /**
   * Logs off and closes the connection, best effort: the process may be ending. The LOGOFF goes out without waiting
   * for its answer (a round trip that changes nothing: the server ends the session when the connection closes too).
   */
  async shutdown(): Promise<void> {
    this.closed = true;
    const conn = this.conn;
    this.conn = null;
    if (!conn || conn.failure) return;
    await conn.post(Command.LOGOFF, [serializeEmptyRequest()]).catch(() => undefined);
    conn.close();
  }
}

/** Access masks and options used by the store. */
export const OPEN = {
  read: { access: Access.READ_DATA | Access.READ_ATTRIBUTES | Access.READ_CONTROL | Access.SYNCHRONIZE, share: ShareAccess.ALL },
  readwrite: {
    access:
      Access.READ_DATA | Access.WRITE_DATA | Access.APPEND_DATA | Access.READ_ATTRIBUTES | Access.WRITE_ATTRIBUTES | Access.READ_CONTROL | Access.SYNCHRONIZE,
    share: ShareAccess.ALL,
  },
} as const;
