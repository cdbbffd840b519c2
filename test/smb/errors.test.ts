/** Failures a user meets, each as one clear line: wrong password, unknown share, missing file, no permission, no server, no reply. */
import * as net from 'node:net';
import { haveSamba, PASSWORD, SambaServer, USER } from './samba-server.js';
import { SmbClient } from '../../src/io/smb/client.js';
import { NotFoundError, VhdsyncError } from '../../src/util/errors.js';

/** The error's one-line description, checked to be a typed error on a single line. */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(VhdsyncError);
    const line = (err as VhdsyncError).describe();
    expect(line).not.toContain('\n');
    return line;
  }
  throw new Error('expected a failure');
}

const run = haveSamba() ? describe : describe.skip;

run('SMB errors against Samba', () => {
  let server: SambaServer;
  let client: SmbClient;
  beforeAll(async () => {
    server = await SambaServer.start();
    client = server.client();
  });
  afterAll(async () => {
    await client?.shutdown();
    server?.stop();
  });

  it('wrong password: logon failure', async () => {
    const bad = new SmbClient({ host: '127.0.0.1', port: server.port, credentials: { user: USER, password: 'wrong', domain: '' } });
    expect(await failure(bad.connection())).toBe(`${USER}@127.0.0.1:${server.port}: logon failure (wrong user name or password)`);
  });

  it('a refused logon started early (prewarm) is thrown once: by the call that joined it, or else by the next one', async () => {
    const creds = { user: USER, password: 'wrong', domain: '' };
    const want = `${USER}@127.0.0.1:${server.port}: logon failure (wrong user name or password)`;
    // A call joins the early attempt and is given its failure; the call after it tries again (here: now it works).
    const joined = new SmbClient({ host: '127.0.0.1', port: server.port, credentials: creds });
    joined.prewarm('share');
    expect(await failure(joined.connection())).toBe(want);
    creds.password = PASSWORD;
    await joined.ensureShare('share');
    await joined.shutdown();
    // Nobody joined: the first call after it is given the kept failure without a second logon with that password.
    creds.password = 'wrong';
    const alone = new SmbClient({ host: '127.0.0.1', port: server.port, credentials: creds });
    alone.prewarm('share');
    await new Promise((r) => setTimeout(r, 500));
    creds.password = PASSWORD;
    expect(await failure(alone.connection())).toBe(want);
    await alone.ensureShare('share');
    await alone.shutdown();
  });

  it('unknown user: logon failure', async () => {
    const bad = new SmbClient({ host: '127.0.0.1', port: server.port, credentials: { user: 'nobody-here', password: 'x', domain: 'TESTGROUP' } });
    expect(await failure(bad.connection())).toMatch(/logon failure/);
  });

  it('unknown share: no such share', async () => {
    const line = await failure(server.store(client, 'nosuchshare').stat('/x'));
    expect(line).toBe(`//127.0.0.1:${server.port}/nosuchshare: no such share`);
  });

  it('missing file: NotFoundError naming the smb:// location', async () => {
    const p = server.store(client).open('/missing/file.vhdx', 'read');
    await expect(p).rejects.toBeInstanceOf(NotFoundError);
    expect(await failure(server.store(client).open('/missing.vhdx', 'read'))).toBe(
      `smb://${USER}@127.0.0.1:${server.port}/share/missing.vhdx: no such file or directory`,
    );
  });

  it('no permission: writing to a read-only share', async () => {
    expect(await failure(server.store(client, 'ro').createExclusive('/new.bin'))).toMatch(/\/ro\/new\.bin: permission denied$/);
  });

  it('creating a file that exists: already exists', async () => {
    const store = server.store(client);
    await (await store.createExclusive('/twice.bin')).close();
    expect(await failure(store.createExclusive('/twice.bin'))).toMatch(/twice\.bin: already exists$/);
  });

  it('opening a directory as a file: is a directory', async () => {
    const store = server.store(client);
    await store.mkdirp('/adir');
    expect(await failure(store.open('/adir', 'read'))).toMatch(/adir: is a directory$/);
  });
});

describe('SMB errors without a server', () => {
  it('nothing listening: connection refused', async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise((r) => s.close(r));
    const c = new SmbClient({ host: '127.0.0.1', port, credentials: { user: 'u', password: 'p', domain: '' } });
    expect(await failure(c.connection())).toBe(`cannot connect to 127.0.0.1:${port}: connection refused`);
  });

  it('a server that accepts but never answers: a timeout, not a hang', async () => {
    const sockets: net.Socket[] = [];
    const s = net.createServer((sock) => sockets.push(sock));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    try {
      const c = new SmbClient({ host: '127.0.0.1', port, credentials: { user: 'u', password: 'p', domain: '' }, timeoutMs: 300 });
      const started = Date.now();
      expect(await failure(c.connection())).toMatch(new RegExp(`no reply from 127.0.0.1:${port} within 0.3 s`));
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      sockets.forEach((x) => x.destroy());
      await new Promise((r) => s.close(r));
    }
  });

  it('a server that answers garbage: a clear protocol error', async () => {
    const s = net.createServer((sock) => sock.resume().end(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    try {
      const c = new SmbClient({ host: '127.0.0.1', port, credentials: { user: 'u', password: 'p', domain: '' }, timeoutMs: 2000 });
      expect(await failure(c.connection())).toMatch(/not direct TCP SMB|lost/);
    } finally {
      await new Promise((r) => s.close(r));
    }
  });
});
