/**
 * Imports are all or nothing: a client that stops at 10 points of its upload, and a server killed with SIGKILL at
 * 10 points of an import (the store-mutation hook, VHDSYNC_TEST_KILL_AFTER_WRITES), leave the disk reading as its
 * old or its new content, `qemu-img check` clean, and nothing else in the folder once the server has started again.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, haveTool, requireTool } from '../helpers/tools.js';
import { leftovers, must, qemuRaw, runAsync, serveDir, sha256, spawnServe, tool } from './serve-helpers.js';

const MIB = 1 << 20;
const ok = requireTool(HAVE_QEMU && haveTool('curl'), 'qemu-img and curl');
const d = ok ? describe : describe.skip;

d('serve: imports survive dropped clients and killed servers', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let dir: string;
  const disk = () => path.join(dir, 'd.vhdx');
  const body = Buffer.alloc(6 * MIB);
  let oldSum: string;
  let newSum: string;
  let pristine: string;

  beforeAll(async () => {
    tmp = makeTempDir('serve-crash-');
    dir = path.join(tmp.dir, 'disks');
    fs.mkdirSync(dir);
    for (let i = 0; i < body.length; i += 512) body.fill((i >> 9) & 0xff, i, i + 512);
    fs.writeFileSync(path.join(tmp.dir, 'body.raw'), body);
    pristine = path.join(tmp.dir, 'pristine.vhdx');
    await tool('qemu-img', ['create', '-q', '-f', 'vhdx', pristine, '8M']);
    await tool('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x33 0 8M', pristine]);
    oldSum = sha256(await qemuRaw(pristine, tmp.dir));
    const expected = Buffer.alloc(8 * MIB, 0x33);
    body.copy(expected, 0);
    newSum = sha256(expected);
  });
  afterAll(() => tmp.cleanup());

  async function checkDisk(): Promise<'old' | 'new'> {
    await tool('qemu-img', ['check', '-q', disk()]);
    const sum = sha256(await qemuRaw(disk(), tmp.dir));
    expect([oldSum, newSum]).toContain(sum);
    expect(leftovers(dir, ['d.vhdx'])).toEqual([]);
    return sum === oldSum ? 'old' : 'new';
  }

  it('a client that stops after 0..90% of its body leaves the old content; the whole body gives the new one', async () => {
    fs.copyFileSync(pristine, disk());
    const server = await serveDir(dir);
    try {
      for (let k = 0; k < 10; k++) {
        const cut = Math.floor((body.length * k) / 10) + (k % 3) * 4093;
        await new Promise<void>((resolve) => {
          const s = net.connect(server.port, '127.0.0.1', () => {
            s.write(`PUT /import_raw_vdi?vdi=d.vhdx&format=raw&task_id=cut-${k} HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n`);
            s.write(body.subarray(0, cut), () => setTimeout(() => s.destroy(), 50));
          });
          s.on('error', () => {});
          s.on('close', () => resolve());
        });
        let t = { status: 'pending' };
        for (let i = 0; i < 100 && t.status === 'pending'; i++) {
          if (i) await new Promise((r) => setTimeout(r, 50));
          t = JSON.parse((await must('curl', ['-sS', `${server.url}/task/cut-${k}`])).toString());
        }
        expect([k, t.status]).toEqual([k, 'failure']);
        expect(await checkDisk()).toBe('old');
      }
      await must('curl', ['-sS', '-T', path.join(tmp.dir, 'body.raw'), `${server.url}/import_raw_vdi?vdi=d.vhdx`]);
      expect(await checkDisk()).toBe('new');
    } finally {
      await server.close();
    }
  });

  it('a server killed at 10 points of an import: after the next start the disk is old or new, checked clean, no leftovers', async () => {
    // Learn how many store mutations an import makes (the hook prints it when the process exits).
    fs.copyFileSync(pristine, disk());
    const counting = await spawnServe([dir, '--listen', '127.0.0.1:0'], { VHDSYNC_TEST_KILL_AFTER_WRITES: '1000000' });
    let hookLine = '';
    counting.child.stderr!.on('data', (b) => (hookLine += b));
    await must('curl', ['-sS', '-T', path.join(tmp.dir, 'body.raw'), `${counting.url}/import_raw_vdi?vdi=d.vhdx`]);
    await counting.stop();
    const total = Number(/vhdsync-test-hook: (\d+) mutations/.exec(hookLine)?.[1]);
    expect(total).toBeGreaterThan(10);
    const seen = new Set<string>();
    for (let k = 0; k < 10; k++) {
      const point = Math.floor((total * k) / 10) + 1;
      fs.copyFileSync(pristine, disk());
      for (const n of leftovers(dir, ['d.vhdx'])) fs.rmSync(path.join(dir, n), { force: true });
      const doomed = await spawnServe([dir, '--listen', '127.0.0.1:0'], { VHDSYNC_TEST_KILL_AFTER_WRITES: String(point) });
      const up = await runAsync('curl', ['-sS', '-T', path.join(tmp.dir, 'body.raw'), `${doomed.url}/import_raw_vdi?vdi=d.vhdx`]);
      // The hook kills the server within this import; one that survived it (a point past this run's mutations) is stopped.
      let timer: NodeJS.Timeout | undefined;
      const died = await Promise.race([doomed.exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5000)))]);
      clearTimeout(timer);
      if (!died) {
        expect(up.status).toBe(0);
        await doomed.stop();
      } else {
        expect([point, doomed.child.signalCode]).toEqual([point, 'SIGKILL']);
      }
      // The next start (here in-process, the same code) settles what the killed one left.
      const next = await serveDir(dir);
      await next.close();
      seen.add(await checkDisk());
    }
    expect(seen.has('old')).toBe(true);
    expect(seen.has('new')).toBe(true);
  }, 400_000);
});
