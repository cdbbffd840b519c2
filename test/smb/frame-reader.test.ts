import fc from 'fast-check';
import { FrameReader, PLACE_PREFIX } from '../../src/io/smb/frame-reader.js';

const framed = (f: Buffer) => Buffer.concat([Buffer.from([0, f.length >> 16, (f.length >> 8) & 0xff, f.length & 0xff]), f]);

describe('FrameReader', () => {
  it('delivers every frame intact and in order, however the stream is cut, placed or not, from reused buffers too', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 0, maxLength: 400 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        (frames, cuts, transient) => {
          const originals = frames.map((f) => Buffer.from(f));
          const stream = Buffer.concat(originals.map(framed));
          const got: Buffer[] = [];
          const placedFlags: boolean[] = [];
          // Keep what the reader hands over as-is: a view into a reused buffer would show up as corruption.
          const frameViews: Array<[Buffer, Buffer | undefined]> = [];
          const reader = new FrameReader((frame, placed) => {
            frameViews.push([frame, placed]);
            placedFlags.push(!!placed);
          });
          // Place frames whose first byte is odd: the tail must then arrive in our buffer.
          reader.placer = (prefix, len) => (prefix[0] % 2 === 1 ? Buffer.alloc(len - PLACE_PREFIX) : null);
          const scratch = Buffer.alloc(256);
          let pos = 0;
          for (let i = 0; pos < stream.length; i++) {
            const n = Math.min(cuts[i % cuts.length], stream.length - pos);
            if (transient) {
              stream.copy(scratch, 0, pos, pos + n);
              reader.push(scratch.subarray(0, n), true);
              scratch.fill(0xee);
            } else {
              reader.push(stream.subarray(pos, pos + n));
            }
            pos += n;
          }
          for (const [frame, placed] of frameViews) got.push(placed ? Buffer.concat([frame, placed]) : Buffer.from(frame));
          expect(got).toEqual(originals);
          originals.forEach((f, i) => {
            if (placedFlags[i]) expect(f.length > PLACE_PREFIX && f[0] % 2 === 1).toBe(true);
          });
        },
      ),
    );
  });

  it('refuses a stream that is not direct-TCP SMB, and stays failed', () => {
    const reader = new FrameReader(() => undefined);
    expect(() => reader.push(Buffer.from('HTTP/1.1 400'))).toThrow(/not direct TCP SMB/);
    expect(() => reader.push(framed(Buffer.alloc(10)))).not.toThrow();
  });
});
