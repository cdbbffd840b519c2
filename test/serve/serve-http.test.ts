/**
 * `serve` driven by clients nobody here wrote (curl, python3's urllib and http.client, requests when installed, a
 * raw HTTP/1.0 client behaving as vhd-tool, a Node client doing what Xen Orchestra's putResource does) and by
 * `vhdsync stream`; results checked with qemu-img, libvhdi and sha256, never only through the server itself.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cliAsync } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, haveTool, PYTHON_VHDI, requireTool } from '../helpers/tools.js';
import { framesOf, freshDisk, leftovers, must, qemuRaw, rawExchange, runAsync, serveDir, sha256, tool } from './serve-helpers.js';

const MIB = 1 << 20;
const SIZE = 8 * MIB;
const ok = requireTool(HAVE_QEMU && haveTool('curl'), 'qemu-img, qemu-io and curl');
const d = ok ? describe : describe.skip;

/** A python3 with requests, if any (Debian's python3-requests or another python3 on PATH). */
async function pythonWithRequests(): Promise<string | null> {
  for (const py of ['/usr/bin/python3', 'python3']) {
    if ((await runAsync(py, ['-c', 'import requests'])).status === 0) return py;
  }
  return null;
}

d('serve: imports and exports with real clients', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let dir: string;
  let server: Awaited<ReturnType<typeof serveDir>>;
  const p = (n: string) => path.join(dir, n);
  const url = (q: string) => `${server.url}${q}`;
  /** 3 MiB of data at 1 MiB and one sector near the end. */
  let content: Buffer;
  const images = () => fs.readdirSync(dir).filter((n) => /\.(vhd|vhdx|qcow2|raw)$/.test(n));

  const fresh = (name: string, fmt: string) => freshDisk(p(name), fmt, SIZE);

  beforeAll(async () => {
    tmp = makeTempDir('serve-http-');
    dir = path.join(tmp.dir, 'disks');
    fs.mkdirSync(dir);
    content = Buffer.alloc(SIZE);
    randomBytes(3 * MIB).copy(content, MIB);
    content.fill(0x5a, SIZE - 512);
    fs.writeFileSync(path.join(tmp.dir, 'content.raw'), content);
    server = await serveDir(dir);
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  it('curl -T (Content-Length, Expect: 100-continue) into a VHD: 200 with task-id, content lands, qemu-img check clean, nothing left over', async () => {
    await fresh('a.vhd', 'vpc');
    const r = await must('curl', ['-sS', '-D', '-', '-o', '/dev/null', '-T', path.join(tmp.dir, 'content.raw'), url('/import_raw_vdi?vdi=a&format=raw')]);
    const head = r.toString();
    expect(head).toMatch(/^HTTP\/1\.1 100 Continue/);
    expect(head).toMatch(/HTTP\/1\.1 200 OK/);
    const task = /task-id: (\S+)/.exec(head)?.[1];
    expect(task).toBeTruthy();
    expect(sha256(await qemuRaw(p('a.vhd'), tmp.dir))).toBe(sha256(content));
    expect(leftovers(dir, images())).toEqual([]);
    const t = JSON.parse((await must('curl', ['-sS', url(`/task/${task}`)])).toString());
    expect(t).toMatchObject({ id: task, status: 'success', progress: 1, kind: 'import', disk: 'a.vhd' });
  });

  it('curl -T - (HTTP chunked) into a QCOW2, parameters from cookies; --data-binary into a raw disk', async () => {
    await fresh('q.qcow2', 'qcow2');
    await must('curl', ['-sS', '-T', '-', '-b', 'vdi=q.qcow2; format=raw', url('/import_raw_vdi/')], { input: content });
    expect((await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', path.join(tmp.dir, 'content.raw'), p('q.qcow2')]))).toMatch(/identical/);
    await fresh('r.raw', 'raw');
    await must('curl', ['-sS', '-H', 'Content-Type: application/octet-stream', '--data-binary', `@${path.join(tmp.dir, 'content.raw')}`, '-X', 'PUT', url('/import_raw_vdi?vdi=r.raw')]);
    expect(sha256(fs.readFileSync(p('r.raw')))).toBe(sha256(content));
    expect(leftovers(dir, images())).toEqual([]);
  });

  it('python3 urllib and http.client PUT with Content-Length; requests with a file and with a generator', async () => {
    await fresh('u.vhdx', 'vhdx');
    const up = path.join(tmp.dir, 'content.raw');
    await must('/usr/bin/python3', ['-c', `
import sys, urllib.request
data = open(sys.argv[2], 'rb').read()
r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=data, method='PUT'))
assert r.status == 200 and r.headers['task-id'], r.status
r.read()
`, url('/import_raw_vdi?vdi=u.vhdx&format=raw'), up]);
    expect(sha256(await qemuRaw(p('u.vhdx'), tmp.dir))).toBe(sha256(content));
    await fresh('h.raw', 'raw');
    await must('/usr/bin/python3', ['-c', `
import sys, http.client
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))
c.request('PUT', '/import_raw_vdi?vdi=h&format=raw', body=open(sys.argv[2], 'rb'), headers={'Content-Length': str(${SIZE})})
r = c.getresponse(); r.read(); assert r.status == 200
`, String(server.port), up]);
    expect(sha256(fs.readFileSync(p('h.raw')))).toBe(sha256(content));
    const py = await pythonWithRequests();
    if (!py) {
      console.warn('skipping the requests part: no python3 with requests (apt-get install python3-requests)');
      return;
    }
    await fresh('g.vhd', 'vpc');
    await must(py, ['-c', `
import sys, requests
u = sys.argv[1]
r = requests.put(u + '/import_raw_vdi?vdi=g.vhd&format=raw', data=open(sys.argv[2], 'rb')); r.raise_for_status()
def gen():
    f = open(sys.argv[2], 'rb')
    while True:
        b = f.read(1 << 20)
        if not b: return
        yield b
r = requests.put(u + '/import_raw_vdi?vdi=h.raw&format=raw', data=gen()); r.raise_for_status()
`, server.url, up]);
    expect(sha256(await qemuRaw(p('g.vhd'), tmp.dir))).toBe(sha256(content));
    expect(sha256(fs.readFileSync(p('h.raw')))).toBe(sha256(content));
  });

  it('an HTTP/1.0 client sending XAPI chunked frames only after the 200 (as vhd-tool does), chunked as a cookie', async () => {
    await fresh('c.vhdx', 'vhdx');
    const reply = await rawExchange(server.port, ['PUT /import_raw_vdi?vdi=c.vhdx&format=raw HTTP/1.0\r\nCookie: chunked=true\r\nConnection: close\r\n\r\n', framesOf(content)], { waitFor200: true });
    expect(reply.toString('latin1')).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(reply.toString('latin1')).not.toMatch(/500/);
    expect(sha256(await qemuRaw(p('c.vhdx'), tmp.dir))).toBe(sha256(content));
  });

  it("a Node client doing what Xen Orchestra's putResource does: empty probe PUT (changes nothing), then PUT with length and task_id", async () => {
    await fresh('xo.vhd', 'vpc');
    const before = sha256(fs.readFileSync(p('xo.vhd')));
    const put = (query: string, body: Buffer) =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
        const req = http.request(url(`/import_raw_vdi/?${query}`), { method: 'PUT', headers: { 'content-length': body.length, connection: 'keep-alive' } }, (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        });
        req.on('error', reject);
        req.end(body);
      });
    const probe = await put('format=vhd&vdi=xo.vhd&session_id=none', Buffer.alloc(0));
    expect(probe.status).toBe(200);
    expect(sha256(fs.readFileSync(p('xo.vhd')))).toBe(before);
    // The VHD body: what `vhdsync stream` makes of the content (vhd-tool's layout).
    const vhd = path.join(tmp.dir, 'content.vhd');
    const s = await cliAsync(['stream', '--source', path.join(tmp.dir, 'content.raw'), '--destination-format', 'vhd', '--destination', vhd, '--force', '-q']);
    expect(s.status).toBe(0);
    const real = await put('format=vhd&vdi=xo.vhd&task_id=OpaqueRef:xo-task-1', fs.readFileSync(vhd));
    expect(real.status).toBe(200);
    expect(real.headers['task-id']).toBe('OpaqueRef:xo-task-1');
    expect(real.body).toBe('');
    expect(sha256(await qemuRaw(p('xo.vhd'), tmp.dir))).toBe(sha256(content));
    const t = JSON.parse((await must('curl', ['-sS', url('/task/OpaqueRef:xo-task-1')])).toString());
    expect(t.status).toBe('success');
    // XO's "1 PiB hack" for a stream without a length: Content-Length 2^50, the connection closed after the data.
    await fresh('xo2.vhdx', 'vhdx');
    const reply = await rawExchange(server.port, [`PUT /import_raw_vdi/?format=vhd&vdi=xo2.vhdx&task_id=xo-2 HTTP/1.1\r\ncontent-length: 1125899906842624\r\n\r\n`, fs.readFileSync(vhd)]);
    expect(reply.toString('latin1')).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(JSON.parse((await must('curl', ['-sS', url('/task/xo-2')])).toString()).status).toBe('success');
    expect(sha256(await qemuRaw(p('xo2.vhdx'), tmp.dir))).toBe(sha256(content));
  });

  it('exports: raw with Content-Length and Range, VHD read by qemu-img and libvhdi, VHDX and QCOW2 checked by qemu-img, HEAD', async () => {
    await fresh('e.qcow2', 'qcow2');
    await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'qcow2', path.join(tmp.dir, 'content.raw'), p('e.qcow2')]);
    const raw = await must('curl', ['-sS', '-D', path.join(tmp.dir, 'h.txt'), url('/export_raw_vdi?vdi=e&format=raw')]);
    expect(sha256(raw)).toBe(sha256(content));
    expect(fs.readFileSync(path.join(tmp.dir, 'h.txt'), 'latin1')).toMatch(new RegExp(`Content-Length: ${SIZE}\r\n`));
    const part = await must('curl', ['-sS', '-r', `${MIB - 100}-${MIB + 99}`, url('/export_raw_vdi?vdi=e.qcow2')]);
    expect(part.equals(content.subarray(MIB - 100, MIB + 100))).toBe(true);
    const tail = await must('curl', ['-sS', '-r', '-512', url('/export_raw_vdi?vdi=e.qcow2')]);
    expect(tail.equals(content.subarray(SIZE - 512))).toBe(true);
    const bad = await runAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-r', `${SIZE}-`, url('/export_raw_vdi?vdi=e.qcow2')]);
    expect(bad.stdout.toString()).toBe('416');
    const out = path.join(tmp.dir, 'e-out.vhd');
    await must('curl', ['-sS', '-o', out, url('/export_raw_vdi/?vdi=e.qcow2&format=VHD')]);
    expect(await tool('qemu-img', ['compare', '--image-opts', `driver=raw,file.filename=${path.join(tmp.dir, 'content.raw')}`, `driver=vpc,force_size_calc=current_size,file.filename=${out}`])).toMatch(/identical/);
    if (PYTHON_VHDI) expect(sha256(await must(PYTHON_VHDI, ['-c', 'import pyvhdi,sys\nf=pyvhdi.file();f.open(sys.argv[1]);sys.stdout.buffer.write(f.read_buffer_at_offset(f.media_size,0))', out]))).toBe(sha256(content));
    const q = path.join(tmp.dir, 'e-out.qcow2');
    await must('curl', ['-sS', '-o', q, url('/export_raw_vdi/?vdi=e.qcow2&format=qcow2')]);
    await tool('qemu-img', ['check', q]);
    expect(await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', path.join(tmp.dir, 'content.raw'), q])).toMatch(/identical/);
    const x = path.join(tmp.dir, 'e-out.vhdx');
    await must('curl', ['-sS', '-o', x, url('/export_raw_vdi?vdi=e.qcow2&format=vhdx')]);
    await tool('qemu-img', ['check', x]);
    expect(await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'vhdx', path.join(tmp.dir, 'content.raw'), x])).toMatch(/identical/);
    const head = await must('curl', ['-sS', '-I', url('/export_raw_vdi?vdi=e.qcow2&format=vhd')]);
    expect(head.toString()).toMatch(new RegExp(`Content-Length: ${fs.statSync(out).size}\r\n`));
  });

  it('base= gives a VHD delta: applied to the base (PUT format=vhd) it reproduces the disk; libvhdi reads it over its parent', async () => {
    await fresh('base.vhd', 'vpc');
    await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'vpc', path.join(tmp.dir, 'content.raw'), p('base.vhd')]);
    fs.copyFileSync(p('base.vhd'), p('next.vhd'));
    await tool('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x77 100k 8k', '-c', 'write -z 2M 64k', '-c', `write -P 0x21 ${6 * MIB} 4k`, p('next.vhd')]);
    const delta = path.join(tmp.dir, 'delta.vhd');
    await must('curl', ['-sS', '-o', delta, url('/export_raw_vdi?vdi=next.vhd&base=base&format=vhd')]);
    expect(fs.statSync(delta).size).toBeLessThan(3 * (2 * MIB + 512) + 64 * 1024);
    if (PYTHON_VHDI) {
      const both = await must(PYTHON_VHDI, ['-c', 'import pyvhdi,sys\nf=pyvhdi.file();f.open(sys.argv[1]);b=pyvhdi.file();b.open(sys.argv[2]);f.set_parent(b);sys.stdout.buffer.write(f.read_buffer_at_offset(f.media_size,0))', delta, p('base.vhd')]);
      expect(sha256(both)).toBe(sha256(await qemuRaw(p('next.vhd'), tmp.dir)));
    }
    fs.copyFileSync(p('base.vhd'), p('restore.vhd'));
    await must('curl', ['-sS', '-T', delta, url('/import_raw_vdi?vdi=restore.vhd&format=vhd')]);
    expect(sha256(await qemuRaw(p('restore.vhd'), tmp.dir))).toBe(sha256(await qemuRaw(p('next.vhd'), tmp.dir)));
    const raw = await runAsync('curl', ['-sS', '-w', '%{http_code}', url('/export_raw_vdi?vdi=next.vhd&base=base.vhd&format=raw')]);
    expect(raw.stdout.toString()).toMatch(/cannot hold a delta[\s\S]*400$/);
  });

  it('vhdsync stream round trips against serve: raw, vhd and chunked imports, full and --relative-to; exports back to files', async () => {
    const src = path.join(tmp.dir, 'content.raw');
    for (const [fmt, disk, dfmt] of [
      ['raw', 's1.vhdx', 'vhdx'],
      ['vhd', 's2.qcow2', 'qcow2'],
      ['chunked', 's3.vhd', 'vpc'],
    ] as const) {
      await fresh(disk, dfmt);
      const r = await cliAsync(['stream', '--source', src, '--destination-format', fmt, '--destination', url(`/import_raw_vdi?vdi=${disk}`), '-q']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(sha256(await qemuRaw(p(disk), tmp.dir))).toBe(sha256(content));
      const back = path.join(tmp.dir, `back-${disk}.raw`);
      const g = await cliAsync(['stream', '--source', url(`/export_raw_vdi?vdi=${disk}&format=vhd`), '--destination', back, '--force', '-q']);
      expect(g.status).toBe(0);
      expect(sha256(fs.readFileSync(back))).toBe(sha256(content));
    }
    // A delta made by stream --relative-to and PUT as a VHD lands as a delta.
    fs.copyFileSync(p('base.vhd'), p('s4.vhd'));
    const r = await cliAsync(['stream', '--source', p('next.vhd'), '--relative-to', p('base.vhd'), '--destination-format', 'vhd', '--destination', url('/import_raw_vdi?vdi=s4.vhd'), '-q']);
    expect(r.status).toBe(0);
    expect(sha256(await qemuRaw(p('s4.vhd'), tmp.dir))).toBe(sha256(await qemuRaw(p('next.vhd'), tmp.dir)));
  });

  it('GET / lists the disks with format, size, allocation, uuid and metafile state; vdi= by uuid works', async () => {
    const list = JSON.parse((await must('curl', ['-sS', url('/')])).toString()) as { name: string; uuid: string; format: string; virtualSize: number; metafile: string }[];
    const a = list.find((e) => e.name === 'a.vhd');
    expect(a).toMatchObject({ format: 'vhd', metafile: 'none' });
    expect(a!.uuid).toMatch(/^[0-9a-f-]{36}$/);
    const r = list.find((e) => e.name === 'r.raw')!;
    expect(fs.readFileSync(p('r.raw.uuid'), 'utf8').trim()).toBe(r.uuid);
    const viaUuid = await must('curl', ['-sS', url(`/export_raw_vdi?vdi=${r.uuid}`)]);
    expect(sha256(viaUuid)).toBe(sha256(fs.readFileSync(p('r.raw'))));
  });

  it('refusals: bad parameters, oversized and malformed bodies leave the disk as it was and the server serving', async () => {
    await fresh('keep.vhd', 'vpc');
    await tool('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x42 0 1M', p('keep.vhd')]);
    const before = sha256(fs.readFileSync(p('keep.vhd')));
    const code = async (args: string[]) => (await runAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...args])).stdout.toString();
    expect(await code([url('/export_raw_vdi?vdi=keep.vhd&format=tar')])).toBe('404');
    expect(await code(['-T', path.join(tmp.dir, 'content.raw'), url('/import_raw_vdi?vdi=keep.vhd&format=vhd&chunked=true')])).toBe('404');
    expect(await code(['-T', path.join(tmp.dir, 'content.raw'), url('/import_raw_vdi?format=raw')])).toBe('400');
    expect(await code([url('/export_raw_vdi')])).toBe('400');
    expect(await code(['-X', 'POST', url('/export_raw_vdi?vdi=keep.vhd')])).toBe('405');
    expect(await code([url('/nothing-here')])).toBe('404');
    const big = path.join(tmp.dir, 'big.raw');
    fs.writeFileSync(big, Buffer.alloc(SIZE + 4096, 1));
    expect(await code(['-T', big, url('/import_raw_vdi?vdi=keep.vhd&format=raw')])).toBe('413');
    // A VHD stream whose data is cut short: 200 (sent before the body), then the task fails and the disk is untouched.
    const vhd = fs.readFileSync(path.join(tmp.dir, 'content.vhd'));
    const cut = path.join(tmp.dir, 'cut.vhd');
    fs.writeFileSync(cut, Buffer.concat([vhd.subarray(0, vhd.length - 3 * MIB), vhd.subarray(vhd.length - 512)]));
    const r = await runAsync('curl', ['-sS', '-D', '-', '-T', cut, url('/import_raw_vdi?vdi=keep.vhd&format=vhd&task_id=bad-1')]);
    expect(r.stdout.toString()).toMatch(/^HTTP\/1\.1 100[\s\S]*HTTP\/1\.1 200 OK[\s\S]*HTTP\/1\.1 500 Internal Error/);
    const t = JSON.parse((await must('curl', ['-sS', url('/task/bad-1')])).toString());
    expect(t.status).toBe('failure');
    expect(t.error).toMatch(/VHD|truncated|footer/);
    // A stream for a larger disk is refused from its header, before anything is written.
    fs.writeFileSync(path.join(tmp.dir, 'other.raw'), Buffer.alloc(2 * SIZE, 3));
    const other = path.join(tmp.dir, 'other.vhd');
    expect((await cliAsync(['stream', '--source', path.join(tmp.dir, 'other.raw'), '--destination-format', 'vhd', '--destination', other, '--force', '-q'])).status).toBe(0);
    await must('curl', ['-sS', '-T', other, url('/import_raw_vdi?vdi=keep.vhd&format=vhd&task_id=bad-2')]);
    expect(JSON.parse((await must('curl', ['-sS', url('/task/bad-2')])).toString()).error).toMatch(/more than the image's/);
    expect(sha256(fs.readFileSync(p('keep.vhd')))).toBe(before);
    // A smaller one is taken, as XAPI (vhd-tool) takes it: its sectors land where they say, the rest stays.
    fs.writeFileSync(path.join(tmp.dir, 'small.raw'), Buffer.alloc(4 * MIB, 3));
    const small = path.join(tmp.dir, 'small.vhd');
    expect((await cliAsync(['stream', '--source', path.join(tmp.dir, 'small.raw'), '--destination-format', 'vhd', '--destination', small, '--force', '-q'])).status).toBe(0);
    await fresh('grow.vhd', 'vpc');
    await tool('qemu-io', ['-f', 'vpc', '-c', `write -P 0x42 ${6 * MIB} 1M`, p('grow.vhd')]);
    await must('curl', ['-sS', '-T', small, url('/import_raw_vdi?vdi=grow.vhd&format=vhd&task_id=small-1')]);
    expect(JSON.parse((await must('curl', ['-sS', url('/task/small-1')])).toString()).status).toBe('success');
    const grown = Buffer.alloc(SIZE);
    grown.fill(3, 0, 4 * MIB);
    grown.fill(0x42, 6 * MIB, 7 * MIB);
    expect(sha256(await qemuRaw(p('grow.vhd'), tmp.dir))).toBe(sha256(grown));
    expect(leftovers(dir, images())).toEqual([]);
    expect(await code([url('/export_raw_vdi?vdi=keep.vhd')])).toBe('200');
  });
});
