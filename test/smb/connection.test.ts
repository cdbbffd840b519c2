/** SmbConnection against a scripted server: interim replies, late finals, stray replies, credits, timeouts. */
import * as net from 'node:net';
import { SmbConnection } from '../../src/io/smb/connection.js';
import { Command, HeaderFlags, parseHeader, serializeHeader } from '../../src/io/smb/header.js';
import { signMessage } from '../../src/io/smb/signing.js';
import { refusal } from '../../src/io/smb/client.js';
import fc from 'fast-check';
import { Cipher, Dialect } from '../../src/io/smb/negotiate.js';
import { Status } from '../../src/io/smb/status.js';
import { ConnectionLostError, NotRunError } from '../../src/io/smb/status.js';

type Script = (request: Buffer, send: (reply: Buffer, delayMs?: number) => void) => void;

/** A TCP server that hands each request frame to `script`, which answers with raw SMB2 messages. */
async function scriptedServer(script: Script): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUIntBE(1, 3)) {
        const len = buf.readUIntBE(1, 3);
        const frame = buf.subarray(4, 4 + len);
        buf = buf.subarray(4 + len);
        script(frame, (reply, delayMs = 0) => {
          const out = Buffer.concat([Buffer.from([0, reply.length >> 16, (reply.length >> 8) & 0xff, reply.length & 0xff]), reply]);
          setTimeout(() => sock.destroyed || sock.write(out), delayMs);
        });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((r) => server.close(r));
    },
  };
}

/** An ECHO reply to message `mid` with the given status, flags and credits. */
function echoReply(mid: number, status: number, flags = 0, credits = 1): Buffer {
  const h = serializeHeader({ creditCharge: 1, command: Command.ECHO, credits, flags: HeaderFlags.SERVER_TO_REDIR | flags, messageId: mid, treeId: 0, sessionId: 0n });
  h.writeUInt32LE(status, 8);
  if (flags & HeaderFlags.ASYNC) h.writeBigUInt64LE(99n, 32);
  return Buffer.concat([h, Buffer.from([4, 0, 0, 0])]);
}

/**
 * A server that grants credits like Samba with `smb2 max credits = max`: each reply grants what was asked, up to the
 * maximum outstanding; a WRITE chosen by `slow` goes async after `slowMs` (an interim STATUS_PENDING reply that grants
 * the credits) and is finished `finalMs` later by a final reply that grants 0 ([MS-SMB2] 3.3.4.2; Samba's
 * smb2_set_operation_credit). Every other request is answered at once. Records any request sent without the credits.
 */
async function sambaCredits(max: number, slow: (n: number) => boolean, slowMs = 600, finalMs = 300, answerMs: (messageId: number) => number = () => 0) {
  let outstanding = 1; // the credit every connection starts with
  let writes = 0;
  const problems: string[] = [];
  const reply = (h: ReturnType<typeof parseHeader>, status: number, flags: number): Buffer => {
    const granted = flags & HeaderFlags.ASYNC && status !== Status.PENDING ? 0 : Math.min(h.credits, max - outstanding);
    outstanding += granted;
    const r = serializeHeader({ creditCharge: h.creditCharge, command: h.command, credits: granted, flags: HeaderFlags.SERVER_TO_REDIR | flags, messageId: h.messageId, treeId: 0, sessionId: 0n });
    r.writeUInt32LE(status, 8);
    if (flags & HeaderFlags.ASYNC) r.writeBigUInt64LE(BigInt(h.messageId) + 1n, 32);
    return Buffer.concat([r, Buffer.alloc(17)]);
  };
  const srv = await scriptedServer((req, send) => {
    const h = parseHeader(req);
    const charge = Math.max(1, h.creditCharge);
    if (charge > outstanding) problems.push(`message ${h.messageId} charged ${charge} with ${outstanding} granted`);
    outstanding -= charge;
    const later = (ms: number, make: () => Buffer): unknown => setTimeout(() => send(make()), ms);
    if (h.command === Command.WRITE && slow(writes++)) {
      later(slowMs, () => reply(h, Status.PENDING, HeaderFlags.ASYNC));
      later(slowMs + finalMs, () => reply(h, Status.SUCCESS, HeaderFlags.ASYNC));
    } else {
      later(answerMs(h.messageId), () => reply(h, Status.SUCCESS, 0));
    }
  });
  return { ...srv, problems };
}

/** `p`, or a failure naming `what` once `ms` passed (instead of a test that hangs until jest's own timeout). */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Resolves once `cond` holds (looked at every 10 ms). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
}

const ECHO_BODY = (): Buffer[] => [Buffer.from([4, 0, 0, 0])];

/**
 * Runs `body` on a connection (multi-credit dialect) to `srv` after one ECHO (the server's first grant), then checks
 * no request went out without its credits; closes both whatever happens.
 */
async function onConnection(srv: Awaited<ReturnType<typeof sambaCredits>>, body: (conn: SmbConnection) => Promise<void>): Promise<void> {
  const conn = await SmbConnection.open('127.0.0.1', srv.port, 10000);
  conn.dialect = Dialect.SMB300; // multi-credit requests
  try {
    await conn.request(Command.ECHO, ECHO_BODY());
    await body(conn);
    expect(srv.problems).toEqual([]);
  } finally {
    conn.close();
    await srv.close();
  }
}

describe('SmbConnection', () => {
  it('waits past an interim STATUS_PENDING for the final reply, even beyond the timeout', async () => {
    const srv = await scriptedServer((req, send) => {
      const mid = parseHeader(req).messageId;
      // The final comes after the request's 1 s deadline but well within 1 s of the interim. Both margins are about
      // half a second, so a loaded machine stalling the event loop does not decide the outcome.
      send(echoReply(mid, Status.PENDING, HeaderFlags.ASYNC), 500);
      send(echoReply(mid, Status.SUCCESS, HeaderFlags.ASYNC), 1050);
    });
    try {
      const conn = await SmbConnection.open('127.0.0.1', srv.port, 1000);
      const r = await conn.request(Command.ECHO, [Buffer.from([4, 0, 0, 0])]);
      expect(r.header.status).toBe(Status.SUCCESS);
      expect(conn.interimReplies).toBe(1);
      conn.close();
    } finally {
      await srv.close();
    }
  });

  it('ignores replies to ids it never sent and oplock breaks, and matches out-of-order replies', async () => {
    const srv = await scriptedServer((req, send) => {
      const mid = parseHeader(req).messageId;
      send(echoReply(mid + 1000, Status.SUCCESS));
      const brk = echoReply(0, Status.SUCCESS);
      brk.writeBigUInt64LE(0xffffffffffffffffn, 24);
      send(brk);
      send(echoReply(mid, Status.SUCCESS, 0, 10), mid === 0 ? 100 : 0); // the first request is answered last
    });
    try {
      const conn = await SmbConnection.open('127.0.0.1', srv.port, 2000);
      const first = conn.request(Command.ECHO, [Buffer.from([4, 0, 0, 0])]);
      const second = conn.request(Command.ECHO, [Buffer.from([4, 0, 0, 0])]);
      const [a, b] = await Promise.all([first, second]);
      expect([a.header.messageId, b.header.messageId]).toEqual([0, 1]);
      conn.close();
    } finally {
      await srv.close();
    }
  });

  it('fails every request in flight with ConnectionLostError when the server goes away', async () => {
    const srv = await scriptedServer(() => undefined);
    try {
      const conn = await SmbConnection.open('127.0.0.1', srv.port, 5000);
      const p = conn.request(Command.ECHO, [Buffer.from([4, 0, 0, 0])]);
      await new Promise((r) => setTimeout(r, 50));
      await srv.close();
      await expect(p).rejects.toBeInstanceOf(ConnectionLostError);
      await expect(conn.request(Command.ECHO, [Buffer.from([4, 0, 0, 0])])).rejects.toBeInstanceOf(ConnectionLostError);
    } finally {
      await srv.close().catch(() => undefined);
    }
  });
  describe('which replies prove they are the server\'s (Reply.authentic), judged by what was sent', () => {
    const KEY = Buffer.alloc(16, 1);
    /** A server answering each request by `answer(messageId, count)`: status, signed or not, the SessionId and TreeId it claims. */
    async function answering(answer: (mid: number, n: number) => { status: number; sign?: boolean; sessionId?: bigint; treeId?: number; async?: boolean }) {
      let n = 0;
      let mid = 0;
      return scriptedServer((req, send) => {
        // An encrypted request's header is out of sight: its message id is the next one.
        const h = req.readUInt32LE(0) === 0x424d53fe ? parseHeader(req) : { messageId: mid, sessionId: 7n };
        mid = h.messageId + 1;
        const a = answer(h.messageId, n++);
        if (a.async) send(echoReply(h.messageId, Status.PENDING, HeaderFlags.ASYNC));
        const r = echoReply(h.messageId, a.status, a.async ? HeaderFlags.ASYNC : 0, 1);
        r.writeBigUInt64LE(a.sessionId ?? h.sessionId, 40);
        if (!a.async) r.writeUInt32LE(a.treeId ?? 0, 36);
        if (a.sign) signMessage(0, KEY, [r], h.messageId);
        send(r);
      });
    }
    /** A connection past its logon (session 7, HMAC signing with KEY), with `extra` security settings. */
    async function loggedOn(port: number, extra: Partial<SmbConnection['security']> = {}): Promise<SmbConnection> {
      const conn = await SmbConnection.open('127.0.0.1', port, 5000);
      conn.security = { ...conn.security, sessionId: 7n, signingAlgorithm: 0, signingKey: KEY, ...extra };
      return conn;
    }
    const outcome = (p: Promise<{ authentic: boolean; interim: boolean; header: { status: number } }>) =>
      p.then(
        (r) => `${r.header.status === Status.SUCCESS ? 'ok' : 'refused'}${r.authentic ? ', authentic' : ''}${r.interim ? ', interim' : ''}`,
        (e: Error) => e.message.replace(/^reply from \S+ /, ''),
      );

    it('a session that neither signs nor encrypts: every reply, as no reply proves more than another', async () => {
      const srv = await answering(() => ({ status: Status.USER_SESSION_DELETED }));
      try {
        const conn = await SmbConnection.open('127.0.0.1', srv.port, 5000);
        expect(await outcome(conn.request(Command.ECHO, ECHO_BODY()))).toBe('refused, authentic');
        conn.close();
      } finally {
        await srv.close();
      }
    });

    it('signing required: a verified reply is, an unsigned error is not, and an unsigned success or one claiming another session is refused', async () => {
      const answers = [
        { status: Status.NETWORK_NAME_DELETED, sign: true },
        { status: Status.USER_SESSION_DELETED },
        { status: Status.SUCCESS },
        { status: Status.SUCCESS, sessionId: 0n },
        { status: Status.SUCCESS, sign: true, sessionId: 8n },
        { status: Status.NETWORK_NAME_DELETED, sign: true, async: true },
      ];
      const srv = await answering((mid, n) => answers[n]);
      try {
        const conn = await loggedOn(srv.port, { signAll: true });
        const got = [];
        for (let i = 0; i < answers.length; i++) got.push(await outcome(conn.request(Command.ECHO, ECHO_BODY())));
        expect(got).toEqual([
          'refused, authentic',
          'refused',
          'is not signed although signing is required',
          'is not signed although signing is required',
          'has a bad signature (tampered with, or a protocol error)',
          'refused, authentic, interim',
        ]);
        conn.close();
      } finally {
        await srv.close();
      }
    });

    it('a share that encrypts: a plain reply to an encrypted request is not, whatever TreeId it claims; a plain success is refused', async () => {
      const answers = [
        { status: Status.NETWORK_NAME_DELETED, treeId: 0 },
        { status: Status.NETWORK_NAME_DELETED, treeId: 5 },
        { status: Status.SUCCESS, sign: true },
        { status: Status.NETWORK_NAME_DELETED },
      ];
      const srv = await answering((mid, n) => answers[n]);
      try {
        const conn = await loggedOn(srv.port, { cipher: Cipher.AES128_GCM, encryptionKey: Buffer.alloc(16, 2), decryptionKey: Buffer.alloc(16, 3) });
        conn.dialect = Dialect.SMB311;
        conn.encryptedTrees.add(5);
        const onShare = () => conn.request(Command.ECHO, ECHO_BODY(), { treeId: 5 });
        expect([await outcome(onShare()), await outcome(onShare()), await outcome(onShare())]).toEqual([
          'refused',
          'refused',
          'is not encrypted although encryption is required',
        ]);
        // The same plain refusal to a request outside the share: this session does not sign, so it proves as much as any.
        expect(await outcome(conn.request(Command.ECHO, ECHO_BODY()))).toBe('refused, authentic');
        conn.close();
      } finally {
        await srv.close();
      }
    });
  });

  it('fails requests still waiting for credits when the connection dies as NotRunError, those sent as plain ConnectionLostError', async () => {
    // The server grants 4 credits with its first reply, then answers nothing.
    let first = true;
    const srv = await scriptedServer((req, send) => {
      if (!first) return;
      first = false;
      send(echoReply(parseHeader(req).messageId, Status.SUCCESS, 0, 4));
    });
    try {
      const conn = await SmbConnection.open('127.0.0.1', srv.port, 5000);
      conn.dialect = Dialect.SMB300;
      await conn.request(Command.ECHO, ECHO_BODY());
      const outcomes = Array.from({ length: 10 }, () => conn.request(Command.ECHO, ECHO_BODY()).then(() => null, (e: unknown) => e));
      await new Promise((r) => setTimeout(r, 100));
      await srv.close();
      const errors = await Promise.all(outcomes);
      expect(errors.map((e) => (e instanceof NotRunError ? 'not run' : e instanceof ConnectionLostError ? 'lost' : String(e)))).toEqual([
        ...Array(4).fill('lost'),
        ...Array(6).fill('not run'),
      ]);
      // And a request on the dead connection was never sent either.
      await expect(conn.request(Command.ECHO, ECHO_BODY())).rejects.toBeInstanceOf(NotRunError);
    } finally {
      await srv.close().catch(() => undefined);
    }
  });

  it('counts a refusal for a forgotten session or share as not run only when authentic, at once, and first of its chain', () => {
    const REFUSALS: number[] = [Status.USER_SESSION_DELETED, Status.NETWORK_SESSION_EXPIRED, Status.NETWORK_NAME_DELETED];
    fc.assert(
      fc.property(
        fc.constantFrom(...REFUSALS, Status.SUCCESS, Status.ACCESS_DENIED, Status.PENDING),
        fc.boolean(),
        fc.boolean(),
        fc.boolean(),
        fc.boolean(),
        (status, authentic, interim, asyncFlag, after) => {
          const header = parseHeader(echoReply(3, status, asyncFlag ? HeaderFlags.ASYNC : 0));
          const err = refusal('srv', { header, msg: Buffer.alloc(0), authentic, interim }, 'f', after);
          if (!REFUSALS.includes(status)) return err === null;
          const notRun = authentic && !interim && !asyncFlag && !after;
          return err instanceof ConnectionLostError && err instanceof NotRunError === notRun && err.subject === 'f';
        },
      ),
    );
  });

  describe('credits granted in an interim reply (Samba: smb2 max credits = 8, a WRITE async after 0.6 s)', () => {
    it('sizes writes by the credits the server really holds for them, and every write is answered', async () => {
      const srv = await sambaCredits(8, (n) => n === 0);
      await onConnection(srv, async (conn) => {
        expect(conn.creditWindow).toBe(8);
        const first = conn.request(Command.WRITE, [Buffer.alloc(48)], { payload: conn.payloadWithin(0) });
        first.catch(() => undefined); // awaited below; a failed assertion before that must not leave it unhandled
        // The slow WRITE's interim gave its 8 credits back; its final reply will grant none.
        await within(5000, 'the interim reply', until(() => conn.interimReplies === 1));
        expect(conn.creditWindow).toBe(8);
        expect(conn.payloadWithin(0)).toBe(8 * 65536);
        // Write-behind: more writes, each sized by the window when it is issued, while the first is async.
        const more = [0, 1, 2].map(() => conn.request(Command.WRITE, [Buffer.alloc(48)], { payload: conn.payloadWithin(0) }));
        more.forEach((p) => p.catch(() => undefined));
        const replies = await within(5000, 'four writes', Promise.all([first, ...more]));
        expect(replies.map((r) => r.header.status)).toEqual([0, 0, 0, 0]);
        expect(conn.creditWindow).toBe(8);
      });
    });

    it('never counts more than the server lets us hold: the first of several replies grants up to the maximum, the rest 0', async () => {
      // ECHOs after the first answered 100 ms apart, so the client sees the window between them.
      const srv = await sambaCredits(8, () => false, 0, 0, (mid) => (mid <= 1 ? 0 : (mid - 1) * 100));
      await onConnection(srv, async (conn) => {
        expect(conn.creditWindow).toBe(8);
        const echoes = [0, 1, 2, 3].map(() => conn.request(Command.ECHO, ECHO_BODY()));
        echoes.forEach((p) => p.catch(() => undefined));
        // The first grants 4 (8 held again), the others will grant 0: 8 in hand and 3 in flight, yet 8 is the limit.
        await within(5000, 'the first echo', echoes[0]);
        expect(conn.creditWindow).toBe(8);
        const write = conn.request(Command.WRITE, [Buffer.alloc(48)], { payload: conn.payloadWithin(0) });
        write.catch(() => undefined);
        expect((await within(5000, 'the write sized by the window', write)).header.status).toBe(Status.SUCCESS);
        await Promise.all(echoes);
      });
    });

    it('ends a request the window cannot hold with one line once the async request is finally answered (granting 0)', async () => {
      const srv = await sambaCredits(8, (n) => n === 0);
      await onConnection(srv, async (conn) => {
        const first = conn.request(Command.WRITE, [Buffer.alloc(48)], { payload: 8 * 65536 });
        first.catch(() => undefined);
        await within(5000, 'the interim reply', until(() => conn.interimReplies === 1));
        const tooBig = conn.request(Command.WRITE, [Buffer.alloc(48)], { payload: 16 * 65536 });
        tooBig.catch(() => undefined);
        await expect(within(5000, 'the 16-credit write', tooBig)).rejects.toThrow(/^SMB server 127\.0\.0\.1 grants at most 8 credits; a request needs 16$/);
        expect((await first).header.status).toBe(Status.SUCCESS);
      });
    });
  });
});
