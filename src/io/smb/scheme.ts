/**
 * SMB locations: `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH` and `\\HOST\SHARE\PATH`. Importing this
 * module registers the scheme. Credentials come from VHDSYNC_SMB_USER / VHDSYNC_SMB_PASSWORD /
 * VHDSYNC_SMB_DOMAIN or a mount.cifs-style file named by VHDSYNC_SMB_CREDENTIALS; never from the URL.
 * Clients are pooled per server and user; `closeAllSmbSessions()` logs them all off.
 */
import { readFileSync } from 'node:fs';
import { UsageError } from '../../util/errors.js';
import { registerScheme, type Location, type LocationScheme } from '../location.js';
import { SmbClient } from './client.js';
import { isSmbLocation } from './location-syntax.js';
import type { NtlmCredentials } from './ntlm-messages.js';
import { SmbStore } from './store.js';

/** The parts of an SMB location. */
export interface SmbLocationParts {
  host: string;
  port: number | null;
  user: string | null;
  domain: string | null;
  share: string;
  /** Share-relative, POSIX style, starting with '/'. */
  path: string;
}

const bad = (text: string, why: string) => new UsageError(`${why} in SMB location '${text.replace(/:[^@/;]*@/, ':***@')}'`);

/** Decodes %-escapes; a stray '%' is a usage error, not a crash (a literal '%' is written %25). */
function decode(part: string, text: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw bad(text, `bad %-escape in '${part}' (write a literal % as %25)`);
  }
}

/** Splits an smb:// URL or a UNC path into its parts (no credentials looked up yet). */
export function parseSmbLocation(text: string): SmbLocationParts {
  if (text.startsWith('\\\\')) {
    const [host, share, ...rest] = text.slice(2).split('\\');
    if (!host || !share) throw bad(text, 'missing host or share');
    return { host, port: null, user: null, domain: null, share, path: '/' + rest.filter(Boolean).join('/') };
  }
  const m = /^smb:\/\/(?:([^@/]*)@)?(\[[^\]]+\]|[^/:]+)(?::(\d+))?(?:\/(.*))?$/i.exec(text);
  if (!m) throw bad(text, 'cannot parse');
  const [, userinfo, host, port, rest = ''] = m;
  let user: string | null = null;
  let domain: string | null = null;
  if (userinfo !== undefined) {
    if (userinfo.includes(':')) throw bad(text, 'passwords are not accepted in URLs (use VHDSYNC_SMB_PASSWORD or --smb-credentials)');
    const u = decode(userinfo, text);
    const semi = u.indexOf(';');
    if (semi >= 0) {
      domain = u.slice(0, semi);
      user = u.slice(semi + 1);
    } else {
      user = u;
    }
    if (!user) throw bad(text, 'empty user name');
  }
  const [share, ...segments] = rest.split('/');
  if (!share) throw bad(text, 'missing share name');
  const portNum = port === undefined ? null : Number(port);
  if (portNum !== null && (portNum < 1 || portNum > 65535)) throw bad(text, 'bad port');
  return {
    host: host.replace(/^\[|\]$/g, ''),
    port: portNum,
    user,
    domain,
    share: decode(share, text),
    path: '/' + segments.filter(Boolean).map((seg) => decode(seg, text)).join('/'),
  };
}

/** Reads a mount.cifs credentials file: `username=`, `password=`, `domain=` lines. */
export function readCredentialsFile(file: string): Partial<NtlmCredentials> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new UsageError('cannot read SMB credentials file', file);
  }
  const out: Partial<NtlmCredentials> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    const eq = line.indexOf('=');
    if (!line || line.startsWith('#') || eq < 0) continue;
    const key = line.slice(0, eq).trim().toLowerCase();
    const value = line.slice(eq + 1);
    if (key === 'username' || key === 'user') out.user = value.trim();
    else if (key === 'password' || key === 'pass') out.password = value;
    else if (key === 'domain' || key === 'workgroup') out.domain = value.trim();
  }
  // mount.cifs also accepts DOMAIN/user and DOMAIN\user in the username line.
  const m = out.user && /^([^/\\]+)[/\\](.+)$/.exec(out.user);
  if (m) {
    out.domain ??= m[1];
    out.user = m[2];
  }
  return out;
}

/** Credentials for a location: URL user/domain first, then the credentials file, then the environment. */
export function resolveCredentials(parts: SmbLocationParts, env: NodeJS.ProcessEnv = process.env): NtlmCredentials {
  const file = env.VHDSYNC_SMB_CREDENTIALS ? readCredentialsFile(env.VHDSYNC_SMB_CREDENTIALS) : {};
  const user = parts.user ?? file.user ?? env.VHDSYNC_SMB_USER;
  const password = file.password ?? env.VHDSYNC_SMB_PASSWORD;
  const domain = parts.domain ?? file.domain ?? env.VHDSYNC_SMB_DOMAIN ?? '';
  if (!user) throw new UsageError('no SMB user: put it in the URL (smb://USER@HOST/...), VHDSYNC_SMB_USER or --smb-credentials FILE');
  if (password === undefined) throw new UsageError('no SMB password: set VHDSYNC_SMB_PASSWORD or use --smb-credentials FILE');
  return { user, password, domain };
}

const truthy = (v: string | undefined) => v !== undefined && /^(1|true|yes|on)$/i.test(v);

/** A duration in seconds from the environment, in ms; undefined when unset (the client's default applies). */
function secondsFromEnv(env: NodeJS.ProcessEnv, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`bad ${name} '${v}': a number of seconds`);
  return n * 1000;
}

const clients = new Map<string, SmbClient>();
const stores = new Map<string, SmbStore>();

/** The pooled store for a location's server, user and share. */
export function storeFor(parts: SmbLocationParts, env: NodeJS.ProcessEnv = process.env): SmbStore {
  const creds = resolveCredentials(parts, env);
  const port = parts.port ?? (env.VHDSYNC_SMB_PORT ? Number(env.VHDSYNC_SMB_PORT) : 445);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`bad SMB port '${env.VHDSYNC_SMB_PORT}'`);
  const key = `${parts.host.toLowerCase()}:${port}|${creds.domain.toLowerCase()}\\${creds.user.toLowerCase()}`;
  let client = clients.get(key);
  if (!client) {
    client = new SmbClient({
      host: parts.host,
      port,
      credentials: creds,
      sign: truthy(env.VHDSYNC_SMB_SIGN),
      encrypt: truthy(env.VHDSYNC_SMB_ENCRYPT),
      timeoutMs: secondsFromEnv(env, 'VHDSYNC_SMB_TIMEOUT') || undefined,
      // How long to wait out a server that went away (restarting) before failing; 0 fails at once.
      reconnectMs: secondsFromEnv(env, 'VHDSYNC_SMB_RECONNECT'),
    });
    clients.set(key, client);
  }
  const storeKey = `${key}|${parts.share.toLowerCase()}`;
  let store = stores.get(storeKey);
  if (!store) {
    const host = parts.host.includes(':') ? `[${parts.host}]` : parts.host;
    const base = `smb://${creds.domain ? creds.domain + ';' : ''}${creds.user}@${host}${port === 445 ? '' : ':' + port}/${parts.share}`;
    store = new SmbStore(client, parts.share, base);
    stores.set(storeKey, store);
  }
  return store;
}

/**
 * Starts the logon to the server of an SMB location in the background (connect, negotiate, two session setups, tree
 * connect: four round trips), so it overlaps the command line's parsing and loading instead of preceding the
 * command's first request. Anything wrong with the location or its credentials is left for the command to report.
 */
export function prewarmSmb(text: string, env: NodeJS.ProcessEnv = process.env): void {
  try {
    const parts = parseSmbLocation(text);
    storeFor(parts, env).client.prewarm(parts.share);
  } catch {
    // The command parses the location again and reports the problem in its own words.
  }
}

/** Logs off and closes every pooled SMB connection. */
export async function closeAllSmbSessions(): Promise<void> {
  const all = [...clients.values()];
  clients.clear();
  stores.clear();
  await Promise.all(all.map((c) => c.shutdown()));
}

/** The `smb://` and `\\host\share` location scheme. */
export const smbScheme: LocationScheme = {
  matches: isSmbLocation,
  parse(text): Location {
    const parts = parseSmbLocation(text);
    return { store: storeFor(parts), path: parts.path };
  },
};

registerScheme(smbScheme);
// Log off politely when the event loop drains (idle connections do not keep the process alive).
process.once('beforeExit', () => void closeAllSmbSessions());
