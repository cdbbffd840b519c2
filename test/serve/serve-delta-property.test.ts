/**
 * Property (fast-check): for a random disk (VHD, VHDX or QCOW2, random size) and random changes (data, zeros),
 * `GET /export_raw_vdi?base=` of the changed disk against its old copy, PUT as `format=vhd` into another copy of
 * the old one, reproduces the changed disk exactly; qemu-img compare is the judge.
 */
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createDisk, openDisk } from '../../src/formats/index.js';
import type { DiskFormat } from '../../src/formats/disk.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool } from '../helpers/tools.js';
import { serveDir, tool } from './serve-helpers.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img');
const d = ok ? describe : describe.skip;
const KIB = 1024;

/** One change: `fill` 0 writes zeros. */
interface Change {
  sector: number;
  sectors: number;
  fill: number;
}

function request(method: string, url: string, body?: Buffer): Promise<{ status: number; body: Buffer; task?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: body ? { 'content-length': body.length } : {} }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts), task: res.headers['task-id'] as string | undefined }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

d('serve: export base= then import is the identity (property)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: Awaited<ReturnType<typeof serveDir>>;
  beforeAll(async () => {
    tmp = makeTempDir('serve-prop-');
    server = await serveDir(tmp.dir);
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  const ext: Record<string, string> = { vhd: 'vhd', vhdx: 'vhdx', qcow2: 'qcow2' };
  let run = 0;

  it('random disks and changes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<DiskFormat>('vhd', 'vhdx', 'qcow2'),
        fc.integer({ min: 1, max: 40 }).map((n) => n * 128 * KIB),
        fc.array(fc.record({ sector: fc.nat(), sectors: fc.integer({ min: 1, max: 600 }), fill: fc.integer({ min: 0, max: 255 }) }), { minLength: 0, maxLength: 4 }),
        fc.array(fc.record({ sector: fc.nat(), sectors: fc.integer({ min: 1, max: 600 }), fill: fc.integer({ min: 0, max: 255 }) }), { minLength: 0, maxLength: 5 }),
        async (format, size, initial, changes) => {
          const n = run++;
          const name = (s: string) => `${s}${n}.${ext[format]}`;
          const write = async (file: string, list: Change[], create: boolean) => {
            const disk = create
              ? await createDisk(path.join(tmp.dir, file), { format, type: 'dynamic', virtualSize: size })
              : await openDisk(path.join(tmp.dir, file), { writable: true });
            try {
              for (const c of list) {
                const sector = c.sector % (size / 512);
                const len = Math.min(c.sectors, size / 512 - sector) * 512;
                if (c.fill === 0) await disk.writeZeroes(sector * 512, len);
                else await disk.write(sector * 512, Buffer.alloc(len, c.fill));
              }
              await disk.flush();
            } finally {
              await disk.close();
            }
          };
          await write(name('old'), initial, true);
          fs.copyFileSync(path.join(tmp.dir, name('old')), path.join(tmp.dir, name('new')));
          fs.copyFileSync(path.join(tmp.dir, name('old')), path.join(tmp.dir, name('restore')));
          await write(name('new'), changes, false);
          const delta = await request('GET', `${server.url}/export_raw_vdi?vdi=${name('new')}&base=${name('old')}&format=vhd`);
          expect(delta.status).toBe(200);
          const put = await request('PUT', `${server.url}/import_raw_vdi?vdi=${name('restore')}&format=vhd&task_id=prop-${n}`, delta.body);
          expect(put.status).toBe(200);
          const task = JSON.parse((await request('GET', `${server.url}/task/prop-${n}`)).body.toString());
          expect(task.status).toBe('success');
          const out = await tool('qemu-img', ['compare', path.join(tmp.dir, name('new')), path.join(tmp.dir, name('restore'))]);
          expect(out).toMatch(/identical/);
          for (const s of ['old', 'new', 'restore']) fs.rmSync(path.join(tmp.dir, name(s)), { force: true });
          for (const f of fs.readdirSync(tmp.dir)) if (f.endsWith('.uuid')) fs.rmSync(path.join(tmp.dir, f));
        },
      ),
      { numRuns: 12 },
    );
  });
});
