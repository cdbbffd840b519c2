/**
 * SMB2 compounding (src/io/smb/compound.ts, SmbConnection.compound): the chain layout, the connection matching
 * every reply of a chain to its request however the server splits, delays or reorders them, and the judgement of a
 * chain's statuses against a model of [MS-SMB2] 3.3.5.2.7.2 (the real server is Samba, in matrix.test.ts).
 */
import * as net from 'node:net';
import fc from 'fast-check';
import { chainMessages, chainOutcome, splitChain } from '../../src/io/smb/compound.js';
import { SmbConnection } from '../../src/io/smb/connection.js';
import { Command, HEADER_SIZE, HeaderFlags, serializeHeader } from '../../src/io/smb/header.js';
import { Status } from '../../src/io/smb/status.js';
import { IoError } from '../../src/util/errors.js';

const header = (command: number, messageId: number, flags = 0) => serializeHeader({ creditCharge: 1, command, credits: 1, flags, messageId, treeId: 7, sessionId: 9n });

describe('chain layout', () => {
  it('splitChain gives back every message of chainMessages, aligned, padded with zeros, in order', () => {
    const message = fc.record({ command: fc.integer({ min: 0, max: 18 }), body: fc.uint8Array({ maxLength: 200 }) });
    fc.assert(
      fc.property(fc.array(message, { minLength: 1, maxLength: 8 }), (msgs) => {
        const laid = chainMessages(msgs.map((m, i) => [header(m.command, 100 + i), Buffer.from(m.body)]));
        const frame = Buffer.concat(laid.flat());
        const split = splitChain(frame);
        expect(split).toHaveLength(msgs.length);
        let at = 0;
        split.forEach(({ header: h, msg }, i) => {
          expect(at % 8).toBe(0);
          expect([h.command, h.messageId]).toEqual([msgs[i].command, 100 + i]);
          expect(msg.subarray(HEADER_SIZE, HEADER_SIZE + msgs[i].body.length).equals(Buffer.from(msgs[i].body))).toBe(true);
          expect(msg.subarray(HEADER_SIZE + msgs[i].body.length).every((b) => b === 0)).toBe(true);
          expect(h.nextCommand).toBe(i === msgs.length - 1 ? 0 : msg.length);
          expect(msg.length - HEADER_SIZE - msgs[i].body.length).toBeLessThan(i === msgs.length - 1 ? 1 : 8);
          at += msg.length;
        });
        expect(at).toBe(frame.length);
      }),
    );
  });

  it('refuses a chain whose NextCommand is unaligned, inside the header or past the frame', () => {
    const laid = chainMessages([[header(Command.CREATE, 1), Buffer.alloc(20)], [header(Command.CLOSE, 2), Buffer.alloc(24)]]);
    const frame = Buffer.concat(laid.flat());
    for (const bad of [HEADER_SIZE + 20, 8, frame.length + 8]) {
      const f = Buffer.from(frame);
      f.writeUInt32LE(bad, 20);
      expect(() => splitChain(f)).toThrow(IoError);
    }
  });
});

describe('chain outcome against a model server ([MS-SMB2] 3.3.5.2.7.2)', () => {
  const OK_STATUSES = [Status.SUCCESS, Status.END_OF_FILE, Status.NO_MORE_FILES];
  const FAILURES = [Status.ACCESS_DENIED, Status.OBJECT_NAME_NOT_FOUND, Status.DISK_FULL, Status.OBJECT_NAME_COLLISION, Status.INVALID_PARAMETER];

  it('names the first real failure, and says the file is open exactly when the server still holds it', () => {
    const scenario = fc.record({
      // Per request after the CREATE: the statuses it accepts, and what the server answers when nothing failed before.
      ops: fc.array(fc.record({ ok: fc.subarray(OK_STATUSES.slice(1)), answer: fc.constantFrom(...OK_STATUSES) }), { maxLength: 4 }),
      failAt: fc.option(fc.nat(5), { nil: undefined }),
      failure: fc.constantFrom(...FAILURES),
      // 'windows': every later request fails with the same status; 'samba': only after a failed CREATE.
      style: fc.constantFrom('windows', 'samba'),
    });
    fc.assert(
      fc.property(scenario, ({ ops, failAt, failure, style }) => {
        const n = ops.length + 2; // CREATE, ops, CLOSE
        const at = failAt !== undefined && failAt < n ? failAt : -1;
        // The model server: one handle table, requests run in order.
        let open = false;
        let cascade: number | null = null;
        const statuses: number[] = [];
        for (let i = 0; i < n; i++) {
          if (cascade !== null) {
            statuses.push(cascade);
            continue;
          }
          const status = i === at ? failure : i === 0 || i === n - 1 ? Status.SUCCESS : ops[i - 1].answer;
          if (i === 0 && status === Status.SUCCESS) open = true;
          if (i === n - 1 && status === Status.SUCCESS) open = false;
          statuses.push(status);
          if (status === failure && (style === 'windows' || i === 0)) cascade = status;
        }
        const outcome = chainOutcome(statuses, ops.map((o) => [Status.SUCCESS, ...o.ok]));
        // The cause: the injected failure, else the first answer a request does not accept.
        const unaccepted = ops.findIndex((o) => ![Status.SUCCESS, ...o.ok].includes(o.answer));
        const firstBad = at >= 0 && (unaccepted < 0 || at <= unaccepted + 1) && at < n - 1 ? at : unaccepted >= 0 ? unaccepted + 1 : -1;
        expect(outcome.failed).toBe(firstBad);
        if (firstBad > 0) expect(statuses[outcome.failed]).toBe(at === firstBad ? failure : ops[firstBad - 1].answer);
        expect(outcome.open).toBe(open);
      }),
      { numRuns: 500 },
    );
  });
});

/**
 * A server that answers every message of every chain with a reply naming the message's index in its chain, after
 * optional interim replies, in frames split and ordered as `plan` says. Checks the RELATED flags as it goes.
 */
async function chainServer(plan: () => { together: boolean; reverse: boolean; interim: boolean; capped?: boolean }) {
  const problems: string[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((sock) => {
    sockets.push(sock);
    let buf = Buffer.alloc(0);
    const send = (msgs: Buffer[][]) => {
      const frame = Buffer.concat(chainMessages(msgs).flat());
      const len = Buffer.alloc(4);
      len.writeUInt32BE(frame.length);
      if (!sock.destroyed) sock.write(Buffer.concat([len, frame]));
    };
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + (buf.readUInt32BE(0) & 0xffffff)) {
        const len = buf.readUInt32BE(0) & 0xffffff;
        const chain = splitChain(buf.subarray(4, 4 + len));
        buf = buf.subarray(4 + len);
        const { together, reverse, interim, capped } = plan();
        const replies = chain.map(({ header: h }, i) => {
          if (((h.flags & HeaderFlags.RELATED) !== 0) !== (i > 0)) problems.push(`message ${i} of ${chain.length}: RELATED flag ${h.flags & HeaderFlags.RELATED}`);
          // Capped: each reply gives back only what its request spent, so the client's window never grows.
          const r = serializeHeader({ creditCharge: 1, command: h.command, credits: capped ? Math.max(1, h.creditCharge) : 8, flags: HeaderFlags.SERVER_TO_REDIR, messageId: h.messageId, treeId: 0, sessionId: 0n });
          const body = Buffer.alloc(4);
          body.writeUInt16LE(i, 0);
          return [r, body];
        });
        if (interim) {
          // An interim reply for the last message (the only one a server may take async in a chain).
          const last = chain[chain.length - 1].header;
          const r = serializeHeader({ creditCharge: 1, command: last.command, credits: 0, flags: HeaderFlags.SERVER_TO_REDIR | HeaderFlags.ASYNC, messageId: last.messageId, treeId: 0, sessionId: 0n });
          r.writeUInt32LE(Status.PENDING, 8);
          send([[r, Buffer.alloc(9)]]);
        }
        const ordered = reverse ? [...replies].reverse() : replies;
        if (together) send(ordered);
        else for (const r of ordered) setTimeout(() => send([r]), 1);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    problems,
    close: async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((r) => server.close(r));
    },
  };
}

describe('SmbConnection.compound', () => {
  it('fails a chain the server never grants the credits for with one line, instead of asking forever', async () => {
    const srv = await chainServer(() => ({ together: true, reverse: false, interim: false, capped: true }));
    const conn = await SmbConnection.open('127.0.0.1', srv.port, 10000);
    try {
      // One credit to start with, and a server that only ever gives back what was spent.
      expect(conn.creditWindow).toBe(1);
      expect((await conn.compound([{ command: Command.ECHO, body: [Buffer.alloc(4)] }]))[0].header.command).toBe(Command.ECHO);
      const chain = [Command.CREATE, Command.FLUSH, Command.CLOSE].map((command) => ({ command, body: [Buffer.alloc(8)] }));
      await expect(conn.compound(chain)).rejects.toThrow(/^SMB server 127\.0\.0\.1 grants at most 1 credit; a request needs 3$/);
      expect(srv.problems).toEqual([]);
    } finally {
      conn.close();
      await srv.close();
    }
  });


  it('matches every reply to its request, whether the server answers in one frame or several, in order or not, after interim replies', async () => {
    let current = { together: true, reverse: false, interim: false };
    const srv = await chainServer(() => current);
    const conn = await SmbConnection.open('127.0.0.1', srv.port, 10000);
    try {
      const commands = fc.constantFrom(Command.CREATE, Command.READ, Command.WRITE, Command.FLUSH, Command.QUERY_INFO, Command.SET_INFO, Command.CLOSE);
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(commands, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 4 }),
          fc.record({ together: fc.boolean(), reverse: fc.boolean(), interim: fc.boolean() }),
          async (chains, how) => {
            current = how;
            // Several chains in flight at once, each waiting for its own replies.
            const results = await Promise.all(chains.map((cmds) => conn.compound(cmds.map((command) => ({ command, body: [Buffer.alloc(8)] })))));
            results.forEach((replies, c) => {
              expect(replies.map((r) => r.header.command)).toEqual(chains[c]);
              expect(replies.map((r) => r.msg.readUInt16LE(HEADER_SIZE))).toEqual(chains[c].map((_, i) => i));
            });
          },
        ),
        { numRuns: 60 },
      );
      expect(srv.problems).toEqual([]);
    } finally {
      conn.close();
      await srv.close();
    }
  });
});
