/**
 * A repository on a real S3 engine (a private Ceph radosgw) served by `vhdsync serve s3://...` and restored into
 * other outputs: exports fetched with curl, python3 requests and `vhdsync stream`, each compared with `vhdsync
 * restore` of the same point; a block object altered with the SDK ends the transfer visibly; writes refused;
 * `restore --to` an HTTP PUT (our serve) and onto an SMB share (a private Samba), compared byte for byte.
 */
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { cliAsync } from '../helpers/cli.js';
import { describeRgw, useRadosgw } from '../helpers/radosgw.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool } from '../helpers/tools.js';
import { haveSamba, PASSWORD, SambaServer } from '../smb/samba-server.js';
import { smbBase } from '../smb/workflow-helpers.js';
import { must, qemuRaw, runAsync, sameAsRaw, serveDir, sha256, spawnServe, type ServeProcess } from './serve-helpers.js';

const d = requireTool(HAVE_QEMU, 'qemu-img') ? describeRgw : describe.skip;
const MiB = 1 << 20;
const SIZE = 4 * MiB;
const BLOCK = 256 << 10;

d('serve and restore of a repository on radosgw', () => {
  const gw = useRadosgw();
  let tmp: ReturnType<typeof makeTempDir>;
  let bucket: string;
  let repo: string;
  const ids: string[] = [];
  /** Each point restored by the CLI to a raw file: the oracle every export is compared with. */
  const restored: string[] = [];
  let served: ServeProcess;

  /** Writes `fill` over `length` bytes at each offset of the raw source. */
  function write(file: string, offsets: number[], length: number, fill: number): void {
    const fd = openSync(file, 'r+');
    for (const o of offsets) writeSync(fd, Buffer.alloc(length, fill), 0, length, o);
    closeSync(fd);
  }

  async function vs(args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
    const r = await cliAsync(args, { env: { ...gw().env, ...env } });
    if (r.status !== 0 || r.stderr !== '') throw new Error(`vhdsync ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
    return r.stdout;
  }

  beforeAll(async () => {
    tmp = makeTempDir('vhdsync-serve-s3-');
    bucket = await gw().newBucket();
    repo = `s3://${bucket}/backups`;
    const src = path.join(tmp.dir, 'vm.raw');
    closeSync(openSync(src, 'w'));
    truncateSync(src, SIZE);
    write(src, [0, 3 * BLOCK + 100, 9 * BLOCK, 15 * BLOCK - 4096], 70_000, 0x41);
    for (let r = 0; r < 2; r++) {
      if (r === 1) write(src, [BLOCK, 9 * BLOCK + 4096, 12 * BLOCK], 5000, 0x7e);
      ids.push((JSON.parse(await vs(['backup', src, '--repo', repo, '--block-size', '256K', '--json'])) as { point: string }).point);
      const out = path.join(tmp.dir, `restored-${r}.raw`);
      await vs(['restore', '--repo', repo, 'vm', '--at', ids[r], '--to', out]);
      expect(sha256(readFileSync(out))).toBe(sha256(readFileSync(src)));
      restored.push(out);
    }
    served = await spawnServe([repo, '--listen', '127.0.0.1:0'], gw().env);
  }, 240_000);
  afterAll(async () => {
    await served?.stop();
    tmp?.cleanup();
  });

  const url = (query: string) => `${served.url}/export_raw_vdi?${query}`;

  it('exports every point: curl (raw, Range), python3 requests (VHDX), vhdsync stream (QCOW2), all equal to restore', async () => {
    expect(served.lines[0]).toBe(`serving the restore points of ${repo} on ${served.url} (read-only)`);
    const list = JSON.parse((await must('curl', ['-sS', '--fail', `${served.url}/`])).toString()) as Array<{ name: string; newest: boolean }>;
    expect(list.map((e) => [e.name, e.newest])).toEqual([
      [`vm@${ids[0]}`, false],
      [`vm@${ids[1]}`, true],
    ]);
    for (const [r, id] of ids.entries()) {
      const oracle = readFileSync(restored[r]);
      expect(sha256(await must('curl', ['-sS', '--fail', url(`vdi=vm@${id}`)]))).toBe(sha256(oracle));
      const part = await must('curl', ['-sS', '--fail', '-r', '1000-600000', url(`vdi=vm@${id}`)]);
      expect(part.equals(oracle.subarray(1000, 600001))).toBe(true);
      const vhdx = path.join(tmp.dir, `py-${r}.vhdx`);
      const py = `import requests,sys\nr=requests.get(sys.argv[1],stream=True)\nr.raise_for_status()\nopen(sys.argv[2],'wb').write(r.content)\n`;
      await must('python3', ['-c', py, url(`vdi=vm@${id}&format=vhdx`), vhdx]);
      expect(await sameAsRaw(vhdx, restored[r])).toBe('identical');
      const qcow2 = path.join(tmp.dir, `stream-${r}.qcow2`);
      await vs(['stream', '--source', url(`vdi=vm@${id}&format=qcow2`), '--destination', qcow2, '-q']);
      expect(await sameAsRaw(qcow2, restored[r])).toBe('identical');
    }
  });

  it('refuses writes; a block object altered with the SDK ends the transfer short and the task failed', async () => {
    const body = path.join(tmp.dir, 'body.raw');
    writeFileSync(body, Buffer.alloc(65536, 1));
    const put = await runAsync('curl', ['-sS', '-T', body, '-w', '%{http_code}', `${served.url}/import_raw_vdi?vdi=vm`]);
    expect(put.stdout.toString()).toBe('this server exports a backup repository, which is read-only\n403');
    // A block only the newer point has (the one holding offset 12 x 256K), altered in the bucket.
    const keys = (await gw().keys(bucket, 'backups/disks/vm/blocks/')).sort();
    const raw1 = readFileSync(restored[1]);
    const { createHash } = await import('node:crypto');
    const block = raw1.subarray(12 * BLOCK, 13 * BLOCK);
    const key = `backups/disks/vm/blocks/${createHash('sha256').update(block).digest('hex')}`;
    expect(keys).toContain(key);
    const bad = Buffer.from(block);
    bad[7] ^= 0xff;
    await gw().sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bad }));
    const r = await runAsync('curl', ['-sS', '-D', '-', '-o', '/dev/null', url(`vdi=vm@${ids[1]}&format=vhd`)]);
    expect(r.status).toBe(18);
    const task = /task-id: (\S+)/i.exec(r.stdout.toString())![1];
    const t = JSON.parse((await must('curl', ['-sS', `${served.url}/task/${task}`])).toString()) as { status: string; error: string };
    expect(t.status).toBe('failure');
    expect(t.error).toContain(`restore point ${ids[1]}: block object does not hold the bytes its name (their SHA-256) says`);
    expect(t.error).not.toContain(repo);
    // The older point does not use that block and still exports whole.
    expect(sha256(await must('curl', ['-sS', '--fail', url(`vdi=vm@${ids[0]}`)]))).toBe(sha256(readFileSync(restored[0])));
    // Put back, the point exports again.
    await gw().sdk.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: block }));
    expect(sha256(await must('curl', ['-sS', '--fail', url(`vdi=vm@${ids[1]}`)]))).toBe(sha256(raw1));
  });

  it('restore --to an HTTP PUT (serve into a VHDX) writes the point exactly', async () => {
    const folder = makeTempDir('vhdsync-serve-s3-put-');
    await must('qemu-img', ['create', '-q', '-f', 'vhdx', path.join(folder.dir, 'target.vhdx'), String(SIZE)]);
    const target = await serveDir(folder.dir);
    try {
      await vs(['restore', '--repo', repo, 'vm', '--at', ids[1], '--to', `${target.url}/import_raw_vdi?vdi=target.vhdx&format=vhd`, '-q']);
      expect(await sameAsRaw(path.join(folder.dir, 'target.vhdx'), restored[1])).toBe('identical');
    } finally {
      await target.close();
      folder.cleanup();
    }
  });

  (haveSamba() ? it : it.skip)('restore onto an SMB share (raw and VHDX) writes the point exactly', async () => {
    const smb = await SambaServer.start();
    try {
      const env = { VHDSYNC_SMB_PASSWORD: PASSWORD };
      await vs(['restore', '--repo', repo, 'vm', '--at', ids[0], '--to', `${smbBase(smb)}/restored.raw`, '-q'], env);
      expect(sha256(readFileSync(path.join(smb.shareDir, 'restored.raw')))).toBe(sha256(readFileSync(restored[0])));
      await vs(['restore', '--repo', repo, 'vm', '--to', `${smbBase(smb)}/restored.vhdx`, '-q'], env);
      expect(sha256(await qemuRaw(path.join(smb.shareDir, 'restored.vhdx'), tmp.dir))).toBe(sha256(readFileSync(restored[1])));
    } finally {
      smb.stop();
    }
  });
});
