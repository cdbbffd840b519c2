/**
 * `serve` exporting a backup repository (an object repository on an in-memory store, and a folder repository):
 * names and uuids of restore points, every export format compared with `restore` of the same point, ranges, `base=`
 * deltas applied back, writes refused, a damaged block and a prune during an export ending the transfer visibly.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import '../../src/formats/index.js';
import { localStore } from '../../src/io/local.js';
import { parseLocation } from '../../src/io/location.js';
import { FileRepository } from '../../src/repo/file-backend.js';
import { backupDisk, pruneDisk, restorePoint, type RepoBackend } from '../../src/repo/index.js';
import { ObjectRepository } from '../../src/repo/object/object-backend.js';
import { MemoryObjectStore } from '../helpers/memory-object-store.js';
import { makeTempDir } from '../helpers/tmp.js';
import { rawDisk, scribble } from '../repo/repo-helpers.js';
import { must, qemuRaw, runAsync, serveDir, sha256, spawnServe } from './serve-helpers.js';

const BLOCK = 64 << 10;
const BLOCKS = 48;

interface Entry {
  name: string;
  uuid: string;
  disk: string;
  point: string;
  newest: boolean;
}

describe('serve exports a backup repository', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let n = 0;
  beforeAll(() => (tmp = makeTempDir('vhdsync-serve-repo-')));
  afterAll(() => tmp.cleanup());

  /** A raw source whose blocks each hold their own byte, with a few zero blocks. */
  function source(): string {
    const data = Array.from({ length: BLOCKS }, (_, b): [number, number, number] => [b * BLOCK, BLOCK, b + 1]).filter((_, b) => b % 7 !== 3);
    return rawDisk(path.join(tmp.dir, `src${n++}.raw`), BLOCK * BLOCKS, data);
  }

  function poke(file: string, blocks: number[], fill: number): void {
    scribble(file, blocks.map((b): [number, number, number] => [b * BLOCK + 11, 300, fill]));
  }

  /** Two points of disk `vm` (the second changes `changed` blocks), with the sha256 of each point's content. */
  async function twoPoints(repo: RepoBackend, changed: number[]): Promise<{ ids: string[]; shas: string[]; raws: string[] }> {
    const src = source();
    const ids: string[] = [];
    const shas: string[] = [];
    const raws: string[] = [];
    for (let i = 0; i < 2; i++) {
      if (i === 1) poke(src, changed, 0xa5);
      const r = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
      ids.push(r.point);
      const raw = path.join(tmp.dir, `restored-${n++}.raw`);
      await restorePoint(repo, 'vm', await parseLocation(raw), { at: r.point, format: 'raw' });
      raws.push(raw);
      shas.push(sha256(readFileSync(raw)));
    }
    return { ids, shas, raws };
  }

  async function curl(args: string[]): Promise<{ status: number; body: Buffer; stderr: string }> {
    const r = await runAsync('curl', ['-sS', '--fail', ...args]);
    return { status: r.status, body: r.stdout, stderr: r.stderr };
  }

  it('lists every point with stable uuids and exports each in every format as restore writes it', async () => {
    const repo = new ObjectRepository(new MemoryObjectStore());
    const { ids, shas, raws } = await twoPoints(repo, [1, 2, 20]);
    const server = await serveDir(tmp.dir, { repository: repo });
    try {
      const list = JSON.parse((await curl([`${server.url}/`])).body.toString()) as Entry[];
      expect(list.map((e) => [e.name, e.newest])).toEqual([
        [`vm@${ids[0]}`, false],
        [`vm@${ids[1]}`, true],
      ]);
      // The same points get the same uuids from another server (derived, not assigned).
      const again = await serveDir(tmp.dir, { repository: repo });
      try {
        expect(JSON.parse((await curl([`${again.url}/`])).body.toString())).toEqual(list);
      } finally {
        await again.close();
      }
      const get = async (query: string) => {
        const r = await curl([`${server.url}/export_raw_vdi?${query}`]);
        expect(r.stderr).toBe('');
        return r.body;
      };
      // By name, by name@id, by uuid, by name@time; the disk's name alone is its newest point.
      expect(sha256(await get(`vdi=vm@${ids[0]}`))).toBe(shas[0]);
      expect(sha256(await get(`vdi=${list[0].uuid}`))).toBe(shas[0]);
      expect(sha256(await get('vdi=vm'))).toBe(shas[1]);
      expect(sha256(await get(`vdi=vm@${encodeURIComponent(new Date().toISOString())}`))).toBe(shas[1]);
      for (const format of ['vhd', 'vhdx', 'qcow2']) {
        const file = path.join(tmp.dir, `export-${n++}.${format}`);
        writeFileSync(file, await get(`vdi=vm@${ids[0]}&format=${format}`));
        expect(sha256(await qemuRaw(file, tmp.dir))).toBe(shas[0]);
      }
      // A range of the raw export: the same bytes as the restored image's.
      const part = await curl(['-r', `${BLOCK - 5}-${3 * BLOCK + 6}`, `${server.url}/export_raw_vdi?vdi=vm`]);
      expect(part.body.equals(readFileSync(raws[1]).subarray(BLOCK - 5, 3 * BLOCK + 7))).toBe(true);
      // A base= delta as VHD, applied by an ordinary folder server onto a copy of the older point: the newer one.
      const folder = makeTempDir('vhdsync-serve-repo-apply-');
      const target = await serveDir(folder.dir);
      try {
        writeFileSync(path.join(folder.dir, 'copy.raw'), readFileSync(raws[0]));
        const delta = path.join(tmp.dir, `delta-${n++}.vhd`);
        writeFileSync(delta, await get(`vdi=vm@${ids[1]}&base=vm@${ids[0]}&format=vhd`));
        // The changed blocks all lie in the first of the disk's two 2 MiB VHD blocks: only that one travels.
        expect(readFileSync(delta).length).toBeLessThan((2 << 20) + (256 << 10));
        await must('curl', ['-sS', '--fail', '-T', delta, `${target.url}/import_raw_vdi?vdi=copy.raw&format=vhd`]);
        expect(sha256(readFileSync(path.join(folder.dir, 'copy.raw')))).toBe(shas[1]);
      } finally {
        await target.close();
        folder.cleanup();
      }
    } finally {
      await server.close();
    }
  });

  it('refuses every write and unknown points, with one clear line', async () => {
    const repo = new ObjectRepository(new MemoryObjectStore());
    const { ids } = await twoPoints(repo, [5]);
    const server = await serveDir(tmp.dir, { repository: repo });
    try {
      const body = path.join(tmp.dir, `body-${n++}.raw`);
      writeFileSync(body, Buffer.alloc(4096, 1));
      for (const query of ['vdi=vm', `vdi=vm@${ids[0]}`, 'sr_id=x']) {
        const r = await runAsync('curl', ['-sS', '-T', body, '-w', '%{http_code}', `${server.url}/import_raw_vdi?${query}`]);
        expect(r.stdout.toString()).toMatch(/backup repository, which is read-only\n403$/);
      }
      const post = await runAsync('curl', ['-sS', '-X', 'POST', '-w', '%{http_code}', `${server.url}/import_raw_vdi?vdi=vm`]);
      expect(post.stdout.toString()).toMatch(/405$/);
      for (const vdi of ['vm@20000101T000000Z', 'nosuch', 'vm@garbage', '../vm', '00000000-0000-4000-8000-000000000000']) {
        const r = await runAsync('curl', ['-sS', '-w', '%{http_code}', `${server.url}/export_raw_vdi?vdi=${encodeURIComponent(vdi)}`]);
        expect(r.stdout.toString()).toMatch(/^no such restore point: vdi=.*\n404$/);
        expect(r.stdout.toString()).not.toContain('s3://');
      }
    } finally {
      await server.close();
    }
    // Nothing was written: the repository holds its two points as before.
    expect((await repo.readManifest('vm'))!.points.map((p) => p.id)).toEqual(ids);
  });

  it('a damaged block object ends the transfer short of its length and fails the task; other points export', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const { ids, shas } = await twoPoints(repo, [9]);
    // The block only the newer point has: the 300 bytes of 0xa5 in block 9.
    const map0 = new Set((await repo.readMap('vm', (await repo.readManifest('vm'))!.points[0])).hashes());
    const only1 = [...(await repo.readMap('vm', (await repo.readManifest('vm'))!.points[1])).hashes()].filter((h) => !map0.has(h));
    expect(only1).toHaveLength(1);
    const key = `disks/vm/blocks/${only1[0]}`;
    const bytes = (await store.get(key))!;
    bytes[100] ^= 1;
    store.objects.get(key)!.body = bytes;
    const server = await serveDir(tmp.dir, { repository: repo });
    try {
      for (const format of ['raw', 'vhd', 'qcow2']) {
        const r = await runAsync('curl', ['-sS', '-D', '-', '-o', '/dev/null', `${server.url}/export_raw_vdi?vdi=vm@${ids[1]}&format=${format}`]);
        // curl 18: the connection closed before Content-Length bytes arrived.
        expect(r.status).toBe(18);
        const task = /task-id: (\S+)/i.exec(r.stdout.toString())![1];
        const t = JSON.parse((await must('curl', ['-sS', `${server.url}/task/${task}`])).toString());
        expect(t.status).toBe('failure');
        expect(t.error).toMatch(new RegExp(`restore point ${ids[1]}.*does not hold the bytes its name`));
      }
      const ok = await curl([`${server.url}/export_raw_vdi?vdi=vm@${ids[0]}`]);
      expect(sha256(ok.body)).toBe(shas[0]);
    } finally {
      await server.close();
    }
  });

  it('a point pruned by another run during its export fails the transfer, never a short success', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const changed = Array.from({ length: BLOCKS }, (_, i) => i).filter((b) => b % 7 !== 3);
    const { ids } = await twoPoints(repo, changed);
    // Another repository object on the same store plays the other host; the prune runs at the export's first block GET.
    const other = new ObjectRepository(store);
    let pruned: Promise<unknown> | null = null;
    const get = store.get.bind(store);
    store.get = async (key, range) => {
      if (key.includes('/blocks/') && !pruned) {
        pruned = pruneDisk(other, 'vm', { keep: 1 });
        await pruned;
      }
      return get(key, range);
    };
    const server = await serveDir(tmp.dir, { repository: repo });
    try {
      const r = await runAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `${server.url}/export_raw_vdi?vdi=vm@${ids[0]}`]);
      expect(pruned).not.toBeNull();
      expect(r.stdout.toString()).toBe('200');
      expect(r.status).toBe(18);
      expect(server.log.at(-1)!.error).toMatch(new RegExp(`restore point ${ids[0]}: block object is missing`));
    } finally {
      await server.close();
    }
  });

  it('a folder repository is served the same way, by the CLI, detected by its marker', async () => {
    const dir = path.join(tmp.dir, `repo-${n++}`);
    const repo = new FileRepository({ store: localStore, path: dir });
    const { ids, shas } = await twoPoints(repo, [0, 47]);
    const served = await spawnServe([dir, '--listen', '127.0.0.1:0']);
    try {
      expect(served.lines[0]).toMatch(/^serving the restore points of .* \(read-only\)$/);
      const list = JSON.parse((await curl([`${served.url}/`])).body.toString()) as Entry[];
      expect(list.map((e) => e.name)).toEqual(ids.map((id) => `vm@${id}`));
      expect(sha256((await curl([`${served.url}/export_raw_vdi?vdi=vm@${ids[0]}`])).body)).toBe(shas[0]);
      const file = path.join(tmp.dir, `folder-${n++}.vhdx`);
      writeFileSync(file, (await curl([`${served.url}/export_raw_vdi?vdi=vm&format=vhdx`])).body);
      expect(sha256(await qemuRaw(file, tmp.dir))).toBe(shas[1]);
      const r = await runAsync('curl', ['-sS', '-T', file, '-w', '%{http_code}', `${served.url}/import_raw_vdi?vdi=vm`]);
      expect(r.stdout.toString()).toMatch(/403$/);
    } finally {
      await served.stop();
    }
  });
});
