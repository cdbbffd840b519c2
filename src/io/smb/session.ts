/**
 * Bringing a connection up: NEGOTIATE (dialect, 3.1.1 contexts, preauth integrity), SESSION_SETUP with
 * SPNEGO + NTLMv2, and the session keys ([MS-SMB2] 3.2.5.3): signing, encryption, decryption.
 */
import { createHash, randomBytes } from 'node:crypto';
import { IoError, UnsupportedError } from '../../util/errors.js';
import type { SmbConnection } from './connection.js';
import { Command } from './header.js';
import { kdf128 } from './kdf.js';
import {
  ALL_DIALECTS,
  Capability,
  Cipher,
  Dialect,
  parseNegotiateResponse,
  SecurityMode,
  serializeNegotiateRequest,
  SigningAlgorithm,
} from './negotiate.js';
import { authenticateMessage, negotiateMessage, NTLM_FLAGS, parseChallenge, type NtlmCredentials } from './ntlm-messages.js';
import { NtlmSigner } from './ntlm-signing.js';
import { parseSessionSetupResponse, serializeSessionSetupRequest, SessionFlags } from './session-setup.js';
import { MECH_TYPE_LIST, negTokenInit, negTokenResp, NEG_STATE, parseNegTokenResp } from './spnego.js';
import { Status, statusError } from './status.js';
import { verifyMessage } from './signing.js';

/** What the caller wants from the session beyond what the server demands. */
export interface SecurityOptions {
  /** Sign every message even when the server does not require it. */
  sign?: boolean;
  /** Encrypt every message (SMB 3.x only). */
  encrypt?: boolean;
  /** Dialects to offer; all five by default. */
  dialects?: number[];
}

const label = (s: string) => Buffer.from(s + '\0', 'latin1');
const sha512 = (...parts: Buffer[]) => {
  const h = createHash('sha512');
  for (const p of parts) h.update(p);
  return h.digest();
};

/** Negotiates a dialect; returns the preauth integrity hash so far (3.1.1) or null. */
export async function negotiate(conn: SmbConnection, opts: SecurityOptions): Promise<Buffer | null> {
  const dialects = opts.dialects ?? ALL_DIALECTS;
  const body = serializeNegotiateRequest({
    dialects,
    securityMode: SecurityMode.SIGNING_ENABLED | (opts.sign ? SecurityMode.SIGNING_REQUIRED : 0),
    capabilities: Capability.LARGE_MTU | Capability.ENCRYPTION,
    clientGuid: randomBytes(16),
    salt: randomBytes(32),
    ciphers: [Cipher.AES128_GCM, Cipher.AES128_CCM],
    signingAlgorithms: [SigningAlgorithm.AES_GMAC, SigningAlgorithm.AES_CMAC],
  });
  const reply = await conn.request(Command.NEGOTIATE, [body], { keepSent: true });
  if (reply.header.status !== Status.SUCCESS) throw statusError(reply.header.status, `${conn.host}:${conn.port}`);
  const res = parseNegotiateResponse(reply.msg);
  if (!dialects.includes(res.dialect)) {
    throw new UnsupportedError(`SMB server chose dialect 0x${res.dialect.toString(16)}, which was not offered`, conn.host);
  }
  conn.dialect = res.dialect;
  conn.serverSecurityMode = res.securityMode;
  conn.serverCapabilities = res.capabilities;
  // Requests stay within what the server allows and within one 16 MiB frame; 8 MiB is Samba's default.
  const cap = res.dialect === Dialect.SMB202 ? 65536 : 8 << 20;
  conn.maxReadSize = Math.min(res.maxReadSize, cap);
  conn.maxWriteSize = Math.min(res.maxWriteSize, cap);
  conn.maxTransactSize = Math.min(res.maxTransactSize, cap);
  if (res.dialect === Dialect.SMB311) {
    conn.security.cipher = res.cipher;
    conn.security.signingAlgorithm = res.signingAlgorithm ?? SigningAlgorithm.AES_CMAC;
    return sha512(sha512(Buffer.alloc(64), reply.sent!), reply.msg);
  }
  conn.security.signingAlgorithm = conn.isSmb3 ? SigningAlgorithm.AES_CMAC : SigningAlgorithm.HMAC_SHA256;
  conn.security.cipher = conn.isSmb3 && res.capabilities & Capability.ENCRYPTION ? Cipher.AES128_CCM : 0;
  return null;
}

/** Authenticates with NTLMv2 inside SPNEGO and installs the session's keys on the connection. */
export async function authenticate(conn: SmbConnection, creds: NtlmCredentials, preauth: Buffer | null, opts: SecurityOptions): Promise<void> {
  // The port is named when it is not the default, so two servers on one host are told apart.
  const server = conn.port === 445 ? conn.host : `${conn.host}:${conn.port}`;
  const subject = `${creds.domain ? creds.domain + '\\' : ''}${creds.user}@${server}`;
  const securityMode = SecurityMode.SIGNING_ENABLED | (opts.sign ? SecurityMode.SIGNING_REQUIRED : 0);
  const step = async (token: Buffer) => {
    const r = await conn.request(Command.SESSION_SETUP, [serializeSessionSetupRequest(securityMode, token)], { keepSent: true });
    if (preauth) preauth = sha512(preauth, r.sent!);
    return r;
  };

  const negotiateMsg = negotiateMessage();
  const first = await step(negTokenInit(negotiateMsg));
  if (first.header.status !== Status.MORE_PROCESSING_REQUIRED) throw statusError(first.header.status, subject);
  if (preauth) preauth = sha512(preauth, first.msg);
  conn.security.sessionId = first.header.sessionId;
  const serverToken = parseNegTokenResp(parseSessionSetupResponse(first.msg).token);
  if (serverToken.negState === NEG_STATE.REJECT || !serverToken.responseToken) {
    throw new IoError('logon failure (server rejected NTLM authentication)', subject);
  }
  const challenge = parseChallenge(serverToken.responseToken);
  const auth = authenticateMessage(creds, challenge, {}, negotiateMsg);
  const { sessionKey } = auth;
  // With a MIC in the NTLM message, SPNEGO protects the mechanism list too ([MS-SPNG] 3.1.5.1).
  const keyExchange = (auth.flags & NTLM_FLAGS.KEY_EXCH) !== 0;
  const mechListMic = auth.mic ? new NtlmSigner(sessionKey, 'client-to-server', keyExchange).sign(MECH_TYPE_LIST) : undefined;

  const last = await step(negTokenResp(auth.message, mechListMic));
  if (last.header.status !== Status.SUCCESS) throw statusError(last.header.status, subject);
  const { sessionFlags, token } = parseSessionSetupResponse(last.msg);
  if (token.length > 0) {
    const final = parseNegTokenResp(token);
    if (final.negState === NEG_STATE.REJECT) throw new IoError('logon failure (server rejected NTLM authentication)', subject);
    // The server's mechListMIC proves it derived the same keys from our exchange.
    if (auth.mic && final.mechListMic) {
      const expected = new NtlmSigner(sessionKey, 'server-to-client', keyExchange).sign(MECH_TYPE_LIST);
      if (!expected.equals(final.mechListMic)) throw new IoError('server mechListMIC does not match (tampered exchange?)', subject);
    }
  }
  if (sessionFlags & (SessionFlags.IS_GUEST | SessionFlags.IS_NULL)) {
    // A guest session has no usable keys: refuse rather than silently run unauthenticated.
    throw new IoError('logon failure (server mapped the user to guest)', subject);
  }
  installKeys(conn, sessionKey, preauth, sessionFlags, opts);

  // 3.x servers sign the final SESSION_SETUP reply with the new signing key; a bad one means a wrong key.
  const sec = conn.security;
  if (last.header.flags & 0x8 && sec.signingKey && !verifyMessage(sec.signingAlgorithm, sec.signingKey, last.msg, last.header.messageId)) {
    throw new IoError('session setup reply has a bad signature', subject);
  }
}

function installKeys(conn: SmbConnection, sessionKey: Buffer, preauth: Buffer | null, sessionFlags: number, opts: SecurityOptions): void {
  const sec = conn.security;
  const key = sessionKey.subarray(0, 16);
  if (conn.dialect === Dialect.SMB311) {
    sec.signingKey = kdf128(key, label('SMBSigningKey'), preauth!);
    sec.encryptionKey = kdf128(key, label('SMBC2SCipherKey'), preauth!);
    sec.decryptionKey = kdf128(key, label('SMBS2CCipherKey'), preauth!);
  } else if (conn.isSmb3) {
    sec.signingKey = kdf128(key, label('SMB2AESCMAC'), label('SmbSign'));
    sec.encryptionKey = kdf128(key, label('SMB2AESCCM'), label('ServerIn '));
    sec.decryptionKey = kdf128(key, label('SMB2AESCCM'), label('ServerOut'));
  } else {
    sec.signingKey = Buffer.from(key);
  }
  if (!sec.cipher) {
    sec.encryptionKey = null;
    sec.decryptionKey = null;
  }
  sec.signAll = (conn.serverSecurityMode & SecurityMode.SIGNING_REQUIRED) !== 0 || !!opts.sign;
  const serverWantsEncryption = (sessionFlags & SessionFlags.ENCRYPT_DATA) !== 0;
  if ((serverWantsEncryption || opts.encrypt) && !sec.encryptionKey) {
    throw new UnsupportedError('encryption needs SMB 3.x with a cipher both sides support', conn.host);
  }
  sec.encryptAll = serverWantsEncryption || !!opts.encrypt;
}
