/**
 * Imports without `vdi` (XAPI's `sr_id` / `sr_uuid`): a raw body with a Content-Length becomes a new disk
 * `<uuid>.raw`, named on the task and found by its uuid; everything else is 400 as XAPI answers; a dropped client
 * and a server killed with SIGKILL mid-upload leave no disk and, after the next start, nothing at all.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { haveTool, requireTool } from '../helpers/tools.js';
import { must, runAsync, serveDir, sha256, spawnServe } from './serve-helpers.js';

const MIB = 1 << 20;
const ok = requireTool(haveTool('curl') && haveTool('python3'), 'curl and python3');
const d = ok ? describe : describe.skip;

d('serve: imports into a new disk (sr_id without vdi)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let dir: string;
  let body: Buffer;
  const up = () => path.join(tmp.dir, 'up.raw');

  beforeAll(() => {
    tmp = makeTempDir('serve-new-');
    dir = path.join(tmp.dir, 'disks');
    fs.mkdirSync(dir);
    body = Buffer.alloc(3 * MIB + 1536);
    for (let i = MIB; i < body.length; i += 512) body.fill((i >> 9) & 0xff, i, i + 512);
    fs.writeFileSync(up(), body);
  });
  afterAll(() => tmp.cleanup());

  /** A task's record once it is no longer pending. */
  async function settled(url: string, id: string): Promise<{ status: string; result: { disk: string; uuid: string } | null; error: string | null }> {
    for (let i = 0; ; i++) {
      const t = JSON.parse((await must('curl', ['-sS', `${url}/task/${id}`])).toString());
      if (t.status !== 'pending' || i > 200) return t;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('curl -T and python3 http.client with sr_id / sr_uuid: a new raw disk of the body, named on the task, found by uuid', async () => {
    const server = await serveDir(dir);
    try {
      const head = (await must('curl', ['-sS', '-D', '-', '-o', '/dev/null', '-T', up(), `${server.url}/import_raw_vdi?sr_id=OpaqueRef:sr&format=raw`])).toString();
      expect(head).toMatch(/HTTP\/1\.1 200 OK/);
      const t = await settled(server.url, /task-id: (\S+)/.exec(head)![1]);
      expect(t.status).toBe('success');
      const { disk, uuid } = t.result!;
      expect(disk).toBe(`${uuid}.raw`);
      expect(sha256(fs.readFileSync(path.join(dir, disk)))).toBe(sha256(body));
      expect(fs.readFileSync(path.join(dir, `${disk}.uuid`), 'utf8').trim()).toBe(uuid);
      const back = await must('curl', ['-sS', `${server.url}/export_raw_vdi?vdi=${uuid}`]);
      expect(sha256(back)).toBe(sha256(body));
      const listed = JSON.parse((await must('curl', ['-sS', `${server.url}/`])).toString()) as { name: string; uuid: string; virtualSize: number }[];
      expect(listed.find((e) => e.name === disk)).toMatchObject({ uuid, virtualSize: body.length });

      await must('python3', ['-c', `
import sys, http.client, os
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))
c.request('PUT', '/import_raw_vdi?sr_uuid=0f0e&task_id=py-new', body=open(sys.argv[2], 'rb'), headers={'Content-Length': str(os.path.getsize(sys.argv[2]))})
r = c.getresponse(); r.read(); assert r.status == 200, r.status
`, String(server.port), up()]);
      const py = await settled(server.url, 'py-new');
      expect(py.status).toBe('success');
      expect(sha256(fs.readFileSync(path.join(dir, py.result!.disk)))).toBe(sha256(body));
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('.') || n.endsWith('-lock'))).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('refused as XAPI refuses (400): VHD, QCOW2, chunked frames, no length, neither vdi nor sr; nothing is created', async () => {
    const server = await serveDir(dir);
    const before = fs.readdirSync(dir).sort();
    try {
      const code = async (args: string[]) => (await runAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...args])).stdout.toString();
      expect(await code(['-T', up(), `${server.url}/import_raw_vdi?sr_id=x&format=vhd`])).toBe('400');
      expect(await code(['-T', up(), `${server.url}/import_raw_vdi?sr_id=x&format=qcow2`])).toBe('400');
      expect(await code(['-T', up(), `${server.url}/import_raw_vdi?sr_id=x&chunked=true`])).toBe('400');
      expect(await code(['-T', '-', `${server.url}/import_raw_vdi?sr_id=x`])).toBe('400');
      expect(await code(['-T', up(), `${server.url}/import_raw_vdi?format=raw`])).toBe('400');
      expect(await code(['-X', 'PUT', '-H', 'Content-Length: 0', `${server.url}/import_raw_vdi?sr_id=x`])).toBe('200');
      expect(fs.readdirSync(dir).sort()).toEqual(before);
    } finally {
      await server.close();
    }
  });

  it('a client stopping mid-body and a server killed mid-upload leave no disk; the next start removes the rest', async () => {
    const before = fs.readdirSync(dir).sort();
    const server = await serveDir(dir);
    try {
      await new Promise<void>((resolve) => {
        const s = net.connect(server.port, '127.0.0.1', () => {
          s.write(`PUT /import_raw_vdi?sr_id=x&task_id=cut HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n`);
          s.write(body.subarray(0, MIB), () => setTimeout(() => s.destroy(), 50));
        });
        s.on('error', () => {});
        s.on('close', () => resolve());
      });
      expect((await settled(server.url, 'cut')).status).toBe('failure');
      expect(fs.readdirSync(dir).sort()).toEqual(before);
    } finally {
      await server.close();
    }

    const srv = await spawnServe([dir, '--listen', '127.0.0.1:0']);
    const port = Number(new URL(srv.url).port);
    const sock = net.connect(port, '127.0.0.1');
    sock.on('error', () => {});
    await new Promise<void>((resolve) => {
      let got = '';
      sock.on('data', (c) => {
        got += c.toString('latin1');
        if (/200 OK/.test(got)) resolve();
      });
      sock.write(`PUT /import_raw_vdi?sr_id=x HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n`);
      sock.write(body.subarray(0, MIB));
    });
    // The 200 went out with the temporary file made; the body is not complete.
    expect(fs.readdirSync(dir).some((n) => n.endsWith('.partial'))).toBe(true);
    srv.child.kill('SIGKILL');
    await srv.exited;
    sock.destroy();
    expect(fs.readdirSync(dir).filter((n) => /^[0-9a-f-]{36}\.raw$/.test(n) && !before.includes(n))).toEqual([]);
    const again = await spawnServe([dir, '--listen', '127.0.0.1:0']);
    await again.stop();
    expect(fs.readdirSync(dir).sort()).toEqual(before);
  });
});
