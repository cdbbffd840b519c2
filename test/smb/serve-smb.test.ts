/**
 * `vhdsync serve smb://...`: a folder on an SMB share (a private Samba started here) served over HTTP. Listing,
 * exports (full and `base=`), imports (all or nothing through a differencing image and the merge, on the share),
 * a QCOW2 import and a new disk from `sr_id`; the share's own files, read directly, are the oracle (qemu-img).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { run, runStatus } from '../helpers/tools.js';
import { must, sha256, spawnServe, type ServeProcess } from '../serve/serve-helpers.js';
import { SambaServer } from './samba-server.js';
import { haveWorkflowTools, MiB, passwordEnv, smbBase } from './workflow-helpers.js';

const go = haveWorkflowTools() ? describe : describe.skip;

go('serve with its folder on an SMB share', () => {
  let samba: SambaServer;
  let serve: ServeProcess;
  const { dir, cleanup } = makeTempDir('vhdsync-smb-serve-');
  const share = (n: string) => path.join(samba.shareDir, n);
  const local = (n: string) => path.join(dir, n);
  const url = (q: string) => `${serve.url}${q}`;
  /** qemu-img compare of a file with raw bytes (VHDs sized by current_size). */
  const same = (image: string, raw: string) => {
    const args = image.endsWith('.vhd') ? ['--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${image}`, `driver=raw,file.filename=${raw}`] : ['-F', 'raw', image, raw];
    const r = runStatus('qemu-img', ['compare', ...args]);
    return r.status === 0 ? 'identical' : r.stdout + r.stderr;
  };
  /** Files on the share that are not disks: leftovers of imports, temp files, locks (uuid sidecars are fine). */
  const leftovers = () => fs.readdirSync(samba.shareDir).filter((n) => n.startsWith('.') || n.endsWith('.partial') || n.endsWith('-lock') || n.endsWith('.json'));

  beforeAll(async () => {
    samba = await SambaServer.start();
    run('qemu-img', ['create', '-q', '-f', 'vhdx', share('base.vhdx'), String(8 * MiB)]);
    run('qemu-io', ['-f', 'vhdx', '-c', 'write -q -P 0x31 0 2M', '-c', `write -q -P 0x32 ${5 * MiB} 1M`, share('base.vhdx')]);
    fs.copyFileSync(share('base.vhdx'), share('next.vhdx'));
    run('qemu-io', ['-f', 'vhdx', '-c', 'write -q -P 0x41 64k 8k', '-c', 'write -q -z 1M 1M', '-c', `write -q -P 0x42 ${7 * MiB} 4k`, share('next.vhdx')]);
    run('qemu-img', ['convert', '-O', 'raw', share('next.vhdx'), local('next.raw')]);
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', share('target.vhd'), String(8 * MiB)]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', share('target.qcow2'), String(8 * MiB)]);
    serve = await spawnServe([smbBase(samba), '--listen', '127.0.0.1:0'], passwordEnv());
  });
  afterAll(async () => {
    await serve?.stop();
    samba?.stop();
    cleanup();
  });

  it('lists the disks on the share and exports them (full in every format, a base= VHD delta applied back)', async () => {
    const list = JSON.parse((await must('curl', ['-sS', url('/')])).toString()) as { name: string; format: string; virtualSize: number }[];
    expect(list.map((e) => e.name).sort()).toEqual(['base.vhdx', 'next.vhdx', 'target.qcow2', 'target.vhd']);
    for (const [format, ext] of [['raw', 'raw'], ['vhd', 'vhd'], ['vhdx', 'vhdx'], ['qcow2', 'qcow2']]) {
      await must('curl', ['-sS', '--fail', '-o', local(`full.${ext}`), url(`/export_raw_vdi?vdi=next&format=${format}`)]);
      expect([format, same(local(`full.${ext}`), local('next.raw'))]).toEqual([format, 'identical']);
    }
    await must('curl', ['-sS', '--fail', '-o', local('delta.vhd'), url('/export_raw_vdi?vdi=next.vhdx&base=base.vhdx&format=vhd')]);
    expect(fs.statSync(local('delta.vhd')).size).toBeLessThan(fs.statSync(local('full.vhd')).size);
    fs.copyFileSync(share('base.vhdx'), share('back.vhdx'));
    await must('curl', ['-sS', '--fail', '-T', local('delta.vhd'), url('/import_raw_vdi?vdi=back.vhdx&format=vhd')]);
    expect(same(share('back.vhdx'), local('next.raw'))).toBe('identical');
    expect(leftovers()).toEqual([]);
  });

  it('imports onto the share: raw into a VHD, a QCOW2 stream into a QCOW2, a new disk from sr_id; nothing left over', async () => {
    await must('curl', ['-sS', '--fail', '-T', local('next.raw'), url('/import_raw_vdi?vdi=target.vhd&format=raw')]);
    expect(same(share('target.vhd'), local('next.raw'))).toBe('identical');
    await must('curl', ['-sS', '--fail', '-T', local('full.qcow2'), url('/import_raw_vdi?vdi=target.qcow2&format=qcow2')]);
    expect(same(share('target.qcow2'), local('next.raw'))).toBe('identical');
    expect(runStatus('qemu-img', ['check', share('target.qcow2')]).status).toBe(0);
    const head = (await must('curl', ['-sS', '--fail', '-D', '-', '-o', '/dev/null', '-T', local('next.raw'), url('/import_raw_vdi?sr_id=x&task_id=new-on-smb')])).toString();
    expect(head).toMatch(/task-id: new-on-smb/);
    let task: { status: string; result: { disk: string } | null } = { status: 'pending', result: null };
    for (let i = 0; i < 200 && task.status === 'pending'; i++) {
      if (i) await new Promise((r) => setTimeout(r, 50));
      task = JSON.parse((await must('curl', ['-sS', url('/task/new-on-smb')])).toString());
    }
    expect(task.status).toBe('success');
    expect(sha256(fs.readFileSync(share(task.result!.disk)))).toBe(sha256(fs.readFileSync(local('next.raw'))));
    expect(leftovers()).toEqual([]);
  });
});
