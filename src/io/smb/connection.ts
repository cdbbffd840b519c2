/**
 * One SMB2 connection with one session: message ids and credits, requests in flight matched to their
 * replies (interim STATUS_PENDING replies included), a timeout on each, and signing/encryption applied
 * as the session requires. It knows nothing about files; client.ts builds on it.
 */
import { IoError } from '../../util/errors.js';
import { chainMessages, splitChain } from './compound.js';
import { Command, HeaderFlags, parseHeader, serializeHeader, type Header, HEADER_SIZE } from './header.js';
import { Dialect } from './negotiate.js';
import { signMessage, verifyMessage } from './signing.js';
import { serializeEmptyRequest } from './simple.js';
import { ConnectionLostError, Status, notRun } from './status.js';
import { decryptMessage, encryptMessage, isTransformed, NonceSource } from './transform.js';
import { PLACE_PREFIX } from './frame-reader.js';
import { Transport } from './transport.js';

/** A reply: its header and the whole message (header included), plus the request bytes when asked. */
export interface Reply {
  header: Header;
  msg: Buffer;
  sent?: Buffer;
  /** For a READ with `readInto`: the data went straight there, this many bytes, and `msg` is only the prefix. */
  placed?: number;
  /**
   * Whether the reply is the server's as far as this session can prove: encrypted, or signed and verified, or to a
   * request that was neither signed by the session's rule nor encrypted (where no reply proves more than another). An
   * unsigned error status on a protected session or share may be anyone's.
   */
  authentic: boolean;
  /** The server answered STATUS_PENDING first: the request was running before this final reply. */
  interim: boolean;
}

/** One request of a chain (connection.compound), or the only one. */
export interface ChainLink {
  command: number;
  body: Buffer[];
  /** Payload bytes this request moves (READ length or WRITE data); decides the credit charge. */
  payload?: number;
  /** For READ: where the data may be placed directly, without passing through a frame buffer. */
  readInto?: Buffer;
}

/** Per-request choices. */
export interface RequestOptions {
  treeId?: number;
  /** Payload bytes this request moves (READ length or WRITE data); decides the credit charge. */
  payload?: number;
  /** Sign even before the session decided to (3.1.1 TREE_CONNECT); ignored without a key. */
  forceSign?: boolean;
  /** Keep the exact bytes sent (for the preauth integrity hash). */
  keepSent?: boolean;
  /** For READ: where the data may be placed directly, without passing through a frame buffer. */
  readInto?: Buffer;
}

/** Keys and rules of the authenticated session. */
export interface SessionSecurity {
  sessionId: bigint;
  signingAlgorithm: number;
  signingKey: Buffer | null;
  encryptionKey: Buffer | null;
  decryptionKey: Buffer | null;
  cipher: number;
  signAll: boolean;
  encryptAll: boolean;
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  command: number;
  /**
   * Credits this request holds in the window (creditWindow): its charge until the server grants them back, in the
   * final reply or in an interim STATUS_PENDING one (then the final grants 0: [MS-SMB2] 3.3.4.2, Samba), and 0 after.
   */
  charge: number;
  sent?: Buffer;
  readInto?: Buffer;
  /** The request went out encrypted: its reply must come encrypted to count as the server's. */
  encrypted: boolean;
  /** An interim STATUS_PENDING came for it. */
  interim: boolean;
}

/** Keep this many credits granted so several large requests can be in flight. */
const CREDIT_TARGET = 512;

export class SmbConnection {
  dialect = 0;
  maxReadSize = 65536;
  maxWriteSize = 65536;
  maxTransactSize = 65536;
  serverSecurityMode = 0;
  serverCapabilities = 0;
  security: SessionSecurity = {
    sessionId: 0n,
    signingAlgorithm: 0,
    signingKey: null,
    encryptionKey: null,
    decryptionKey: null,
    cipher: 0,
    signAll: false,
    encryptAll: false,
  };
  /** Trees whose share demands encryption even when the session does not. */
  readonly encryptedTrees = new Set<number>();
  /** READ replies whose data went straight into the caller's buffer. */
  placedReplies = 0;
  /** Interim (STATUS_PENDING) replies seen: the server went async on a request. */
  interimReplies = 0;
  /** Set once the connection is unusable; every later request fails with it. */
  failure: Error | null = null;

  private transport!: Transport;
  private nextMessageId = 0;
  private credits = 1;
  private creditWaiters: Array<() => void> = [];
  /** Credits wanted by requests waiting for them; asked for in the next request's CreditRequest. */
  private demand = 0;
  private askingForCredits = false;
  /** Requests that hold credits but are not yet in `pending`: a grant may still come through them. */
  private starting = 0;
  /** Credits charged to requests sent and not finally answered. */
  private inFlight = 0;
  /**
   * The most credits ever in hand at once. A server may bound the credits a client holds rather than those held plus
   * those in flight (Samba's `smb2 max credits` does: its first reply of several can grant up to the maximum and the
   * rest 0), so credits + inFlight can exceed what it will ever let us hold; this it has let us hold.
   */
  private mostHeld = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly nonces = new NonceSource();

  private constructor(
    readonly host: string,
    readonly port: number,
    readonly timeoutMs: number,
  ) {}

  /** Opens the TCP connection (no SMB traffic yet). */
  static async open(host: string, port: number, timeoutMs: number): Promise<SmbConnection> {
    const c = new SmbConnection(host, port, timeoutMs);
    c.transport = await Transport.connect(
      host,
      port,
      timeoutMs,
      (f, placed) => c.onFrame(f, placed),
      (e) => c.fail(new ConnectionLostError(`connection to ${host}:${port} lost (${e.message})`)),
    );
    c.transport.idle(true);
    c.transport.placer = (prefix, len) => c.place(prefix, len);
    return c;
  }

  /** Whether 3.x features (key derivation, encryption, CMAC signing) apply. */
  get isSmb3(): boolean {
    return this.dialect >= Dialect.SMB300;
  }

  /** Whether multi-credit requests (more than 64 KiB per READ/WRITE) are allowed: every dialect after 2.0.2. */
  get largeMtu(): boolean {
    return this.dialect > Dialect.SMB202;
  }

  /**
   * The credits the server has granted: those in hand and those charged to requests in flight that the server has not
   * yet granted back (an interim reply gives them back early; the request then holds none), but never more than it
   * has let us hold at once (mostHeld). One frame charged more than this would wait on the server to grant more,
   * which it may never do (a server's `smb2 max credits`): chains and I/O sizes are bounded by it (creditsFit,
   * payloadWithin).
   */
  get creditWindow(): number {
    return Math.min(this.credits + this.inFlight, this.mostHeld);
  }

  /** The credit charge of a request moving `payload` bytes ([MS-SMB2] 3.2.4.1.5). */
  charge(payload = 0): number {
    return this.largeMtu ? Math.max(1, Math.ceil(payload / 65536)) : 1;
  }

  /** Whether one frame of requests moving `payloads` bytes each fits the credits granted (creditWindow). */
  creditsFit(payloads: number[]): boolean {
    return payloads.reduce((n, p) => n + this.charge(p), 0) <= this.creditWindow;
  }

  /** The most bytes one READ or WRITE may move so that it and `others` one-credit requests fit the window. */
  payloadWithin(others: number): number {
    return this.largeMtu ? Math.max(1, this.creditWindow - others) * 65536 : 65536;
  }

  /**
   * Sends a request and resolves with its final reply, whatever the status (callers judge it). Rejects
   * with ConnectionLostError when the connection breaks or the reply does not come in time.
   */
  async request(command: number, body: Buffer[], opts: RequestOptions = {}): Promise<Reply> {
    const [reply] = await this.dispatch([{ command, body, payload: opts.payload, readInto: opts.readInto }], opts);
    return reply;
  }

  /**
   * Sends a request whose reply nobody waits for, and resolves once it is handed to the socket (LOGOFF before a
   * close: the process is ending, and a round trip for the server's goodbye buys nothing).
   */
  async post(command: number, body: Buffer[]): Promise<void> {
    const replies = await this.dispatch([{ command, body }], {});
    for (const r of replies) r.catch(() => undefined);
  }

  /**
   * Sends `links` as one chain of related requests ([MS-SMB2] 3.2.4.1.4; compound.ts) in one frame, and resolves
   * with every final reply, in order, whatever their statuses. Requests after the first refer to the file the
   * previous one opened with RELATED_FILE_ID. Each message is signed on its own; encryption wraps the whole chain.
   */
  async compound(links: ChainLink[], opts: Pick<RequestOptions, 'treeId'> = {}): Promise<Reply[]> {
    return Promise.all(await this.dispatch(links, opts));
  }

  /** Sends `links` (one request, or a related chain) in one frame; one promise per final reply. */
  private async dispatch(links: ChainLink[], opts: RequestOptions): Promise<Promise<Reply>[]> {
    // A connection lost before the frame is handed to the socket (while it waits for credits, say) took nothing.
    if (this.failure) throw notRun(this.failure);
    const charges = links.map((l) => this.charge(l.payload));
    const total = charges.reduce((a, b) => a + b, 0);
    try {
      await this.takeCredits(total);
    } catch (err) {
      throw notRun(err);
    }
    this.starting--;
    if (this.failure) throw notRun(this.failure);
    this.inFlight += total;

    const sec = this.security;
    const chained = links.length > 1;
    const extra = Math.max(this.demand, this.credits < CREDIT_TARGET ? 64 : 0);
    const ids: number[] = [];
    const messages = links.map((l, i) => {
      const messageId = this.nextMessageId;
      this.nextMessageId += charges[i];
      ids.push(messageId);
      const header = serializeHeader({
        creditCharge: this.largeMtu ? charges[i] : 0,
        command: l.command,
        // The first request asks for what the waiting requests need; each asks back at least what it spends.
        credits: Math.min(charges[i] + (i === 0 ? extra : 0), 8192),
        flags: chained && i > 0 ? HeaderFlags.RELATED : 0,
        messageId,
        treeId: opts.treeId ?? 0,
        sessionId: l.command === Command.NEGOTIATE ? 0n : sec.sessionId,
      });
      return [header, ...l.body];
    });
    const laid = chained ? chainMessages(messages) : messages;
    const encrypt = sec.encryptionKey !== null && (sec.encryptAll || (opts.treeId !== undefined && this.encryptedTrees.has(opts.treeId)));
    if (!encrypt && sec.signingKey && (sec.signAll || opts.forceSign)) {
      laid.forEach((parts, i) => signMessage(sec.signingAlgorithm, sec.signingKey!, parts, ids[i]));
    }
    let parts = laid.flat();
    if (encrypt) parts = encryptMessage(sec.cipher, sec.encryptionKey!, sec.sessionId, this.nonces.next(), parts);

    const replies = ids.map(
      (messageId, i) =>
        new Promise<Reply>((resolve, reject) => {
          const p: Pending = {
            resolve,
            reject,
            command: links[i].command,
            charge: charges[i],
            timer: this.timer(messageId),
            readInto: links[i].readInto,
            encrypted: encrypt,
            interim: false,
          };
          if (opts.keepSent) p.sent = Buffer.concat(parts);
          this.pending.set(messageId, p);
        }),
    );
    this.transport.idle(false);
    try {
      this.transport.send(parts);
    } catch (err) {
      for (const id of ids) this.settle(id)?.reject(err as Error);
    }
    return replies;
  }

  /** Ends the connection; requests still in flight fail. */
  close(): void {
    this.fail(new ConnectionLostError(`connection to ${this.host}:${this.port} closed`));
  }

  private timer(messageId: number): NodeJS.Timeout {
    return setTimeout(() => {
      // A reply that never comes leaves the server's view of credits and ids unknown: drop the connection.
      this.fail(new ConnectionLostError(`no reply from ${this.host}:${this.port} within ${this.timeoutMs / 1000} s (message ${messageId})`));
    }, this.timeoutMs);
  }

  private async takeCredits(n: number): Promise<void> {
    this.demand += n;
    try {
      for (;;) {
        if (this.failure) throw this.failure;
        if (this.credits >= n) {
          this.credits -= n;
          this.starting++;
          return;
        }
        if (this.inFlight === 0 && this.starting === 0 && !this.askingForCredits) {
          // Nothing in flight that a grant could still come through (an async request's final reply grants none):
          // ask for credits with an ECHO (it costs one).
          if (this.credits < 1) throw new IoError(`SMB server ${this.host} granted no credits`);
          const before = this.credits;
          this.askingForCredits = true;
          this.demand -= n;
          try {
            await this.request(Command.ECHO, [serializeEmptyRequest()]);
          } finally {
            this.askingForCredits = false;
            this.demand += n;
            // Other waiters held back while this ECHO was out look again now (else only at their deadline).
            this.wakeCreditWaiters();
          }
          // Asked with nothing else in flight, and the window did not grow: the server grants no more. Waiting (or
          // asking again) would never end; callers bound their frames by creditWindow, so this is a bug's last guard.
          const idle = this.inFlight === 0 && this.starting === 0;
          if (idle && this.credits < n && this.credits <= before) {
            throw new IoError(`SMB server ${this.host} grants at most ${this.credits} credit${this.credits === 1 ? '' : 's'}; a request needs ${n}`);
          }
          continue;
        }
        await this.creditWait();
      }
    } finally {
      this.demand -= n;
    }
  }

  /**
   * Waits until credits are granted, a request settles or the connection fails, or `timeoutMs` has passed; the
   * caller then looks again. A wait thus never outlasts what could still end it: with a request in flight, that
   * request's reply or its own timeout (which fails the connection); with nothing in flight, takeCredits asks with an
   * ECHO and ends in one line if the server grants no more. The deadline only guards against a wake that was missed.
   */
  private creditWait(): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.creditWaiters = this.creditWaiters.filter((w) => w !== wake);
        resolve();
      }, this.timeoutMs);
      this.creditWaiters.push(wake);
    });
  }

  /** Wakes every credit wait to look again (credits changed, a request settled, or the connection failed). */
  private wakeCreditWaiters(): void {
    const waiters = this.creditWaiters;
    this.creditWaiters = [];
    for (const w of waiters) w();
  }

  private grant(n: number): void {
    if (n === 0) return;
    this.credits += n;
    this.mostHeld = Math.max(this.mostHeld, this.credits);
    this.wakeCreditWaiters();
  }

  private settle(messageId: number): Pending | undefined {
    const p = this.pending.get(messageId);
    if (!p) return undefined;
    clearTimeout(p.timer);
    this.pending.delete(messageId);
    this.inFlight -= p.charge;
    if (this.pending.size === 0) this.transport.idle(true);
    // A final reply after an interim grants 0 credits, yet a wait may depend on it: with nothing left in flight, the
    // waiter asks for credits itself (takeCredits).
    this.wakeCreditWaiters();
    return p;
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.transport?.close();
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(err);
    this.wakeCreditWaiters();
  }

  /** Where a plain READ reply's data can go directly: the caller's buffer, when the reply is exactly what we asked. */
  private place(prefix: Buffer, frameLength: number): Buffer | null {
    if (isTransformed(prefix)) return null;
    const h = parseHeader(prefix);
    if (h.command !== Command.READ || h.status !== Status.SUCCESS || h.nextCommand !== 0) return null;
    const into = this.pending.get(h.messageId)?.readInto;
    const dataOffset = prefix.readUInt8(HEADER_SIZE + 2);
    const dataLength = prefix.readUInt32LE(HEADER_SIZE + 4);
    if (!into || dataOffset !== PLACE_PREFIX || dataLength !== frameLength - PLACE_PREFIX || dataLength > into.length) return null;
    return into.subarray(0, dataLength);
  }

  private onFrame(frame: Buffer, placed?: Buffer): void {
    if (placed) {
      this.placedReplies++;
      this.onMessage(parseHeader(frame), frame, false, placed);
      return;
    }
    let encrypted = false;
    if (isTransformed(frame)) {
      const sec = this.security;
      if (!sec.decryptionKey) throw new IoError('server sent an encrypted message before a session key exists');
      frame = decryptMessage(sec.cipher, sec.decryptionKey, sec.sessionId, frame);
      encrypted = true;
    }
    // A frame may hold a compound chain; each message says where the next begins.
    for (const { header, msg } of splitChain(frame)) this.onMessage(header, msg, encrypted);
  }

  private onMessage(header: Header, msg: Buffer, encrypted: boolean, placed?: Buffer): void {
    if ((header.flags & HeaderFlags.SERVER_TO_REDIR) === 0) throw new IoError('server sent a request, not a reply');
    this.grant(header.credits);
    const p = this.pending.get(header.messageId);
    if (!p) return; // oplock breaks (id -1) and replies to requests already failed
    if (header.status === Status.PENDING && header.flags & HeaderFlags.ASYNC) {
      // Interim reply: the real one follows with the same MessageId. The server is alive, so restart the clock.
      // The interim grants this request's credits (granted above; the final reply then grants 0: [MS-SMB2] 3.3.4.2,
      // Samba's smb2_set_operation_credit), so the request no longer holds its charge in the window.
      this.interimReplies++;
      p.interim = true;
      this.inFlight -= p.charge;
      p.charge = 0;
      clearTimeout(p.timer);
      p.timer = this.timer(header.messageId);
      return;
    }
    // Judged by what this process sent and holds, never by the reply's own SessionId or TreeId: anyone on the path
    // can write those.
    const sec = this.security;
    const session = sec.signingKey !== null && sec.sessionId !== 0n;
    let verified = false;
    if (!encrypted && session && header.flags & HeaderFlags.SIGNED) {
      if (header.sessionId !== sec.sessionId || !verifyMessage(sec.signingAlgorithm, sec.signingKey!, msg, header.messageId, placed)) {
        this.settle(header.messageId);
        p.reject(new IoError(`reply from ${this.host} has a bad signature (tampered with, or a protocol error)`));
        return;
      }
      verified = true;
    }
    // Servers send some error statuses plainly (Samba: USER_SESSION_DELETED); a success must carry the protection.
    if (!encrypted && header.status === Status.SUCCESS) {
      if (p.encrypted || (sec.encryptAll && header.command !== Command.SESSION_SETUP)) {
        this.settle(header.messageId);
        p.reject(new IoError(`reply from ${this.host} is not encrypted although encryption is required`));
        return;
      }
      if (!verified && session && sec.signAll) {
        this.settle(header.messageId);
        p.reject(new IoError(`reply from ${this.host} is not signed although signing is required`));
        return;
      }
    }
    const authentic = encrypted || verified || !(p.encrypted || sec.encryptAll || (session && sec.signAll));
    this.settle(header.messageId);
    p.resolve({ header, msg, sent: p.sent, placed: placed?.length, authentic, interim: p.interim });
  }
}
