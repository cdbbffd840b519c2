import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { md4 } from '../../src/io/smb/md4.js';
import { rc4 } from '../../src/io/smb/rc4.js';
import { aesCmac } from '../../src/io/smb/aes-cmac.js';
import { kdf128 } from '../../src/io/smb/kdf.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('MD4 (RFC 1320 test suite)', () => {
  const vectors: Array<[string, string]> = [
    ['', '31d6cfe0d16ae931b73c59d7e0c089c0'],
    ['a', 'bde52cb31de33e46245e05fbdbd6fb24'],
    ['abc', 'a448017aaf21d8525fc10ae87aa6729d'],
    ['message digest', 'd9130a8164549fe818874806e1c7014b'],
    ['abcdefghijklmnopqrstuvwxyz', 'd79e1c308aa5bbcdeea8ed63df412da9'],
    ['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789', '043f8582f241db351ce627e153e7f0e4'],
    ['1234567890'.repeat(8), 'e33b4ddc9c38f2199c3e7b164fcc0536'],
  ];
  it.each(vectors)('md4(%j)', (input, digest) => {
    expect(md4(Buffer.from(input, 'latin1')).toString('hex')).toBe(digest);
  });
  it('gives the NT hash of "Password" from [MS-NLMP] 4.2.2.1.2', () => {
    expect(md4(Buffer.from('Password', 'utf16le')).toString('hex')).toBe('a4f49c406510bdcab6824ee7c30fd852');
  });
});

describe('AES-CMAC (RFC 4493 section 4 examples)', () => {
  const key = hex('2b7e1516 28aed2a6 abf71588 09cf4f3c');
  const msg = hex(`6bc1bee2 2e409f96 e93d7e11 7393172a ae2d8a57 1e03ac9c 9eb76fac 45af8e51
                   30c81c46 a35ce411 e5fbc119 1a0a52ef f69f2445 df4f9b17 ad2b417b e66c3710`);
  it.each([
    [0, 'bb1d6929e95937287fa37d129b756746'],
    [16, '070a16b46b4d4144f79bdd9dd04a287c'],
    [40, 'dfa66747de9ae63030ca32611497c827'],
    [64, '51f0bebf7e3b9d92fc49741779363cfe'],
  ])('example with %i bytes', (len, mac) => {
    expect(aesCmac(key, msg.subarray(0, len)).toString('hex')).toBe(mac);
  });
  it('gives the same MAC however the message is split into parts', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(200), { maxLength: 4 }), (data, cuts) => {
        const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
        const parts: Uint8Array[] = [];
        let prev = 0;
        for (const p of points) {
          parts.push(data.subarray(prev, p));
          prev = p;
        }
        parts.push(data.subarray(prev));
        expect(aesCmac(key, ...parts).equals(aesCmac(key, data))).toBe(true);
      }),
    );
  });
});

describe('RC4', () => {
  it('matches the classic "Key"/"Plaintext" vector', () => {
    expect(rc4(Buffer.from('Key'), Buffer.from('Plaintext')).toString('hex')).toBe('bbf316e8d940af0ad3');
  });
});

describe('SP800-108 KDF', () => {
  it('is HMAC-SHA256 over counter, label, separator, context and length, cut to 128 bits', () => {
    const key = Buffer.alloc(16, 7);
    const expected = createHmac('sha256', key)
      .update(hex('00000001'))
      .update(Buffer.from('SMB2AESCMAC\0', 'latin1'))
      .update(hex('00'))
      .update(Buffer.from('SmbSign\0', 'latin1'))
      .update(hex('00000080'))
      .digest()
      .subarray(0, 16);
    expect(kdf128(key, Buffer.from('SMB2AESCMAC\0', 'latin1'), Buffer.from('SmbSign\0', 'latin1'))).toEqual(expected);
  });
});
