/**
 * Where an S3 store is and how to sign for it, resolved the way the AWS CLI and SDKs do, from the environment and
 * the shared files (docs/cli.md, "Object stores"). Pure: the environment and the file reader are parameters, so
 * the rules are unit-tested without a service.
 */
import { UsageError } from '../../util/errors.js';
import { parseIni, profileSections, readOptional, sharedFilePaths, type IniSection } from './shared-files.js';

/** What the CLI passes: `--profile`, `--s3-path-style` / `--no-s3-path-style`. */
export interface S3ConfigOptions {
  profile?: string;
  pathStyle?: boolean;
}

/** Static keys. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Everything needed to build a client. */
export interface S3Settings {
  region: string;
  /** The service's URL when it is not AWS (`http://127.0.0.1:8000`), without a trailing slash. */
  endpoint?: string;
  /** Bucket in the path (`ENDPOINT/BUCKET/KEY`) instead of in the host name. */
  pathStyle: boolean;
  /** Attempts per request, the first included (AWS_MAX_ATTEMPTS, the profile's max_attempts). */
  maxAttempts?: number;
  /** Static keys found in the environment or the files; absent: the SDK's provider chain for `profile`. */
  credentials?: S3Credentials;
  /** The profile in use, if any was named or found. */
  profile?: string;
  /** Where the credentials come from, for messages (never the keys themselves). */
  credentialSource: string;
}

const DEFAULT_REGION = 'us-east-1';

/** An environment variable's value, with the empty string taken as unset (as the AWS tools do). */
function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

function checkEndpoint(url: string, origin: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`not a URL: '${url}'`, origin);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new UsageError(`an endpoint is an http:// or https:// URL, not '${url}'`, origin);
  if (parsed.username || parsed.password) throw new UsageError('an endpoint URL carries no user name or password', origin);
  return url.replace(/\/+$/, '');
}

function positiveInt(value: string, origin: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1 || n > 100) throw new UsageError(`expected a number of attempts from 1 to 100, got '${value}'`, origin);
  return n;
}

/** The `s3` settings of a profile: nested under `s3 =`, or in the `[services NAME]` section the profile names. */
function s3Group(config: Map<string, IniSection>, profile: IniSection | undefined): Map<string, string> {
  const merged = new Map<string, string>();
  const services = profile?.values.get('services');
  const fromServices = services ? config.get(`services ${services}`)?.nested.get('s3') : undefined;
  for (const [k, v] of fromServices ?? []) merged.set(k, v);
  for (const [k, v] of profile?.nested.get('s3') ?? []) merged.set(k, v);
  return merged;
}

/** Resolves the settings for an S3 store from options, environment and shared files. */
export function resolveS3Settings(
  opts: S3ConfigOptions,
  env: NodeJS.ProcessEnv = process.env,
  read: (file: string) => string | null = readOptional,
): S3Settings {
  const files = sharedFilePaths(env);
  const configText = read(files.config);
  const credentialsText = read(files.credentials);
  const config = parseIni(configText ?? '');
  const credentials = parseIni(credentialsText ?? '');

  const named = opts.profile !== undefined && opts.profile !== '' ? opts.profile : envValue(env, 'AWS_PROFILE');
  const profileName = named ?? 'default';
  const sections = profileSections(config, credentials, profileName);
  if (named !== undefined && !sections.config && !sections.credentials) {
    const origin = opts.profile ? '--profile' : 'AWS_PROFILE';
    throw new UsageError(`no profile '${named}' in ${files.config} or ${files.credentials}`, origin);
  }
  const setting = (name: string): string | undefined => sections.config?.values.get(name) ?? sections.credentials?.values.get(name);
  const s3 = s3Group(config, sections.config);
  const profileLabel = `profile '${profileName}'`;

  // Endpoint: the S3-specific variable, the general one, then the profile's (unless configured endpoints are off).
  let endpoint: string | undefined;
  const ignoreConfigured = /^true$/i.test(envValue(env, 'AWS_IGNORE_CONFIGURED_ENDPOINT_URLS') ?? setting('ignore_configured_endpoint_urls') ?? '');
  if (!ignoreConfigured) {
    for (const [value, origin] of [
      [envValue(env, 'AWS_ENDPOINT_URL_S3'), 'AWS_ENDPOINT_URL_S3'],
      [envValue(env, 'AWS_ENDPOINT_URL'), 'AWS_ENDPOINT_URL'],
      [s3.get('endpoint_url'), `${profileLabel}: s3 endpoint_url`],
      [setting('endpoint_url'), `${profileLabel}: endpoint_url`],
    ] as const) {
      if (value !== undefined && value !== '') {
        endpoint = checkEndpoint(value, origin);
        break;
      }
    }
  }

  const region = envValue(env, 'AWS_REGION') ?? envValue(env, 'AWS_DEFAULT_REGION') ?? setting('region') ?? DEFAULT_REGION;

  // Path-style: the option, then the profile's addressing_style, then on exactly when an endpoint is given
  // (Ceph, MinIO and most self-hosted services have no wildcard DNS for bucket host names).
  const style = s3.get('addressing_style');
  const pathStyle = opts.pathStyle ?? (style === 'path' ? true : style === 'virtual' ? false : endpoint !== undefined);

  const attemptsText = envValue(env, 'AWS_MAX_ATTEMPTS') ?? setting('max_attempts');
  const maxAttempts = attemptsText === undefined ? undefined : positiveInt(attemptsText, envValue(env, 'AWS_MAX_ATTEMPTS') ? 'AWS_MAX_ATTEMPTS' : `${profileLabel}: max_attempts`);

  // Credentials: an explicit --profile wins over keys in the environment (as with the AWS CLI); otherwise the
  // environment's keys, then the profile's static keys, then whatever the SDK's chain finds for the profile
  // (assumed roles, SSO, credential_process, web identity, instance roles).
  const envKey = envValue(env, 'AWS_ACCESS_KEY_ID');
  const envSecret = envValue(env, 'AWS_SECRET_ACCESS_KEY');
  const base = { region, endpoint, pathStyle, maxAttempts };
  if (!opts.profile && envKey && envSecret) {
    return { ...base, credentials: { accessKeyId: envKey, secretAccessKey: envSecret, sessionToken: envValue(env, 'AWS_SESSION_TOKEN') }, credentialSource: 'AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY', profile: named };
  }
  for (const [section, file] of [
    [sections.credentials, files.credentials],
    [sections.config, files.config],
  ] as const) {
    const key = section?.values.get('aws_access_key_id');
    const secret = section?.values.get('aws_secret_access_key');
    if (key && secret) {
      return { ...base, credentials: { accessKeyId: key, secretAccessKey: secret, sessionToken: section?.values.get('aws_session_token') }, credentialSource: `the keys of ${profileLabel} in ${file}`, profile: profileName };
    }
  }
  const found = sections.config || sections.credentials;
  const credentialSource = found
    ? `the credentials of ${profileLabel} (${files.config}, ${files.credentials})`
    : `AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (--profile, AWS_PROFILE) in ${files.credentials}`;
  return { ...base, profile: found ? profileName : named, credentialSource };
}
