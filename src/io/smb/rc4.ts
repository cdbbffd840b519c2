/**
 * RC4, only for NTLM: encrypting the random session key and the checksums of NTLMSSP signatures. OpenSSL 3
 * keeps RC4 in the legacy provider, so Node 20 cannot do it by default.
 */

/** An RC4 key stream whose state carries over between calls (NTLMSSP's sealing "handle"). */
export class Rc4 {
  private readonly s = new Uint8Array(256);
  private i = 0;
  private j = 0;

  constructor(key: Uint8Array) {
    const s = this.s;
    for (let i = 0; i < 256; i++) s[i] = i;
    for (let i = 0, j = 0; i < 256; i++) {
      j = (j + s[i] + key[i % key.length]) & 0xff;
      [s[i], s[j]] = [s[j], s[i]];
    }
  }

  /** Encrypts (or decrypts: the same operation) the next bytes of the stream. */
  update(data: Uint8Array): Buffer {
    const s = this.s;
    const out = Buffer.alloc(data.length);
    for (let n = 0; n < data.length; n++) {
      this.i = (this.i + 1) & 0xff;
      this.j = (this.j + s[this.i]) & 0xff;
      [s[this.i], s[this.j]] = [s[this.j], s[this.i]];
      out[n] = data[n] ^ s[(s[this.i] + s[this.j]) & 0xff];
    }
    return out;
  }
}

/** One-shot RC4 of `data` under `key`. */
export function rc4(key: Uint8Array, data: Uint8Array): Buffer {
  return new Rc4(key).update(data);
}
