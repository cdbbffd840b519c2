/**
 * `serve` authentication and TLS, through the CLI as users run it: `--hash-password`, a credentials file, Basic
 * with XAPI's realms, our own session tokens (query and cookie), the per-address limit on failures, HTTPS with a
 * certificate openssl makes here, `--json-log` without secrets, `--read-only`. Clients: curl and `vhdsync stream`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, cliAsync } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { haveTool, requireTool } from '../helpers/tools.js';
import { loadCredentials } from '../../src/serve/auth.js';
import { must, runAsync, serveDir, sha256, spawnServe, type ServeProcess } from './serve-helpers.js';

const MIB = 1 << 20;
const ok = requireTool(haveTool('curl') && haveTool('openssl'), 'curl and openssl');
const d = ok ? describe : describe.skip;

d('serve: credentials, sessions, TLS, logs', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let dir: string;
  let serve: ServeProcess;
  let creds: string;
  let ca: string;
  const disk = Buffer.alloc(4 * MIB);
  const p = (n: string) => path.join(tmp.dir, n);
  const curl = (args: string[]) => runAsync('curl', ['-sS', '--cacert', ca, ...args]);
  const code = async (args: string[]) => (await curl(['-o', '/dev/null', '-w', '%{http_code}', ...args])).stdout.toString();

  beforeAll(async () => {
    tmp = makeTempDir('serve-auth-');
    dir = p('disks');
    fs.mkdirSync(dir);
    for (let i = 0; i < disk.length; i += 4096) disk.writeUInt32LE(i, i);
    fs.writeFileSync(path.join(dir, 'd.raw'), disk);
    const h = await runAsync(process.execPath, [BIN, 'serve', '--hash-password'], { input: 'pa:ss wörd\n' });
    expect(h.status).toBe(0);
    creds = p('users');
    fs.writeFileSync(creds, `# users of this test\nalice:${h.stdout.toString().trim()}\n`);
    ca = p('cert.pem');
    await must('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('key.pem'), '-out', ca, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    serve = await spawnServe([dir, '--listen', '127.0.0.1:0', '--credentials', creds, '--tls-cert', ca, '--tls-key', p('key.pem'), '--json-log']);
  });
  afterAll(async () => {
    await serve?.stop();
    tmp.cleanup();
  });

  it('--hash-password prints a salted scrypt hash, never the password', async () => {
    const a = await runAsync(process.execPath, [BIN, 'serve', '--hash-password'], { input: 'secret' });
    const b = await runAsync(process.execPath, [BIN, 'serve', '--hash-password'], { input: 'secret' });
    expect(a.stdout.toString()).toMatch(/^\$scrypt\$ln=\d+,r=8,p=1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\n$/);
    expect(a.stdout.toString()).not.toBe(b.stdout.toString());
    expect(a.stdout.toString()).not.toContain('secret');
    const empty = await runAsync(process.execPath, [BIN, 'serve', '--hash-password'], { input: '' });
    expect(empty.status).toBe(2);
  });

  it("401 with XAPI's realms without or with wrong credentials; Basic over HTTPS works", async () => {
    const imp = await curl(['-D', '-', '-o', '/dev/null', '-T', path.join(dir, 'd.raw'), `${serve.url}/import_raw_vdi?vdi=d.raw`]);
    expect(imp.stdout.toString()).toMatch(/^HTTP\/1\.1 401[\s\S]*WWW-Authenticate: Basic realm="VDI\.import"/);
    const exp = await curl(['-D', '-', '-o', '/dev/null', `${serve.url}/export_raw_vdi?vdi=d.raw`]);
    expect(exp.stdout.toString()).toMatch(/WWW-Authenticate: Basic realm="VDI\.export_raw"/);
    expect(await code(['-u', 'alice:wrong', `${serve.url}/export_raw_vdi?vdi=d.raw`])).toBe('401');
    expect(await code(['-u', 'mallory:pa:ss wörd', `${serve.url}/`])).toBe('401');
    const got = await curl(['-u', 'alice:pa:ss wörd', `${serve.url}/export_raw_vdi?vdi=d.raw`]);
    expect(sha256(got.stdout)).toBe(sha256(disk));
    // Plain HTTP to the TLS port is no request at all.
    expect(await code([`${serve.url.replace('https', 'http')}/`])).toBe('000');
  });

  it('POST /session gives a token usable as session_id in the query or a cookie, until DELETE /session', async () => {
    expect(await code(['-X', 'POST', `${serve.url}/session`])).toBe('401');
    const s = JSON.parse((await curl(['-X', 'POST', '-u', 'alice:pa:ss wörd', `${serve.url}/session`])).stdout.toString());
    expect(s.user).toBe('alice');
    const token: string = s.session_id;
    expect(token.length).toBeGreaterThan(40);
    expect(await code([`${serve.url}/export_raw_vdi?vdi=d.raw&session_id=${encodeURIComponent(token)}`])).toBe('200');
    expect(await code(['-b', `session_id=${token}`, `${serve.url}/`])).toBe('200');
    expect(await code([`${serve.url}/?session_id=${encodeURIComponent(token)}x`])).toBe('401');
    // A session cannot open another session.
    expect(await code(['-X', 'POST', '-b', `session_id=${token}`, `${serve.url}/session`])).toBe('401');
    expect(await code(['-X', 'DELETE', '-b', `session_id=${token}`, `${serve.url}/session`])).toBe('200');
    expect(await code(['-b', `session_id=${token}`, `${serve.url}/`])).toBe('401');
  });

  it('vhdsync stream imports and exports over HTTPS with --ca-cert and credentials from the environment', async () => {
    const src = p('new.raw');
    const data = Buffer.alloc(4 * MIB, 0x3c);
    fs.writeFileSync(src, data);
    const env = { VHDSYNC_HTTP_USER: 'alice', VHDSYNC_HTTP_PASSWORD: 'pa:ss wörd' };
    const up = await cliAsync(['stream', '--source', src, '--destination-format', 'vhd', '--destination', `${serve.url}/import_raw_vdi?vdi=d.raw`, '--ca-cert', ca, '-q'], { env });
    expect(up.stderr).toBe('');
    expect(up.status).toBe(0);
    expect(sha256(fs.readFileSync(path.join(dir, 'd.raw')))).toBe(sha256(data));
    const back = p('back.raw');
    const down = await cliAsync(['stream', '--source', `${serve.url}/export_raw_vdi?vdi=d&format=vhd`, '--destination', back, '--ca-cert', ca, '-q'], { env });
    expect(down.status).toBe(0);
    expect(sha256(fs.readFileSync(back))).toBe(sha256(data));
    const untrusted = await cliAsync(['stream', '--source', `${serve.url}/export_raw_vdi?vdi=d`, '--destination', p('x.raw'), '-q'], { env });
    expect(untrusted.status).toBe(1);
    expect(untrusted.stderr).toMatch(/certificate/);
  });

  it('--json-log writes one JSON object per request, with no password or session token in it', async () => {
    const text = serve.lines.join('\n');
    expect(text).not.toContain('pa:ss');
    expect(text).not.toMatch(/vhdsync-session:[A-Za-z0-9_-]{10}/);
    const requests = serve.lines.map((l) => JSON.parse(l)).filter((e) => e.event === 'request');
    expect(requests.length).toBeGreaterThan(10);
    expect(requests.find((e) => e.status === 401 && /import_raw_vdi/.test(e.target))).toBeTruthy();
    expect(requests.find((e) => e.user === 'alice' && e.status === 200 && e.bytes === disk.length)).toBeTruthy();
  });

  it('failed logins are limited per address (429 with Retry-After, even for the right password), then allowed again', async () => {
    const users = await loadCredentials(creds);
    const s = await serveDir(dir, { users, rateLimit: { failures: 3, windowMs: 60_000, blockMs: 1500 } });
    try {
      for (let i = 0; i < 3; i++) expect(await code(['-u', 'alice:nope', `${s.url}/`])).toBe('401');
      const limited = await curl(['-D', '-', '-o', '/dev/null', '-u', 'alice:pa:ss wörd', `${s.url}/`]);
      expect(limited.stdout.toString()).toMatch(/^HTTP\/1\.1 429[\s\S]*Retry-After: \d+/);
      await new Promise((r) => setTimeout(r, 1600));
      expect(await code(['-u', 'alice:pa:ss wörd', `${s.url}/`])).toBe('200');
    } finally {
      await s.close();
    }
  });

  it('--read-only refuses every PUT with 403 and writes nothing; a non-loopback address needs credentials', async () => {
    const before = fs.readdirSync(dir).sort();
    const ro = await spawnServe([dir, '--listen', '127.0.0.1:0', '--read-only']);
    try {
      const put = await runAsync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-T', p('new.raw'), `${ro.url}/import_raw_vdi?vdi=d.raw`]);
      expect(put.stdout.toString()).toBe('403');
      const list = await runAsync('curl', ['-sS', `${ro.url}/`]);
      expect(JSON.parse(list.stdout.toString())[0]).toMatchObject({ name: 'd.raw', format: 'raw' });
      expect(fs.readdirSync(dir).sort()).toEqual(before);
    } finally {
      await ro.stop();
    }
    const open = await cliAsync(['serve', dir, '--listen', '0.0.0.0:0']);
    expect(open.status).toBe(2);
    expect(open.stderr).toMatch(/^vhdsync: .*--credentials/);
  });
});
