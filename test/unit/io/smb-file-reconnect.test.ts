/**
 * An SMB file across reconnects, against a scripted server (a stand-in for SmbClient): writes in flight when the
 * connection drops share one reopened handle (not one leaked handle each); a second close sends no second CLOSE.
 */
import { SmbStore } from '../../../src/io/smb/store.js';
import type { SmbClient } from '../../../src/io/smb/client.js';
import { ConnectionLostError, StaleHandleError } from '../../../src/io/smb/status.js';

class ScriptedServer {
  generation = 1;
  cache = Buffer.alloc(0);
  durable = Buffer.alloc(0);
  creates = 0;
  closes = 0;
  private fileIds = 0;
  /** The server host restarts: the connection dies and what was not flushed is gone. */
  restart(): void {
    this.cache = Buffer.from(this.durable);
    this.generation++;
  }
  private grow(to: number): void {
    if (this.cache.length < to) this.cache = Buffer.concat([this.cache, Buffer.alloc(to - this.cache.length)]);
  }
  client(): SmbClient {
    const s = this;
    const alive = (h: { generation: number }) => {
      // The client's call sees a handle of an earlier connection before sending anything.
      if (h.generation !== s.generation) throw new StaleHandleError('connection to fake:445 was re-established; the file must be reopened');
    };
    const c = {
      get generation() {
        return s.generation;
      },
      async connection() {
        return {};
      },
      async reconnect() {},
      async ensureShare() {},
      async create(share: string) {
        s.creates++;
        return { share, treeId: 1, fileId: Buffer.alloc(16, ++s.fileIds), generation: s.generation, info: { endOfFile: 0, mtimeMs: 0, attributes: 0 } };
      },
      async write(h: { generation: number }, pos: number, data: Uint8Array) {
        await new Promise((r) => setTimeout(r, 1));
        alive(h);
        s.grow(pos + data.byteLength);
        Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(s.cache, pos);
      },
      async read(h: { generation: number }, pos: number, len: number, into: Buffer, at: number) {
        alive(h);
        return s.cache.copy(into, at, pos, Math.min(pos + len, s.cache.length));
      },
      async echo(h: { generation: number }) {
        alive(h);
      },
      async flush(h: { generation: number }) {
        alive(h);
        s.durable = Buffer.from(s.cache);
      },
      async close() {
        s.closes++;
      },
    };
    return c as unknown as SmbClient;
  }
}

const open = async (server: ScriptedServer) => new SmbStore(server.client(), 'share', 'smb://u@fake/share').open('/disk.vhdx', 'readwrite');

describe('SMB file across reconnects', () => {
  it('writes in flight when the connection drops reopen the file once, not once each', async () => {
    const server = new ScriptedServer();
    const f = await open(server);
    const writes = [0, 1, 2, 3].map((i) => f.write(i * 16, Buffer.alloc(16, i + 1)));
    server.restart();
    await Promise.all(writes);
    await f.flush();
    expect(server.creates).toBe(2);
    expect(server.durable.subarray(0, 64).equals(Buffer.concat([1, 2, 3, 4].map((v) => Buffer.alloc(16, v))))).toBe(true);
    await Promise.all([f.close(), f.close()]);
    expect(server.closes).toBe(1);
    await expect(f.write(0, Buffer.alloc(1))).rejects.toThrow(/file already closed/);
  });
});
