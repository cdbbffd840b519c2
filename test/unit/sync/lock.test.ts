import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { lockImage, lockLocationFor } from '../../../src/sync/lock.js';
import { parseLocation } from '../../../src/io/location.js';
import { BusyError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';

describe('image locks', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeEach(() => (tmp = makeTempDir()));
  afterEach(() => tmp.cleanup());
  const image = () => parseLocation(path.join(tmp.dir, 'disk.vhdx'));

  it('admits one run at a time and names the holder', async () => {
    const img = await image();
    const held = await lockImage(img, 'merge');
    const err = await lockImage(img, 'copy').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusyError);
    expect((err as BusyError).describe()).toMatch(new RegExp(`disk\\.vhdx: in use by a merge \\(pid ${process.pid} on .*\\); if that run is gone, delete .*disk\\.vhdx\\.vhdsync-lock$`));
    await held.release();
    expect(existsSync(lockLocationFor(img).path)).toBe(false);
    await (await lockImage(img, 'copy')).release();
  });

  it('takes over the lock of a run that was killed on this host, never one from another host', async () => {
    const img = await image();
    const lockPath = lockLocationFor(img).path;
    // A process that has exited: its pid is free (a reused pid would only make the lock look held, never lost).
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    writeFileSync(lockPath, JSON.stringify({ pid: Number(gone), host: hostname(), op: 'merge', since: 'then' }));
    const l = await lockImage(img, 'copy');
    expect(JSON.parse(readFileSync(lockPath, 'utf8'))).toMatchObject({ pid: process.pid, op: 'copy' });
    await l.release();

    writeFileSync(lockPath, JSON.stringify({ pid: Number(gone), host: 'another-host', op: 'merge', since: 'then' }));
    await expect(lockImage(img, 'copy')).rejects.toThrow(/in use by a merge .* on another-host/);
  });

  it('treats an unreadable lock as being written unless it is old', async () => {
    const img = await image();
    const lockPath = lockLocationFor(img).path;
    writeFileSync(lockPath, '');
    await expect(lockImage(img, 'copy')).rejects.toBeInstanceOf(BusyError);
    const old = new Date(Date.now() - 60_000);
    utimesSync(lockPath, old, old);
    await (await lockImage(img, 'copy')).release();
  });
});
