/**
 * A TCP proxy between our SMB client and a real smbd that fails chosen FLUSHes on the wire: the server really flushes
 * (and runs whatever the chain holds after the FLUSH, as Samba does after a failed one), but the client is told the
 * FLUSH failed, as it would be when the server's fsync fails. The fault sits at the transport's edge, outside every
 * layer under test. It reads requests to learn which file each FLUSH is for (the CREATE's name in its chain, or the
 * FileId a CREATE answered), and rewrites the final reply of those FLUSHes to `status`, unsigned (a client accepts an
 * unsigned error reply, as Windows servers send some); with `'lose-answer'` it drops the connection instead of passing
 * such a FLUSH's answer on (the server flushed; the client cannot know how it went). Encrypted traffic cannot be read:
 * use unencrypted sessions.
 */
import * as net from 'node:net';

const CREATE = 0x05;
const FLUSH = 0x07;
const HEADER = 64;
const SIGNED = 0x08;
const ASYNC = 0x02;
const PENDING = 0x103;
const TRANSFORM = 0x424d53fd;
const RELATED_ID = 'ff'.repeat(16);

/** Calls `onFrame` with each whole direct-TCP frame (4-byte length included) found in the chunks pushed. */
function framer(onFrame: (frame: Buffer) => void): (chunk: Buffer) => void {
  let held: Buffer = Buffer.alloc(0);
  return (chunk) => {
    held = held.length ? Buffer.concat([held, chunk]) : chunk;
    while (held.length >= 4) {
      const len = held.readUInt32BE(0) & 0xffffff;
      if (held.length < 4 + len) break;
      onFrame(Buffer.from(held.subarray(0, 4 + len)));
      held = held.subarray(4 + len);
    }
  };
}

/** Each message's offset in a plain frame (after the 4-byte length); none for an encrypted one. */
function messages(frame: Buffer): number[] {
  if (frame.length < 8 || frame.readUInt32LE(4) === TRANSFORM) return [];
  const out: number[] = [];
  for (let off = 4; off + HEADER <= frame.length; ) {
    out.push(off);
    const next = frame.readUInt32LE(off + 20);
    if (!next) break;
    off += next;
  }
  return out;
}

/** The proxy: `port` to connect to; `failed` counts the FLUSH replies it turned into failures. */
export class FlushFaultProxy {
  failed = 0;
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /**
   * Proxies to `targetPort` on loopback; a FLUSH of a file whose share-relative name (backslashes) `fails` matches
   * is answered with `status` while `armed()` says so.
   */
  static async start(targetPort: number, fails: (name: string) => boolean, status: number | 'lose-answer', armed: () => boolean = () => true): Promise<FlushFaultProxy> {
    let proxy: FlushFaultProxy;
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
      proxy.sockets.add(client).add(upstream);
      const names = new Map<bigint, string>(); // CREATE request message id -> name
      const files = new Map<string, string>(); // FileId (hex) -> name
      const doomed = new Set<bigint>(); // FLUSH message ids whose reply is to fail
      client.on(
        'data',
        framer((frame) => {
          let chainName: string | null = null;
          for (const at of messages(frame)) {
            const command = frame.readUInt16LE(at + 12);
            const id = frame.readBigUInt64LE(at + 24);
            if (command === CREATE) {
              const nameAt = frame.readUInt16LE(at + HEADER + 44);
              const nameLength = frame.readUInt16LE(at + HEADER + 46);
              chainName = frame.subarray(at + nameAt, at + nameAt + nameLength).toString('utf16le');
              names.set(id, chainName);
            } else if (command === FLUSH) {
              const fileId = frame.subarray(at + HEADER + 8, at + HEADER + 24).toString('hex');
              const name = fileId === RELATED_ID ? chainName : (files.get(fileId) ?? null);
              if (name !== null && armed() && fails(name)) doomed.add(id);
            }
          }
          upstream.write(frame);
        }),
      );
      let lost = false;
      upstream.on(
        'data',
        framer((frame) => {
          if (lost) return;
          for (const at of messages(frame)) {
            const command = frame.readUInt16LE(at + 12);
            const id = frame.readBigUInt64LE(at + 24);
            const got = frame.readUInt32LE(at + 8);
            if (got === PENDING && frame.readUInt32LE(at + 16) & ASYNC) continue;
            if (command === CREATE && names.has(id)) {
              if (got === 0) files.set(frame.subarray(at + HEADER + 64, at + HEADER + 80).toString('hex'), names.get(id)!);
              names.delete(id);
            } else if (command === FLUSH && status === 'lose-answer' && doomed.delete(id)) {
              // smbd ran the FLUSH; its answer is lost with the connection.
              proxy.failed++;
              lost = true;
              client.destroy();
              upstream.destroy();
              return;
            } else if (command === FLUSH && status !== 'lose-answer' && doomed.delete(id) && got === 0) {
              frame.writeUInt32LE(status, at + 8);
              frame.writeUInt32LE(frame.readUInt32LE(at + 16) & ~SIGNED, at + 16);
              frame.fill(0, at + 48, at + 64);
              proxy.failed++;
            }
          }
          client.write(frame);
        }),
      );
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new FlushFaultProxy(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  /** Stops listening and drops every connection. */
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
