import { ntowfv2, ntlmv2Answer } from '../../src/io/smb/ntlmv2.js';
import { authenticateMessage, negotiateMessage, parseChallenge, NTLM_FLAGS } from '../../src/io/smb/ntlm-messages.js';
import { negTokenInit, negTokenResp, parseNegTokenResp } from '../../src/io/smb/spnego.js';
import { readTlvs, tlv } from '../../src/io/smb/der.js';
import { createHmac } from 'node:crypto';
import { Rc4, rc4 } from '../../src/io/smb/rc4.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const u16 = (s: string) => Buffer.from(s, 'utf16le');
const av = (id: number, v: Buffer) => Buffer.concat([Buffer.from([id, 0, v.length, 0]), v]);

// [MS-NLMP] 4.2.4: User "User", domain "Domain", password "Password", server "Server", time 0,
// client challenge aa*8, server challenge 0123456789abcdef, random session key 55*16.
const serverChallenge = hex('0123456789abcdef');
const clientChallenge = Buffer.alloc(8, 0xaa);
const targetInfo = Buffer.concat([av(2, u16('Domain')), av(1, u16('Server')), Buffer.alloc(4)]);

describe('NTLMv2 against [MS-NLMP] 4.2.4 test vectors', () => {
  const key = ntowfv2('Password', 'User', 'Domain');
  it('NTOWFv2', () => expect(key.toString('hex')).toBe('0c868a403bfd7a93a3001ef22ef02e3f'));
  const answer = ntlmv2Answer(key, serverChallenge, clientChallenge, Buffer.alloc(8), targetInfo);
  it('LMv2 response', () => expect(answer.lmResponse.toString('hex')).toBe('86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa'));
  it('NTProofStr', () => expect(answer.ntProofStr.toString('hex')).toBe('68cd0ab851e51c96aabc927bebef6a1c'));
  it('session base key', () => expect(answer.sessionBaseKey.toString('hex')).toBe('8de40ccadbc14a82f15cb0ad0de95ca3'));
  it('encrypted random session key', () =>
    expect(rc4(answer.sessionBaseKey, Buffer.alloc(16, 0x55)).toString('hex')).toBe('c5dad2544fc9799094ce1ce90bc9d03e'));

  it('AUTHENTICATE_MESSAGE carries those responses and key at the offsets its fields give', () => {
    const challengeMsg = Buffer.alloc(56 + targetInfo.length);
    challengeMsg.write('NTLMSSP\0', 0, 'latin1');
    challengeMsg.writeUInt32LE(2, 8);
    challengeMsg.writeUInt32LE(0xe28a8233, 20);
    serverChallenge.copy(challengeMsg, 24);
    challengeMsg.writeUInt16LE(targetInfo.length, 40);
    challengeMsg.writeUInt16LE(targetInfo.length, 42);
    challengeMsg.writeUInt32LE(56, 44);
    targetInfo.copy(challengeMsg, 56);
    const ch = parseChallenge(challengeMsg);
    expect(ch.timestamp).toBeNull();
    const { message, sessionKey } = authenticateMessage({ user: 'User', password: 'Password', domain: 'Domain' }, ch, {
      clientChallenge,
      randomSessionKey: Buffer.alloc(16, 0x55),
      time: Buffer.alloc(8),
    });
    expect(sessionKey).toEqual(Buffer.alloc(16, 0x55));
    const fieldAt = (at: number) => message.subarray(message.readUInt32LE(at + 4), message.readUInt32LE(at + 4) + message.readUInt16LE(at));
    expect(fieldAt(12).toString('hex')).toBe('86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa');
    expect(fieldAt(20).subarray(0, 16).toString('hex')).toBe('68cd0ab851e51c96aabc927bebef6a1c');
    expect(fieldAt(28)).toEqual(u16('Domain'));
    expect(fieldAt(36)).toEqual(u16('User'));
    expect(fieldAt(52).toString('hex')).toBe('c5dad2544fc9799094ce1ce90bc9d03e');
    expect(message.readUInt32LE(60) & NTLM_FLAGS.KEY_EXCH).toBeTruthy();
  });

  it('rejects a challenge whose target info points outside the message', () => {
    const bad = Buffer.alloc(56);
    bad.write('NTLMSSP\0', 0, 'latin1');
    bad.writeUInt32LE(2, 8);
    bad.writeUInt32LE(NTLM_FLAGS.TARGET_INFO, 20);
    bad.writeUInt16LE(100, 40);
    bad.writeUInt32LE(56, 44);
    expect(() => parseChallenge(bad)).toThrow(/outside the message/);
  });
});

describe('SPNEGO tokens', () => {
  it('wraps NTLMSSP NEGOTIATE in a GSS InitialContextToken with the SPNEGO and NTLMSSP OIDs', () => {
    const t = negTokenInit(negotiateMessage());
    const [app] = readTlvs(t);
    expect(app.tag).toBe(0x60);
    const [oid, init] = readTlvs(app.content);
    expect(oid.content.toString('hex')).toBe('2b0601050502');
    expect(t.includes(hex('2b0601040182370202 0a'))).toBe(true);
    expect(init.tag).toBe(0xa0);
    expect(t.includes(Buffer.from('NTLMSSP\0', 'latin1'))).toBe(true);
  });
  it('reads negState and the response token back from a NegTokenResp, long lengths included', () => {
    const token = Buffer.alloc(300, 7);
    const server = tlv(0xa1, tlv(0x30, tlv(0xa0, tlv(0x0a, Buffer.from([1]))), tlv(0xa2, tlv(0x04, token))));
    expect(parseNegTokenResp(server)).toEqual({ negState: 1, responseToken: token, mechListMic: null });
    expect(parseNegTokenResp(negTokenResp(token)).responseToken).toEqual(token);
  });
  it('rejects a truncated token', () => {
    expect(() => parseNegTokenResp(Buffer.from([0xa1, 0x30, 0x30]))).toThrow(/malformed SPNEGO/);
  });
});

describe('NTLM MIC', () => {
  const timestamped = Buffer.concat([av(2, u16('Domain')), av(7, Buffer.alloc(8, 1)), Buffer.alloc(4)]);
  const challengeMsg = Buffer.alloc(56 + timestamped.length);
  challengeMsg.write('NTLMSSP\0', 0, 'latin1');
  challengeMsg.writeUInt32LE(2, 8);
  challengeMsg.writeUInt32LE(0xe28a8233, 20);
  serverChallenge.copy(challengeMsg, 24);
  challengeMsg.writeUInt16LE(timestamped.length, 40);
  challengeMsg.writeUInt16LE(timestamped.length, 42);
  challengeMsg.writeUInt32LE(56, 44);
  timestamped.copy(challengeMsg, 56);
  const creds = { user: 'User', password: 'Password', domain: 'Domain' };

  it('is HMAC-MD5 under the session key over all three messages, with MsvAvFlags announcing it', () => {
    const ch = parseChallenge(challengeMsg);
    const neg = negotiateMessage();
    const auth = authenticateMessage(creds, ch, { clientChallenge, randomSessionKey: Buffer.alloc(16, 0x55) }, neg);
    expect(auth.mic).toBe(true);
    const mic = Buffer.from(auth.message.subarray(72, 88));
    const zeroed = Buffer.from(auth.message);
    zeroed.fill(0, 72, 88);
    expect(createHmac('md5', Buffer.alloc(16, 0x55)).update(neg).update(challengeMsg).update(zeroed).digest()).toEqual(mic);
    const nt = auth.message.subarray(auth.message.readUInt32LE(24), auth.message.readUInt32LE(24) + auth.message.readUInt16LE(20));
    expect(nt.includes(Buffer.from([6, 0, 4, 0, 2, 0, 0, 0]))).toBe(true);
    // With a server timestamp the LM response is zeros ([MS-NLMP] 3.1.5.1.2).
    expect(auth.message.subarray(auth.message.readUInt32LE(16), auth.message.readUInt32LE(16) + 24)).toEqual(Buffer.alloc(24));
  });
  it('is left out without a server timestamp or without the NEGOTIATE message', () => {
    expect(authenticateMessage(creds, parseChallenge(challengeMsg)).mic).toBe(false);
  });
});

describe('RC4 as a stream', () => {
  it('continues its key stream across calls', () => {
    const key = Buffer.from('stream key');
    const data = Buffer.alloc(100, 3);
    const s = new Rc4(key);
    expect(Buffer.concat([s.update(data.subarray(0, 37)), s.update(data.subarray(37))])).toEqual(rc4(key, data));
  });
});
