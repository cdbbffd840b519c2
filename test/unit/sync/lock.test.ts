import { jest } from '@jest/globals';
import { existsSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { lockImage, lockLocationFor, type LockTiming } from '../../../src/sync/lock.js';
import { recordingStore } from '../../../src/io/recording-store.js';
import { localStore } from '../../../src/io/local.js';
import { parseLocation, type Location } from '../../../src/io/location.js';
import { BusyError, IoError } from '../../../src/util/errors.js';
import { bootId, pidNamespace, processStart } from '../../../src/util/process-identity.js';
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
    expect((err as BusyError).describe()).toMatch(new RegExp(`disk\\.vhdx: in use by a merge \\(pid ${process.pid} on .*\\); if that run is gone, delete .*disk\\.vhdx\\.vhdsync-lock \\(a later run takes it over once it has gone 120 s without renewal\\)$`));
    await held.release();
    expect(existsSync(lockLocationFor(img).path)).toBe(false);
    await (await lockImage(img, 'copy')).release();
  });

  it('takes over the lock of a run that was killed on this boot of this host, never one from another host', async () => {
    const img = await image();
    const lockPath = lockLocationFor(img).path;
    // A process that has exited: its pid is free.
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    const here = { host: hostname(), boot: bootId()!, pidns: pidNamespace()!, op: 'merge', since: 'then' };
    writeFileSync(lockPath, JSON.stringify({ ...here, pid: Number(gone), start: '1' }));
    const l = await lockImage(img, 'copy');
    expect(JSON.parse(readFileSync(lockPath, 'utf8'))).toMatchObject({ pid: process.pid, op: 'copy', boot: bootId(), start: processStart(process.pid) });
    await l.release();
    // Our own pid recorded with another start time: a holder whose pid was reused since, also gone.
    writeFileSync(lockPath, JSON.stringify({ ...here, pid: process.pid, start: '1' }));
    await (await lockImage(img, 'copy')).release();

    writeFileSync(lockPath, JSON.stringify({ pid: Number(gone), host: 'another-host', op: 'merge', since: 'then' }));
    await expect(lockImage(img, 'copy')).rejects.toThrow(/in use by a merge .* on another-host/);
    // A VM cloned from the same template has our host name but another boot id: its holder may be alive there.
    writeFileSync(lockPath, JSON.stringify({ ...here, pid: Number(gone), start: '1', boot: '00000000-0000-4000-8000-000000000000' }));
    await expect(lockImage(img, 'copy')).rejects.toThrow(/in use by a merge /);
    // A container on this kernel (same host name and boot id, its own pid namespace): its pid means nothing here.
    writeFileSync(lockPath, JSON.stringify({ ...here, pid: Number(gone), start: '1', pidns: 'pid:[1]' }));
    await expect(lockImage(img, 'copy')).rejects.toThrow(/in use by a merge /);
    // An older version's record (no boot id, no start time) counts as another host's too.
    writeFileSync(lockPath, JSON.stringify({ pid: Number(gone), host: hostname(), op: 'merge', since: 'then' }));
    await expect(lockImage(img, 'copy')).rejects.toThrow(/in use by a merge /);
    // The same host, boot and start time as a live process (ours): held.
    writeFileSync(lockPath, JSON.stringify({ ...here, pid: process.pid, start: processStart(process.pid) }));
    await expect(lockImage(img, 'copy')).rejects.toThrow(/in use by a merge /);
  });

  it('never takes over a live holder running as pid 1 of another pid namespace (a container on this kernel)', async () => {
    // The holder shares our host name and boot id; in its namespace it is pid 1, which here is init (alive) or, in
    // a namespace of our own, nobody: only the recorded namespace tells the two apart.
    const unshare = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true']);
    if (unshare.status !== 0) {
      console.log(`skipped: needs unshare --pid (root): ${String(unshare.stderr || unshare.error).trim()}`);
      return;
    }
    const img = await image();
    const holder = spawn('unshare', ['--pid', '--fork', '--mount-proc', process.execPath, path.resolve('test/unit/sync/lock-racer.mjs'), path.resolve('dist'), img.path]);
    const lines = createInterface({ input: holder.stdout });
    const next = (): Promise<string> => new Promise((resolve) => lines.once('line', resolve));
    try {
      expect(await next()).toBe('ready');
      holder.stdin.write('go\n');
      expect(await next()).toBe('won');
      const held = JSON.parse(readFileSync(lockLocationFor(img).path, 'utf8'));
      expect(held).toMatchObject({ pid: 1, boot: bootId() });
      expect(held.pidns).not.toBe(pidNamespace());
      await expect(lockImage(img, 'copy', FAST)).rejects.toThrow(/in use by a copy \(pid 1 /);
    } finally {
      holder.stdin.write('quit\n');
      await new Promise((resolve) => holder.once('exit', resolve));
    }
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

  /** Short lease timing, so expiry is testable: renew every 0.1 s, write for 1 s after one, lease 3 s. */
  const FAST: LockTiming = { leaseMs: 3000, renewMs: 100, authorityMs: 1000 };
  const record = (over: object) => JSON.stringify({ pid: 1, host: 'crashed-host', op: 'merge', since: 'then', token: 'feedfacefeedface', generation: 7, ...over });

  it('takes over a lock from another host once its lease lapsed and nobody renewed it while watched', async () => {
    const img = await image();
    const lockPath = lockLocationFor(img).path;
    writeFileSync(lockPath, record({ renewed: new Date(Date.now() - 10_000).toISOString(), leaseMs: 3000 }));
    const t0 = performance.now();
    const said: string[] = [];
    const spy = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (said.push(String(chunk)), true));
    let l: Awaited<ReturnType<typeof lockImage>>;
    try {
      l = await lockImage(img, 'copy', FAST);
    } finally {
      spy.mockRestore();
    }
    // Not trusting the clocks: the lock was watched for one whole lease before it was broken.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(3000);
    // The wait is not silent: one line says whose lock is being watched and for how long.
    expect(said).toEqual([
      expect.stringMatching(/^vhdsync: .*disk\.vhdx\.vhdsync-lock: held by a merge \(pid 1 on crashed-host\) that has not renewed its lease since .*; watching it for 3 s before taking it over\n$/),
    ]);
    expect(JSON.parse(readFileSync(lockPath, 'utf8'))).toMatchObject({ pid: process.pid, op: 'copy', generation: 0 });
    await l.release();
    expect(existsSync(lockPath)).toBe(false);
    // Nothing left behind: no takeover claim, no moved-aside lock.
    expect(readdirSync(tmp.dir)).toEqual([]);
  });

  it('respects a lease from another host that has not lapsed, and one that keeps being renewed whatever its clock says', async () => {
    const img = await image();
    const lockPath = lockLocationFor(img).path;
    writeFileSync(lockPath, record({ renewed: new Date().toISOString(), leaseMs: 60_000 }));
    const t0 = performance.now();
    await expect(lockImage(img, 'copy', FAST)).rejects.toThrow(/in use by a merge \(pid 1 on crashed-host.*takes it over once it has gone 60 s without renewal/);
    expect(performance.now() - t0).toBeLessThan(2000);

    // A holder whose clock runs an hour behind ours: its lease looks lapsed, but its generation keeps moving.
    let generation = 0;
    const renew = () => writeFileSync(lockPath, record({ renewed: new Date(Date.now() - 3_600_000).toISOString(), leaseMs: 300, generation: ++generation }));
    renew();
    const renewer = setInterval(renew, 60);
    try {
      await expect(lockImage(img, 'copy', FAST)).rejects.toBeInstanceOf(BusyError);
    } finally {
      clearInterval(renewer);
    }
    expect(JSON.parse(readFileSync(lockPath, 'utf8'))).toMatchObject({ host: 'crashed-host' });
  });

  it('renews a held lease, so a live holder is never taken over', async () => {
    const img = await image();
    const lockPath = lockLocationFor(img).path;
    // Each renewal is a write and an fsync of the lock file; with other suites filling the disk an fsync can take
    // over a second here, so this test gives the holder 5 s of authority (production: 90 s) and outlives it.
    const held = await lockImage(img, 'merge', { leaseMs: 12_000, renewMs: 100, authorityMs: 5000 });
    const guarded = held.guard(img);
    await new Promise((r) => setTimeout(r, 6000));
    // Past its first authority window the holder is still the holder, still allowed to write, and others are refused.
    expect(JSON.parse(readFileSync(lockPath, 'utf8')).generation).toBeGreaterThan(3);
    await expect(lockImage(img, 'copy', FAST)).rejects.toThrow(/in use by a merge/);
    const f = await guarded.store.createExclusive(guarded.path);
    await f.write(0, Buffer.from('ok'));
    await f.close();
    await held.release();
    expect(existsSync(lockPath)).toBe(false);
  });

  it('stops writing once its lease cannot be renewed, and then loses the lock to a later run', async () => {
    const dir = tmp.dir;
    let shareGone = false;
    // The store of a share that goes away: every change to the lock file fails from then on.
    const store = recordingStore(localStore, (e) => {
      if (shareGone && e.op !== 'open' && e.path.endsWith('.vhdsync-lock')) throw new IoError('connection lost', 'share');
    });
    const img: Location = { store, path: path.join(dir, 'disk.vhdx') };
    const held = await lockImage(img, 'merge', FAST);
    const data = held.guard({ store: localStore, path: path.join(dir, 'data.bin') });
    const f = await data.store.createExclusive(data.path);
    await f.write(0, Buffer.alloc(10, 1));
    shareGone = true;
    await new Promise((r) => setTimeout(r, 1200));
    await expect(f.write(10, Buffer.alloc(10, 2))).rejects.toThrow(/lost the lock \(its lease could not be renewed for 1 s\); stopped writing/);
    await expect(f.flush()).rejects.toBeInstanceOf(BusyError);
    await f.close();
    expect(readFileSync(data.path)).toEqual(Buffer.alloc(10, 1));
    // The lapsed holder leaves the file alone (it may be someone else's by now) ...
    await held.release();
    expect(existsSync(lockLocationFor(img).path)).toBe(true);
    // ... and a later run (here on this host, the holder's pid still alive) watches it for a lease, then takes it.
    shareGone = false;
    await new Promise((r) => setTimeout(r, 2500));
    const t0 = performance.now();
    await (await lockImage(img, 'copy', FAST)).release();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(3000);
  });
});
