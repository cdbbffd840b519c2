/**
 * A private Ceph radosgw (S3) for one test file, through scripts/ceph/: `useRadosgw()` brings a single-node
 * cluster up in beforeAll and down in afterAll. Each test file gets its own cluster on free ports, so jest
 * workers can run several at once. The tests skip with a printed reason only when the Ceph packages are not
 * installed (CI installs them: .ci/run; a missing package fails there).
 */
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { S3Client, CreateBucketCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { haveTool } from './tools.js';
import { makeTempDir } from './tmp.js';

const run = promisify(execFile);
// The SDK's multi-line notice that its 2027 releases need Node 22 (src/io/s3/s3-store.ts silences it the same way).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const SCRIPTS = path.resolve('scripts/ceph');
export const RGW_REGION = 'us-east-1';

/** The Ceph daemons and tools the scripts run are installed (ceph-mon, ceph-osd, radosgw, ceph-common). */
export function haveRadosgw(): boolean {
  const ok = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph', 'monmaptool', 'ceph-authtool', 'curl'].every(haveTool);
  if (ok) return true;
  if (process.env.CI) throw new Error('Ceph is required in CI but missing (.ci/run installs ceph-mon ceph-osd radosgw ceph-common)');
  // eslint-disable-next-line no-console
  console.warn('skipping: Ceph radosgw not installed (apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common)');
  return false;
}

/** `describe` when radosgw can run here, `describe.skip` (after printing why) otherwise. */
export const describeRgw: jest.Describe = haveRadosgw() ? describe : describe.skip;

/** A running gateway and its one user. */
export interface Radosgw {
  readonly dir: string;
  readonly endpoint: string;
  readonly accessKey: string;
  readonly secretKey: string;
  /** Environment for a vhdsync child process (or for our own config resolution) that uses this gateway. */
  readonly env: NodeJS.ProcessEnv;
  /** An SDK client of this gateway, for tests to set up and inspect buckets without our code. */
  readonly sdk: S3Client;
  /** Creates a new, empty bucket with a unique name and returns the name. */
  newBucket(): Promise<string>;
  /** Every key in a bucket, listed with the SDK directly. */
  keys(bucket: string, prefix?: string): Promise<string[]>;
  /** SIGKILL of radosgw (monitor and OSD keep running). */
  killGateway(): Promise<void>;
  /** Starts radosgw again on the same port; resolves once it answers. */
  restartGateway(): Promise<void>;
}

let bucketSeq = 0;

async function up(): Promise<{ dir: string; cleanup: () => void; vars: Record<string, string> }> {
  // The scripts pick free ports a moment before the daemons bind them; another process can take one in between,
  // so a failed bring-up is retried once on other ports.
  let lastError: unknown;
  for (let attempt = 0; attempt < 2; attempt++) {
    const { dir, cleanup } = makeTempDir('vhdsync-rgw-');
    try {
      // Without Nagle's algorithm (Ceph's default keeps it): each small answer radosgw writes in two pieces otherwise
      // waits ~40 ms for our delayed ACK. Same behaviour, half the time for the S3 crash suite (98 -> 52 s).
      const env = { ...process.env, RGW_TCP_NODELAY: process.env.RGW_TCP_NODELAY ?? '1' };
      const { stdout } = await run(path.join(SCRIPTS, 'rgw-up.sh'), [dir], { timeout: 180_000, env });
      const vars: Record<string, string> = {};
      for (const line of stdout.split('\n')) {
        const m = /^([A-Z_]+)=(.*)$/.exec(line);
        if (m) vars[m[1]] = m[2];
      }
      return { dir, cleanup, vars };
    } catch (e) {
      lastError = e;
      await run(path.join(SCRIPTS, 'rgw-down.sh'), [dir]).catch(() => undefined);
      cleanup();
    }
  }
  const e = lastError as { stderr?: string; message?: string };
  throw new Error(`radosgw did not come up: ${e.stderr || e.message}`);
}

/**
 * Registers beforeAll/afterAll that start and stop a private radosgw for the current test file; the returned
 * function gives the running gateway (inside tests and hooks only).
 */
export function useRadosgw(): () => Radosgw {
  let gw: Radosgw | undefined;
  let stop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    const { dir, cleanup, vars } = await up();
    const endpoint = vars.RGW_ENDPOINT;
    const accessKey = vars.RGW_ACCESS_KEY;
    const secretKey = vars.RGW_SECRET_KEY;
    const sdk = new S3Client({
      endpoint,
      region: RGW_REGION,
      forcePathStyle: true,
      credentials: { accessKeyId: accessKey, secretAccessKey: secretKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    const env: NodeJS.ProcessEnv = {
      AWS_ACCESS_KEY_ID: accessKey,
      AWS_SECRET_ACCESS_KEY: secretKey,
      AWS_ENDPOINT_URL: endpoint,
      AWS_REGION: RGW_REGION,
      // Nothing of the developer's own AWS setup may leak into a test.
      AWS_PROFILE: '',
      AWS_SESSION_TOKEN: '',
      AWS_CONFIG_FILE: path.join(dir, 'no-aws-config'),
      AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'no-aws-credentials'),
      AWS_EC2_METADATA_DISABLED: 'true',
    };
    const keys = async (bucket: string, prefix?: string): Promise<string[]> => {
      const out: string[] = [];
      let token: string | undefined;
      do {
        const r = await sdk.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
        for (const o of r.Contents ?? []) out.push(o.Key!);
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
      return out;
    };
    gw = {
      dir,
      endpoint,
      accessKey,
      secretKey,
      env,
      sdk,
      keys,
      async newBucket() {
        const name = `vhdsync-test-${process.pid}-${++bucketSeq}`;
        await sdk.send(new CreateBucketCommand({ Bucket: name }));
        return name;
      },
      async killGateway() {
        await run(path.join(SCRIPTS, 'rgw-gateway.sh'), ['kill', dir]);
      },
      async restartGateway() {
        await run(path.join(SCRIPTS, 'rgw-gateway.sh'), ['start', dir], { timeout: 60_000 });
      },
    };
    // Buckets go with the cluster: nothing to empty first.
    stop = async () => {
      sdk.destroy();
      await run(path.join(SCRIPTS, 'rgw-down.sh'), [dir], { timeout: 120_000 }).catch(() => undefined);
      cleanup();
    };
  }, 240_000);
  afterAll(async () => {
    await stop?.();
  }, 180_000);
  return () => {
    if (!gw) throw new Error('radosgw is not running (useRadosgw() outside a test, or its beforeAll failed)');
    return gw;
  };
}
