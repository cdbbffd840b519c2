/**
 * A server that grants few credits (Samba's `smb2 max credits`): a chain or a READ/WRITE charged more than the server
 * has granted would wait for grants that never come. Every operation must fit what was granted and finish, with the
 * bytes smbd stored as the oracle; a deadline turns the old hang into a failure that says so.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { haveSamba, SambaServer } from './samba-server.js';
import { writeBytesAtomically, writeSizedAtomically } from '../../src/io/atomic.js';
import type { SmbClient } from '../../src/io/smb/client.js';

const run = haveSamba() ? describe : describe.skip;

/** `p`, or a failure naming `what` once `ms` passed (instead of a test that hangs until jest's own timeout). */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms / 1000} s (for credits?)`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

// Under a 4 MiB chain's 67 credits and under even one 1 MiB READ or WRITE's 16.
run.each([8])('Samba granting at most %i credits', (max) => {
  let server: SambaServer;
  let client: SmbClient;
  beforeAll(async () => {
    server = await SambaServer.start({ maxCredits: max, aio: true });
    client = server.client();
  });
  afterAll(async () => {
    await client?.shutdown();
    server?.stop();
  });

  it('publishes 4 MiB in chains, writes and reads 3 MiB through a handle, reads a file whole: each within what is granted', async () => {
    const store = server.store(client);
    const local = (n: string) => path.join(server.shareDir, n);
    const big = randomBytes(4 << 20);
    await within(15000, 'writeBytesAtomically of 4 MiB', writeBytesAtomically({ store, path: '/big.bin' }, big));
    expect(readFileSync(local('big.bin')).equals(big)).toBe(true);
    const list = randomBytes((3 << 20) + 5);
    await within(15000, 'writeSizedAtomically of 3 MiB', writeSizedAtomically({ store, path: '/list.bin' }, list.length, (out) => out.write(0, list)));
    expect(readFileSync(local('list.bin')).equals(list)).toBe(true);

    const data = randomBytes(3 << 20);
    const f = await store.createExclusive('/handle.bin');
    await within(15000, 'a 3 MiB write, flush and close', (async () => {
      await f.write(0, data);
      await f.flush();
      await f.close();
    })());
    expect(readFileSync(local('handle.bin')).equals(data)).toBe(true);

    const small = await within(15000, 'readSmall of 4 MiB', store.readSmall!('/big.bin', 4 << 20));
    expect(small!.bytes.equals(big)).toBe(true);
    writeFileSync(local('theirs.bin'), data);
    const r = await store.open('/theirs.bin', 'read', { readAhead: 1 << 20 });
    const back = await within(15000, 'a 3 MiB read', r.read(0, data.length));
    await r.close();
    expect(back.equals(data)).toBe(true);
    // The server did hold the window down: what made the old code wait.
    expect((await client.connection()).creditWindow).toBeLessThanOrEqual(max);
  });
});
