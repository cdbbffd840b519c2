/**
 * The S3 client (the AWS SDK, a few hundred modules) loads only when an s3:// location is opened: commands on
 * files never pay for it (issue 14's start-up goal). A preload module reports every @aws-sdk module in the CJS
 * module cache at exit (the SDK resolves to its CommonJS build under Node); a control run that opens an s3://
 * store shows the detector sees it.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { BIN } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';

describe('S3 client loading', () => {
  const { dir, cleanup } = makeTempDir('vhdsync-lazy-');
  afterAll(cleanup);
  const preload = path.join(dir, 'report.cjs');
  writeFileSync(preload, `process.on('exit', () => { const n = Object.keys(require.cache).filter((k) => k.includes('/@aws-sdk/')).length; require('fs').writeSync(2, 'aws-sdk-modules=' + n + '\\n'); });\n`);

  function sdkModules(args: string[]): number {
    const r = spawnSync(process.execPath, ['-r', preload, ...args], { encoding: 'utf8', env: { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' } });
    const m = /aws-sdk-modules=(\d+)/.exec(r.stderr);
    if (!m) throw new Error(`no report: ${r.stderr}`);
    return Number(m[1]);
  }

  it('vhdsync --version and a command on a file load none of it', () => {
    expect(sdkModules([BIN, '--version'])).toBe(0);
    const img = path.join(dir, 'disk.raw');
    writeFileSync(img, Buffer.alloc(1 << 20));
    expect(sdkModules([BIN, 'info', img])).toBe(0);
  });

  it('opening an s3:// store loads it (the detector works)', () => {
    const entry = pathToFileURL(path.resolve('dist/io/object-stores.js')).href;
    const script = `const m = await import(${JSON.stringify(entry)}); const s = await m.openObjectStore('s3://bucket/x', { env: { AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' } }); await s.close();`;
    expect(sdkModules(['--input-type=module', '-e', script])).toBeGreaterThan(10);
  });
});
