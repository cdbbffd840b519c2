/**
 * `stream` with images on an SMB share (a private Samba started here): a VHD chain on the share streamed full and
 * relative to its base, and a stream written onto the share. qemu-img reads what arrived; XAPI frames are applied
 * to the base's bytes by the test's own reader.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { run } from '../helpers/tools.js';
import { applyFrames } from '../helpers/xapi-frames.js';
import { ourDiff, qemuImage, qemuRaw, qemuSame } from '../cli/sync-helpers.js';
import { SambaServer } from './samba-server.js';
import { haveWorkflowTools, MiB, partials, passwordEnv, smbBase, usePrivateCli, vs, vsOk } from './workflow-helpers.js';

const go = haveWorkflowTools() ? describe : describe.skip;

go('stream from and to an SMB share', () => {
  let server: SambaServer;
  let S: string;
  const { dir, cleanup } = makeTempDir('vhdsync-smb-stream-');
  const env = passwordEnv();
  const share = (n: string) => path.join(server.shareDir, n);
  const local = (n: string) => path.join(dir, n);

  beforeAll(async () => {
    usePrivateCli(dir);
    server = await SambaServer.start();
    S = smbBase(server);
    // A VHD chain on the share: qemu's base, our child with a relative locator; the expected content made by qemu-io.
    qemuImage(share('base.vhd'), 'vpc', 10 * MiB, [{ offset: 0, length: 4 * MiB, fill: 0x41 }], 'subformat=dynamic');
    qemuRaw(share('base.vhd'), 'vpc', local('base.raw'));
    const changes = [
      { offset: MiB, length: MiB, fill: 'zero' as const },
      { offset: 6 * MiB, length: 4096, fill: 0x42 },
    ];
    await ourDiff(share('base.vhd'), share('child.vhd'), 'vhd', changes);
    run('cp', [local('base.raw'), local('child.raw')]);
    run('qemu-io', ['-f', 'raw', '-c', `write -q -z ${MiB} ${MiB}`, '-c', `write -q -P 0x42 ${6 * MiB} 4096`, local('child.raw')]);
  });
  afterAll(() => {
    server?.stop();
    cleanup();
  });

  it('a chain on the share streamed full to local files and relative to its base (allocation)', async () => {
    await vsOk(['stream', '--source', `${S}/child.vhd`, '--destination-format', 'vhd', '--destination', local('full.vhd')], env);
    expect(qemuSame(local('full.vhd'), 'vpc', local('child.raw'), 'raw').same).toBe(true);
    const delta = await vsOk(['stream', '--source', `${S}/child.vhd`, '--relative-to', `${S}/base.vhd`, '--destination-format', 'chunked', '--destination', local('delta.bin'), '--json'], env);
    expect(JSON.parse(delta.stdout)).toMatchObject({ method: 'allocation', relativeTo: `${S}/base.vhd` });
    expect(applyFrames(readFileSync(local('delta.bin')), readFileSync(local('base.raw'))).equals(readFileSync(local('child.raw')))).toBe(true);
  });

  it('a stream written onto the share under a temporary name, then renamed; refused without --force when it exists', async () => {
    const r = await vsOk(['stream', '--source', local('child.raw'), '--destination-format', 'vhd', '--destination', `${S}/streamed.vhd`, '--json'], env);
    expect(JSON.parse(r.stdout).bytes).toBe(readFileSync(share('streamed.vhd')).length);
    expect(qemuSame(share('streamed.vhd'), 'vpc', local('child.raw'), 'raw').same).toBe(true);
    const again = await vs(['stream', '--source', local('child.raw'), '--destination-format', 'vhd', '--destination', `${S}/streamed.vhd`], env);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/^vhdsync: .*exists/);
    expect(partials(server.shareDir)).toEqual([]);
  });
});
