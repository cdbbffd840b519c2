/** SmbConnection against a scripted server: interim replies, late finals, stray replies, credits, timeouts. */
import * as net from 'node:net';
import { SmbConnection } from '../../src/io/smb/connection.js';
import { Command, HeaderFlags, parseHeader, serializeHeader } from '../../src/io/smb/header.js';
import { Status } from '../../src/io/smb/status.js';
import { ConnectionLostError } from '../../src/io/smb/status.js';

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
});
