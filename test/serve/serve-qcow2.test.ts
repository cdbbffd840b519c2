/**
 * `PUT /import_raw_vdi?format=qcow2`: QCOW2 streams made by qemu-img (convert, overlays), by a Python writer in
 * qcow2-to-stdout's layout, and by our encoder (`vhdsync stream`, `base=` exports, random disks), sent by curl,
 * python3 http.client and Node; results checked with qemu-img compare. Broken streams: a clear status (400/413
 * before the 200 when the header says it, else a failed task), the disk unchanged, nothing left over.
 */
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { localStore } from '../../src/io/local.js';
import { openDisk } from '../../src/formats/index.js';
import { encode, fullContent } from '../../src/stream/index.js';
import { cliAsync } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, haveTool, requireTool } from '../helpers/tools.js';
import { qcow2Stdout, type Qcow2StdoutVariant } from '../helpers/qcow2-stdout.js';
import { freshDisk, leftovers, must, runAsync, sameAsRaw, serveDir, sha256, tool } from './serve-helpers.js';

const MIB = 1 << 20;
const SIZE = 8 * MIB;
const ok = requireTool(HAVE_QEMU && haveTool('curl') && haveTool('python3'), 'qemu-img, qemu-io, curl and python3');
const d = ok ? describe : describe.skip;

/** A PUT with Content-Length from Node's http client; the response read to its end. */
function put(url: string, body: Buffer): Promise<{ status: number; task: string; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PUT', headers: { 'Content-Length': body.length } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, task: String(res.headers['task-id'] ?? ''), text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

d('serve: QCOW2 imports', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let dir: string;
  let server: Awaited<ReturnType<typeof serveDir>>;
  const p = (n: string) => path.join(dir, n);
  const t = (n: string) => path.join(tmp.dir, n);
  const url = (q: string) => `${server.url}${q}`;
  const images = () => fs.readdirSync(dir).filter((n) => /\.(vhd|vhdx|qcow2|raw)$/.test(n));
  const same = async (image: string, raw: string) => (await sameAsRaw(image, raw)) === 'identical';
  const task = async (id: string) => JSON.parse((await must('curl', ['-sS', url(`/task/${id}`)])).toString()) as { status: string; error: string | null };

  const fresh = (name: string, fmt: string) => freshDisk(p(name), fmt, SIZE);

  beforeAll(async () => {
    tmp = makeTempDir('serve-qcow2-');
    dir = path.join(tmp.dir, 'disks');
    fs.mkdirSync(dir);
    const content = Buffer.alloc(SIZE);
    for (let i = 0; i < 3 * MIB; i++) content[MIB + i] = (i * 7 + (i >> 9)) & 0xff;
    content.fill(0x5a, SIZE - 512);
    fs.writeFileSync(t('content.raw'), content);
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', t('content.raw'), t('q64k.qcow2')]);
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=512', t('content.raw'), t('q512.qcow2')]);
    qcow2Stdout(t('content.raw'), t('py.qcow2'), 12);
    server = await serveDir(dir);
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  it('curl -T with qemu-img convert output (one L2 table, and 512-byte clusters with L2 tables among the data) into VHD, VHDX, QCOW2 and raw disks', async () => {
    for (const [src, disk, fmt] of [
      ['q64k.qcow2', 'a.vhd', 'vpc'],
      ['q512.qcow2', 'b.vhdx', 'vhdx'],
      ['q64k.qcow2', 'c.qcow2', 'qcow2'],
      ['q512.qcow2', 'd.raw', 'raw'],
    ] as const) {
      await fresh(disk, fmt);
      const head = (await must('curl', ['-sS', '-D', '-', '-o', '/dev/null', '-T', t(src), url(`/import_raw_vdi?vdi=${disk}&format=qcow2`)])).toString();
      expect(head).toMatch(/HTTP\/1\.1 200 OK[\s\S]*task-id: /);
      const id = /task-id: (\S+)/.exec(head)![1];
      expect((await task(id)).status).toBe('success');
      expect(await same(p(disk), t('content.raw'))).toBe(true);
      if (fmt !== 'raw' && fmt !== 'vpc') expect((await runAsync('qemu-img', ['check', p(disk)])).status).toBe(0);
    }
    expect(leftovers(dir, images())).toEqual([]);
  });

  it("python3 http.client PUT of a qcow2-to-stdout layout; vhdsync stream's QCOW2 (full, --relative-to delta) and a base= export applied back", async () => {
    await fresh('py.qcow2', 'qcow2');
    await must('python3', ['-c', `
import sys, http.client, os
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))
c.request('PUT', '/import_raw_vdi?vdi=py.qcow2&format=qcow2', body=open(sys.argv[2], 'rb'), headers={'Content-Length': str(os.path.getsize(sys.argv[2]))})
r = c.getresponse(); r.read(); assert r.status == 200, r.status
`, String(server.port), t('py.qcow2')]);
    expect(await same(p('py.qcow2'), t('content.raw'))).toBe(true);

    await fresh('s.vhd', 'vpc');
    const full = await cliAsync(['stream', '--source', t('content.raw'), '--destination-format', 'qcow2', '--destination', url('/import_raw_vdi?vdi=s.vhd&format=qcow2'), '-q']);
    expect(full.stderr).toBe('');
    expect(await same(p('s.vhd'), t('content.raw'))).toBe(true);

    // next = base + changes (data, zeros over data, data at the end); the delta goes over a copy of the base.
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', t('content.raw'), p('base.qcow2')]);
    fs.copyFileSync(p('base.qcow2'), p('next.qcow2'));
    await tool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 100k 8k', '-c', 'write -z 2M 64k', '-c', `write -P 0x21 ${6 * MIB} 4k`, p('next.qcow2')]);
    await tool('qemu-img', ['convert', '-O', 'raw', p('next.qcow2'), t('next.raw')]);
    fs.copyFileSync(p('base.qcow2'), p('r1.qcow2'));
    const delta = await cliAsync(['stream', '--source', p('next.qcow2'), '--relative-to', p('base.qcow2'), '--destination-format', 'qcow2', '--destination', url('/import_raw_vdi?vdi=r1.qcow2&format=qcow2'), '-q']);
    expect(delta.stderr).toBe('');
    expect(await same(p('r1.qcow2'), t('next.raw'))).toBe(true);
    await must('curl', ['-sS', '-o', t('delta.qcow2'), url('/export_raw_vdi?vdi=next.qcow2&base=base.qcow2&format=qcow2')]);
    fs.copyFileSync(p('base.qcow2'), p('r2.qcow2'));
    await must('curl', ['-sS', '-T', t('delta.qcow2'), url('/import_raw_vdi?vdi=r2.qcow2&format=qcow2')]);
    expect(await same(p('r2.qcow2'), t('next.raw'))).toBe(true);

    // A QCOW2 export read back by `vhdsync stream` from HTTP (the decoder as a stream source), and from a pipe.
    const back = await cliAsync(['stream', '--source', url('/export_raw_vdi?vdi=next.qcow2&format=qcow2'), '--destination', t('back.raw'), '--force', '-q']);
    expect(back.stderr).toBe('');
    expect(sha256(fs.readFileSync(t('back.raw')))).toBe(sha256(fs.readFileSync(t('next.raw'))));
    const piped = await runAsync('sh', ['-c', `curl -sS '${url('/export_raw_vdi?vdi=next.qcow2&format=qcow2')}' | "${process.execPath}" bin/vhdsync.js stream --destination-format vhd --destination '${t('back.vhd')}' --force -q`]);
    expect(piped.stderr).toBe('');
    expect(await same(t('back.vhd'), t('next.raw'))).toBe(true);
    expect(leftovers(dir, images())).toEqual([]);
  });

  it('random disks -> our QCOW2 encoder -> PUT -> qemu-img compare identical', async () => {
    const MAX = 3 * MIB;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: MAX / 512 - 1 }), len: fc.integer({ min: 1, max: 300 }), byte: fc.integer({ min: 0, max: 255 }) }), { maxLength: 6 }),
        fc.constantFrom(['vpc', 'vhd'], ['qcow2', 'qcow2'], ['vhdx', 'vhdx']),
        async (writes, [fmt, ext]) => {
          const raw = Buffer.alloc(MAX);
          for (const w of writes) raw.fill(w.byte, w.at * 512, Math.min(MAX, (w.at + w.len) * 512));
          fs.writeFileSync(t('prop.raw'), raw);
          const name = `prop.${ext}`;
          if (fs.existsSync(p(name))) fs.unlinkSync(p(name));
          await tool('qemu-img', ['create', '-q', '-f', fmt, ...(fmt === 'vpc' ? ['-o', 'subformat=dynamic,force_size=on'] : []), p(name), String(MAX)]);
          const src = await openDisk({ store: localStore, path: t('prop.raw') }, { format: 'raw' });
          const parts: Buffer[] = [];
          try {
            for await (const c of (await encode('qcow2', await fullContent(src, 'qcow2'))).chunks()) parts.push(typeof c === 'number' ? Buffer.alloc(c) : Buffer.from(c));
          } finally {
            await src.close();
          }
          const r = await put(url(`/import_raw_vdi?vdi=${name}&format=qcow2`), Buffer.concat(parts));
          expect(r.status).toBe(200);
          expect((await task(r.task)).status).toBe('success');
          expect(await same(p(name), t('prop.raw'))).toBe(true);
        },
      ),
      { numRuns: 6 },
    );
  });

  it('broken streams: 400/413 from the header before the 200, else a failed task; the disk unchanged, nothing left over', async () => {
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', t('content.raw'), p('keep.qcow2')]);
    await tool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 0 1M', p('keep.qcow2')]);
    const before = sha256(fs.readFileSync(p('keep.qcow2')));
    const send = async (file: string, id: string) => {
      const r = await runAsync('curl', ['-sS', '-D', '-', '-T', file, url(`/import_raw_vdi?vdi=keep.qcow2&format=qcow2&task_id=${id}`)]);
      return r.stdout.toString();
    };
    const early: Array<[Qcow2StdoutVariant, string, RegExp]> = [
      ['huge-cluster-bits', '400', /cluster_bits is 30/],
      ['extended-l2', '400', /extended L2 entries/],
      ['huge-l1', '400', /l1_size/],
    ];
    for (const [variant, status, why] of early) {
      qcow2Stdout(t('content.raw'), t(`${variant}.qcow2`), 12, variant);
      const out = await send(t(`${variant}.qcow2`), variant);
      expect(out).toMatch(new RegExp(`HTTP/1\\.1 ${status} `));
      expect(out).not.toMatch(/HTTP\/1\.1 200/);
      expect(out).toMatch(why);
      expect((await task(variant)).status).toBe('failure');
    }
    // A disk larger than the target: 413 from the header.
    await tool('qemu-img', ['create', '-q', '-f', 'qcow2', t('big.qcow2'), String(SIZE * 2)]);
    expect(await send(t('big.qcow2'), 'big')).toMatch(/HTTP\/1\.1 413 [\s\S]*larger than the disk/);

    const late: Array<[Qcow2StdoutVariant, RegExp]> = [
      ['compressed', /compressed/],
      ['data-before-l2', /data before its L2 table/],
      ['l2-backwards', /lies behind/],
      ['refcount-outside', /refcount table entry/],
    ];
    for (const [variant, why] of late) {
      qcow2Stdout(t('content.raw'), t(`${variant}.qcow2`), 12, variant);
      const out = await send(t(`${variant}.qcow2`), variant);
      expect(out).toMatch(/HTTP\/1\.1 200 OK[\s\S]*HTTP\/1\.1 500 Internal Error/);
      const tk = await task(variant);
      expect(tk.status).toBe('failure');
      expect(tk.error).toMatch(why);
    }
    const py = fs.readFileSync(t('py.qcow2'));
    fs.writeFileSync(t('cut.qcow2'), py.subarray(0, py.length - 5000));
    await send(t('cut.qcow2'), 'cut');
    expect((await task('cut')).error).toMatch(/truncated|stopped|past the end of the stream/);
    await tool('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', t('content.raw'), t('comp.qcow2')]);
    await send(t('comp.qcow2'), 'comp');
    expect((await task('comp')).error).toMatch(/compressed/);
    const code = await runAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-T', t('py.qcow2'), url('/import_raw_vdi?vdi=keep.qcow2&format=qcow2&chunked=true')]);
    expect(code.stdout.toString()).toBe('404');

    expect(sha256(fs.readFileSync(p('keep.qcow2')))).toBe(before);
    expect((await runAsync('qemu-img', ['check', p('keep.qcow2')])).status).toBe(0);
    expect(leftovers(dir, images())).toEqual([]);
    expect((await runAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', url('/export_raw_vdi?vdi=keep.qcow2')])).stdout.toString()).toBe('200');
  });
});
