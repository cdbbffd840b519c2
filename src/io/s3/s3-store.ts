/**
 * `ObjectStore` on an S3-compatible service through @aws-sdk/client-s3 (docs/decisions, "S3 client"). This module and the SDK
 * load only when an s3:// location is opened (io/object-stores.ts imports it dynamically).
 *
 * Every request goes through `withRetries` (retry.ts); the SDK's own retries are off. Service quirks handled here:
 * radosgw 16 refuses a PUT `If-Match` whose ETag is quoted (sent bare: AWS takes the bare value too); an ETag can
 * come back empty (radosgw after a multipart completion; asked again with HEAD); a conditional PUT whose earlier
 * attempt's answer was lost or a 5xx (the service may have committed it anyway) and whose retry then fails its
 * condition may have been our own write: the object is read back and compared byte for byte.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import type { Readable } from 'node:stream';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { ObjectInfo, ObjectRange, ObjectStore, PutConditions, WriteFence } from '../object-store.js';
import { AlreadyExistsError, ConflictError } from '../../util/errors.js';
import { resolveS3Settings, type S3ConfigOptions, type S3Settings } from './config.js';
import { mapS3Error, serviceCode, type ErrorContext } from './errors.js';
import { formatS3Location, parseS3Location, type S3Location } from './location-syntax.js';
import { DEFAULT_RETRY, httpStatus, isTransient, withRetries, type RetryPolicy } from './retry.js';

/** How to open a store: the CLI's options plus tuning the repository layer and tests may set. */
export interface S3StoreOptions extends S3ConfigOptions {
  /** Connections kept per store (requests beyond it queue); size it to the requests kept in flight. Default 32. */
  maxConnections?: number;
  /** Retry policy; `attempts` defaults to AWS_MAX_ATTEMPTS or the profile's max_attempts when set. */
  retry?: Partial<RetryPolicy>;
  /** Keys per listing page (the service's maximum, 1000, by default; tests page with fewer). */
  listPageSize?: number;
  /** Keys per DeleteObjects request (at most 1000, the service's limit). */
  deleteBatch?: number;
  /** A connection that is not established within this time fails (then is retried). Default 5 s. */
  connectTimeoutMs?: number;
  /** A request whose connection stays silent this long fails (then is retried). Default 30 s. */
  idleTimeoutMs?: number;
  /** The environment to read settings from (tests); process.env by default. */
  env?: NodeJS.ProcessEnv;
  /** Called before each retry with the failure that caused it (tests, debugging); never sees keys. */
  onRetry?: (attempt: number, err: unknown) => void;
}

const silentLogger = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/** Removes the quotes S3 puts around ETags (`"abc"` -> `abc`; a weak `W/"abc"` -> `abc`). */
export function bareEtag(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

/** A body error the retry loop treats as transient: the answer is shorter or longer than it announced. */
function truncated(): Error {
  return Object.assign(new Error('the body does not have its announced length'), { name: 'TruncatedBody' });
}

/** Above this, an announced length is not trusted to size a buffer up front: the body is gathered as it comes. */
const PREALLOCATE_LIMIT = 64 << 20;

/**
 * Reads a response body into one Buffer. A length the server announces sizes the buffer only when it is at most
 * what was asked for (a range) and at most 64 MiB; the body must then have exactly that length.
 */
async function readBody(body: unknown, length: number | undefined, asked: number | undefined): Promise<Buffer> {
  const stream = body as Readable;
  if (length !== undefined && asked !== undefined && length > asked) {
    stream.destroy();
    throw new Error(`the service answered ${length} bytes for a range of ${asked}`);
  }
  if (length === undefined || length > PREALLOCATE_LIMIT) {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of stream) {
      chunks.push(c as Buffer);
      total += (c as Buffer).length;
      // Unannounced length: still never more than the range asked for is gathered.
      if (asked !== undefined && total > asked) {
        stream.destroy();
        throw new Error(`the service answered more than the ${asked} bytes of the range asked for`);
      }
    }
    if (length !== undefined && total !== length) throw truncated();
    return Buffer.concat(chunks, total);
  }
  const out = Buffer.allocUnsafe(length);
  let at = 0;
  for await (const c of stream) {
    const chunk = c as Buffer;
    if (at + chunk.length > length) {
      stream.destroy();
      throw truncated();
    }
    chunk.copy(out, at);
    at += chunk.length;
  }
  if (at !== length) throw truncated();
  return out;
}

/**
 * Sends one attempt of a mutating request under `fence`: asked first (throws when the writer's authority has
 * ended), and the attempt is aborted if it is still running when that authority ends (a renewal meanwhile moves the
 * end: the timer asks again). A body cut off before it was complete is never committed by the service; one sent
 * completely before the end may still be committed later, which the lease's margin covers (decision 0010).
 */
async function fencedAttempt<T>(fence: WriteFence | undefined, send: (abortSignal?: AbortSignal) => Promise<T>): Promise<T> {
  if (!fence) return send();
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number) => {
    timer = setTimeout(() => {
      try {
        arm(Math.max(1, fence.remainingMs()));
      } catch (err) {
        controller.abort(err);
      }
    }, ms);
  };
  arm(Math.max(1, fence.remainingMs()));
  try {
    return await send(controller.signal);
  } catch (err) {
    // Aborted for the fence: its own error (one line, final), not the SDK's AbortError.
    if (controller.signal.aborted) throw controller.signal.reason;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Gives the signer the payload's SHA-256 the caller already has: SigV4 signs `x-amz-content-sha256` and takes a value
 * found there instead of hashing the body itself (@smithy/signature-v4's getPayloadHash), which for a 2 MiB block is
 * as much CPU as the rest of its request. The service recomputes it over the body it receives and refuses a mismatch
 * (XAmzContentSHA256Mismatch), so nothing is trusted that was not checked before.
 */
function withPayloadHash(command: PutObjectCommand, sha256: string): void {
  command.middlewareStack.add(
    (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string> };
      if (request.headers) request.headers['x-amz-content-sha256'] = sha256;
      return next(args);
    },
    { step: 'build', name: 'vhdsyncKnownPayloadHash' },
  );
}

/** An S3 bucket and prefix as an ObjectStore. */
export class S3ObjectStore implements ObjectStore {
  readonly display: string;
  private readonly keyPrefix: string;
  private readonly ctx: ErrorContext;
  /** The bucket answered a request: a 404 to a HEAD then means the object, not the bucket, is missing. */
  private bucketSeen = false;

  constructor(
    private readonly client: S3Client,
    private readonly location: S3Location,
    settings: S3Settings,
    private readonly policy: RetryPolicy,
    private readonly pageSize: number,
    private readonly deleteBatch: number,
    private readonly onRetry?: (attempt: number, err: unknown) => void,
  ) {
    this.display = formatS3Location(location);
    this.keyPrefix = location.prefix ? `${location.prefix}/` : '';
    this.ctx = {
      subject: this.display,
      bucket: location.bucket,
      endpoint: settings.endpoint ?? `s3.${settings.region}.amazonaws.com`,
      credentialSource: settings.credentialSource,
      secrets: settings.credentials ? [settings.credentials.accessKeyId, settings.credentials.secretAccessKey, settings.credentials.sessionToken ?? ''] : [],
    };
  }

  private get bucket(): string {
    return this.location.bucket;
  }

  private fullKey(key: string): string {
    return this.keyPrefix + key;
  }

  /** Runs one request with retries; failures become typed errors about `key` (or the store). */
  private async request<T>(key: string | null, op: (attempt: number) => Promise<T>): Promise<T> {
    try {
      return await withRetries(op, this.policy, undefined, this.onRetry);
    } catch (err) {
      throw mapS3Error(err, { ...this.ctx, subject: key === null ? this.display : `${this.display}/${key}` });
    }
  }

  async get(key: string, range?: ObjectRange): Promise<Buffer | null> {
    if (range && range.length === 0) return (await this.head(key)) ? Buffer.alloc(0) : null;
    return this.request(key, async () => {
      try {
        const r = await this.client.send(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: this.fullKey(key),
            Range: range ? `bytes=${range.start}-${range.start + range.length - 1}` : undefined,
          }),
        );
        this.bucketSeen = true;
        return await readBody(r.Body, r.ContentLength, range?.length);
      } catch (err) {
        if (serviceCode(err) === 'NoSuchKey' || (httpStatus(err) === 404 && serviceCode(err) !== 'NoSuchBucket')) return null;
        // A range starting at or past the end: nothing there, as a file read past its end gives nothing.
        if (httpStatus(err) === 416) return Buffer.alloc(0);
        throw err;
      }
    });
  }

  async head(key: string): Promise<ObjectInfo | null> {
    return this.request(key, async () => {
      try {
        const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
        this.bucketSeen = true;
        return { key, size: r.ContentLength ?? 0, etag: bareEtag(r.ETag), lastModifiedMs: r.LastModified?.getTime() ?? 0, ...(r.Metadata ? { metadata: r.Metadata } : {}) };
      } catch (err) {
        if (httpStatus(err) === 404) {
          // HEAD answers have no body: a missing bucket looks like a missing key, so ask the bucket (once).
          if (!this.bucketSeen && !(await this.bucketExistsOnce())) throw Object.assign(new Error('no such bucket'), { name: 'NoSuchBucket', Code: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } });
          return null;
        }
        throw err;
      }
    });
  }

  async put(key: string, body: Uint8Array, conditions: PutConditions = {}): Promise<{ etag: string }> {
    const conditional = conditions.ifNoneMatch !== undefined || conditions.ifMatch !== undefined;
    /** An earlier attempt may have committed: its answer never came, or it was a 5xx/throttle after the body went. */
    let mayHaveCommitted = false;
    const etag = await this.request(key, async (attempt) => {
      try {
        const command = new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.fullKey(key),
          Body: body,
          ContentLength: body.byteLength,
          IfNoneMatch: conditions.ifNoneMatch,
          IfMatch: conditions.ifMatch === undefined ? undefined : bareEtag(conditions.ifMatch),
          Metadata: conditions.metadata,
        });
        if (conditions.sha256) withPayloadHash(command, conditions.sha256);
        const r = await fencedAttempt(conditions.fence, (abortSignal) => this.client.send(command, { abortSignal }));
        this.bucketSeen = true;
        return bareEtag(r.ETag);
      } catch (err) {
        const status = httpStatus(err);
        if (conditional && (status === 412 || (status === 404 && conditions.ifMatch !== undefined))) {
          // After an attempt that may have committed, the failed condition may be our own earlier write.
          if (attempt > 1 && mayHaveCommitted) {
            const own = await this.holds(key, body);
            if (own !== null) return own;
          }
          if (conditions.ifNoneMatch !== undefined) throw new AlreadyExistsError('already exists (a conditional create lost)', `${this.display}/${key}`);
          throw new ConflictError(status === 404 ? 'no longer exists (If-Match)' : 'changed since it was read (If-Match)', `${this.display}/${key}`);
        }
        if (isTransient(err)) mayHaveCommitted = true;
        throw err;
      }
    });
    // radosgw may answer without an ETag: the object's own is then asked for.
    if (etag) return { etag };
    const info = await this.head(key);
    return { etag: info?.etag ?? '' };
  }

  /**
   * The object's ETag when the object under `key` has exactly these bytes, else null. Its ETag being their MD5
   * decides at once; an ETag that is not an MD5 of the content (SSE-KMS, some gateways) costs one GET of the same
   * size, compared byte for byte. Equal bytes are ours: manifests and lease records carry their run's random token,
   * blocks are named by their content (whoever wrote one wrote these bytes).
   */
  private async holds(key: string, body: Uint8Array): Promise<string | null> {
    const info = await this.head(key);
    if (info === null || info.size !== body.byteLength) return null;
    const md5 = createHash('md5').update(body).digest('hex');
    if (info.etag === md5) return md5;
    const stored = await this.get(key);
    return stored !== null && stored.equals(body) ? info.etag : null;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      const page = await this.request(null, () =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.fullKey(prefix), ContinuationToken: token, MaxKeys: this.pageSize }),
        ),
      );
      for (const o of page.Contents ?? []) {
        if (!o.Key?.startsWith(this.keyPrefix)) continue;
        yield { key: o.Key.slice(this.keyPrefix.length), size: o.Size ?? 0, etag: bareEtag(o.ETag), lastModifiedMs: o.LastModified?.getTime() ?? 0 };
      }
      const next = page.IsTruncated ? page.NextContinuationToken : undefined;
      // A truncated page without a new token would list the same page forever.
      if (page.IsTruncated && (!next || next === token)) throw mapS3Error(new Error('the listing does not advance (truncated page without a new continuation token)'), this.ctx);
      token = next;
    } while (token);
  }

  async delete(keys: readonly string[], fence?: WriteFence): Promise<void> {
    const unique = [...new Set(keys)];
    for (let i = 0; i < unique.length; i += this.deleteBatch) {
      const batch = unique.slice(i, i + this.deleteBatch);
      const r = await this.request(null, () =>
        fencedAttempt(fence, (abortSignal) =>
          this.client.send(
            new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Quiet: true, Objects: batch.map((k) => ({ Key: this.fullKey(k) })) } }),
            { abortSignal },
          ),
        ),
      );
      // Quiet mode lists only failures; a key that was already gone is not one.
      const failed = (r.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) {
        const first = failed[0];
        const key = (first.Key ?? '').slice(this.keyPrefix.length);
        const err = Object.assign(new Error(first.Message ?? first.Code ?? 'delete failed'), {
          name: first.Code ?? 'DeleteFailed',
          Code: first.Code,
          $metadata: { httpStatusCode: first.Code === 'AccessDenied' ? 403 : 500 },
        });
        throw mapS3Error(err, { ...this.ctx, subject: `${this.display}/${key}` });
      }
    }
  }

  /** One HeadBucket without retries of its own (callers retry). */
  private async bucketExistsOnce(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      this.bucketSeen = true;
      return true;
    } catch (err) {
      if (httpStatus(err) === 404) return false;
      throw err;
    }
  }

  async bucketExists(): Promise<boolean> {
    return this.request(null, () => this.bucketExistsOnce());
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/** Builds the SDK client for resolved settings. */
function makeClient(settings: S3Settings, opts: S3StoreOptions): S3Client {
  // The SDK warns on stderr (a process warning, several lines) that its releases after January 2027 need Node 22;
  // that is for whoever upgrades the dependency (package.json's engines), not for users, and would break the
  // CLI's one-line output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const maxSockets = opts.maxConnections ?? 32;
  return new S3Client({
    region: settings.region,
    endpoint: settings.endpoint,
    forcePathStyle: settings.pathStyle,
    credentials: settings.credentials,
    profile: settings.credentials ? undefined : settings.profile,
    // A region redirect (a bucket of another AWS region) is followed instead of failing.
    followRegionRedirects: true,
    // Our retry loop (retry.ts) is the only one.
    maxAttempts: 1,
    // The default (checksums on every request) sends streamed bodies aws-chunked, which radosgw 16 refuses (411),
    // and adds a CRC pass over every block; SigV4 already signs each payload's SHA-256.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    logger: silentLogger,
    requestHandler: {
      httpAgent: new http.Agent({ keepAlive: true, maxSockets }),
      httpsAgent: new https.Agent({ keepAlive: true, maxSockets }),
      connectionTimeout: opts.connectTimeoutMs ?? 5000,
      socketTimeout: opts.idleTimeoutMs ?? 30_000,
      logger: silentLogger,
    },
  });
}

/** Opens `s3://BUCKET/PREFIX` with settings from the options, the environment and the shared AWS files. */
export function openS3ObjectStore(location: string, opts: S3StoreOptions = {}): S3ObjectStore {
  const loc = parseS3Location(location);
  const settings = resolveS3Settings(opts, opts.env ?? process.env);
  const policy: RetryPolicy = { ...DEFAULT_RETRY, ...(settings.maxAttempts ? { attempts: settings.maxAttempts } : {}), ...opts.retry };
  const pageSize = Math.max(1, Math.min(1000, opts.listPageSize ?? 1000));
  const deleteBatch = Math.max(1, Math.min(1000, opts.deleteBatch ?? 1000));
  return new S3ObjectStore(makeClient(settings, opts), loc, settings, policy, pageSize, deleteBatch, opts.onRetry);
}
