/**
 * Who may use `serve`: HTTP Basic against a credentials file of `user:HASH` lines, or a `session_id` issued by our
 * own `POST /session`; failed attempts are limited per client address (decision 0011).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { RequestError, UsageError } from '../util/errors.js';
import { DECOY, parseHash, verifyPassword, type PasswordHash } from './password.js';

/** Reads a credentials file: `user:HASH` per line, `#` comments and blank lines ignored. */
export async function loadCredentials(file: string): Promise<Map<string, PasswordHash>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new UsageError('cannot read the credentials file', file);
  }
  const users = new Map<string, PasswordHash>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const where = `${file} line ${i + 1}`;
    if (colon <= 0) throw new UsageError('expected user:HASH (HASH from vhdsync serve --hash-password)', where);
    const user = line.slice(0, colon);
    if (users.has(user)) throw new UsageError(`user '${user}' appears twice`, where);
    users.set(user, parseHash(line.slice(colon + 1), where));
  });
  if (users.size === 0) throw new UsageError('no user:HASH line', file);
  return users;
}

/** User and password of an `Authorization: Basic` header, or null when the header is absent. */
export function parseBasic(header: string | undefined): { user: string; password: string } | null {
  if (header === undefined) return null;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) throw new RequestError(401, 'only HTTP Basic authentication is accepted');
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) throw new RequestError(401, 'malformed Basic credentials');
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** Settings of the failed-attempt limit. */
export interface RateLimit {
  /** Failures allowed per address within `windowMs` before it is refused for `blockMs`. */
  failures: number;
  windowMs: number;
  blockMs: number;
}

export const DEFAULT_RATE_LIMIT: RateLimit = { failures: 5, windowMs: 60_000, blockMs: 60_000 };
/** Sessions expire after this long unused. */
const SESSION_IDLE_MS = 12 * 3600_000;
const MAX_SESSIONS = 10_000;
const MAX_ADDRESSES = 10_000;

/** Authentication state of one server. */
export class Authenticator {
  /** Sessions by the SHA-256 of their token: a lookup that reveals nothing about tokens through its timing. */
  private readonly sessions = new Map<string, { user: string; lastUsed: number }>();
  private readonly failures = new Map<string, { times: number[]; blockedUntil: number }>();

  constructor(
    /** null: no credentials file, every request is anonymous. */
    private readonly users: Map<string, PasswordHash> | null,
    private readonly limit: RateLimit = DEFAULT_RATE_LIMIT,
    private readonly now: () => number = Date.now,
  ) {}

  /** True when requests must authenticate. */
  get required(): boolean {
    return this.users !== null;
  }

  /**
   * The user a request acts as: from `session_id` when given (only our own tokens count), else from Basic.
   * Throws RequestError 401 (with the realm XAPI uses for this endpoint) or 429 while the address is limited.
   */
  async authenticate(address: string, authorization: string | undefined, sessionId: string | undefined, realm: string): Promise<string> {
    if (!this.users) return 'anonymous';
    this.checkLimit(address);
    const challenge = { 'WWW-Authenticate': `Basic realm="${realm}"` };
    if (sessionId !== undefined) {
      const s = this.sessions.get(tokenKey(sessionId));
      if (s && this.now() - s.lastUsed < SESSION_IDLE_MS) {
        s.lastUsed = this.now();
        return s.user;
      }
      this.fail(address);
      throw new RequestError(401, 'unknown or expired session_id', undefined, challenge);
    }
    let basic: { user: string; password: string } | null;
    try {
      basic = parseBasic(authorization);
    } catch (err) {
      this.fail(address);
      throw new RequestError(401, (err as Error).message, undefined, challenge);
    }
    if (!basic) throw new RequestError(401, 'authentication required', undefined, challenge);
    const hash = this.users.get(basic.user);
    // Unknown users cost the same scrypt as known ones, so timing does not tell which names exist.
    const ok = await verifyPassword(basic.password, hash ?? DECOY);
    if (!ok || !hash) {
      this.fail(address);
      throw new RequestError(401, 'wrong user or password', undefined, challenge);
    }
    this.failures.delete(address);
    return basic.user;
  }

  private checkLimit(address: string): void {
    const f = this.failures.get(address);
    if (f && f.blockedUntil > this.now()) {
      const secs = Math.ceil((f.blockedUntil - this.now()) / 1000);
      throw new RequestError(429, `too many failed logins from ${address}; retry in ${secs} s`, undefined, { 'Retry-After': String(secs) });
    }
  }

  private fail(address: string): void {
    const now = this.now();
    if (this.failures.size >= MAX_ADDRESSES && !this.failures.has(address)) {
      for (const [k, v] of this.failures) if (v.blockedUntil <= now && v.times.every((t) => now - t > this.limit.windowMs)) this.failures.delete(k);
    }
    const f = this.failures.get(address) ?? { times: [], blockedUntil: 0 };
    f.times = [...f.times.filter((t) => now - t < this.limit.windowMs), now];
    if (f.times.length >= this.limit.failures) {
      f.blockedUntil = now + this.limit.blockMs;
      f.times = [];
    }
    this.failures.set(address, f);
  }

  /** A new session token for `user` (after Basic succeeded). */
  openSession(user: string): string {
    const now = this.now();
    if (this.sessions.size >= MAX_SESSIONS) {
      for (const [k, s] of this.sessions) if (now - s.lastUsed >= SESSION_IDLE_MS) this.sessions.delete(k);
      if (this.sessions.size >= MAX_SESSIONS) throw new RequestError(503, 'too many open sessions');
    }
    const token = 'vhdsync-session:' + randomBytes(32).toString('base64url');
    this.sessions.set(tokenKey(token), { user, lastUsed: now });
    return token;
  }

  /** Ends a session; true when it existed. */
  closeSession(token: string): boolean {
    return this.sessions.delete(tokenKey(token));
  }
}

function tokenKey(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
