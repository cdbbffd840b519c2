/**
 * Write-behind (src/io/smb/write-behind.ts) against a model: a fake server completes each WRITE after its own
 * random delay, so requests finish in any order, as a server running them concurrently may; whatever the callers
 * do (reuse their buffers at once, read back, overlap earlier writes, call without awaiting), every read sees
 * exactly the bytes the same calls would give one after another, and a failed WRITE is thrown by the next
 * call that waits for it, never lost.
 */
import fc from 'fast-check';
import { WriteBehind } from '../../../src/io/smb/write-behind.js';
import { IoError } from '../../../src/util/errors.js';

const SIZE = 4096;

type Op = { kind: 'write'; at: number; len: number; fill: number; awaited: boolean } | { kind: 'read'; at: number; len: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), at: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 700 }), fill: fc.integer({ min: 1, max: 255 }), awaited: fc.boolean() }),
  fc.record({ kind: fc.constant('read' as const), at: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 700 }) }),
);

const tick = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('SMB write-behind', () => {
  it('reads always see the sequential result, whatever order the server completes writes in', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 40, maxLength: 40 }), fc.integer({ min: 300, max: 3000 }), async (ops, delays, limit) => {
        const server = Buffer.alloc(SIZE + 700);
        const model = Buffer.alloc(SIZE + 700);
        const behind = new WriteBehind(limit);
        let d = 0;
        const send = (at: number) => async (bytes: Buffer) => {
          await tick(delays[d++ % delays.length]);
          bytes.copy(server, at);
        };
        const unawaited: Promise<void>[] = [];
        for (const op of ops) {
          if (op.kind === 'write') {
            const data = Buffer.alloc(op.len, op.fill);
            data.copy(model, op.at);
            const p = behind.write(op.at, data, send(op.at));
            if (op.awaited) {
              await p;
              // The caller reuses its buffer once the write returned: the bytes handed over must not change.
              data.fill(0xee);
            } else unawaited.push(p);
          } else {
            await behind.before(op.at, op.len);
            expect(server.subarray(op.at, op.at + op.len).equals(model.subarray(op.at, op.at + op.len))).toBe(true);
          }
        }
        await Promise.all(unawaited);
        await behind.settle();
        behind.check();
        expect(server.equals(model)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('a growing truncation runs behind the writes yet neither cuts one nor lets a later request overtake it', async () => {
    // The server sets the file size exactly (cutting what lies past it), as SET_INFO end-of-file does; the caller
    // extends only past every write so far, as SmbFile.truncate does before it takes this path.
    const extArb = fc.record({ kind: fc.constant('extend' as const), by: fc.integer({ min: 1, max: 900 }) });
    const anyOp = fc.oneof(opArb, opArb, extArb);
    await fc.assert(
      fc.asyncProperty(fc.array(anyOp, { minLength: 1, maxLength: 40 }), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 40, maxLength: 40 }), async (ops, delays) => {
        const room = SIZE + 700 + 40 * 900;
        const server = { bytes: Buffer.alloc(room), size: 0 };
        const model = { bytes: Buffer.alloc(room), size: 0 };
        const apply = (f: typeof server, op: { at: number; data?: Buffer; size?: number }) => {
          if (op.data) {
            op.data.copy(f.bytes, op.at);
            f.size = Math.max(f.size, op.at + op.data.length);
          } else {
            if (op.size! < f.size) f.bytes.fill(0, op.size!, f.size);
            f.size = op.size!;
          }
        };
        const visible = (f: typeof server, at: number, len: number) => Buffer.concat([f.bytes.subarray(at, Math.min(at + len, f.size)), Buffer.alloc(Math.max(0, at + len - Math.max(at, f.size)))]);
        const behind = new WriteBehind(2000);
        let d = 0;
        const later = async () => tick(delays[d++ % delays.length]);
        let known = 0;
        for (const op of ops) {
          if (op.kind === 'write') {
            const data = Buffer.alloc(op.len, op.fill);
            apply(model, { at: op.at, data });
            await behind.write(op.at, data, async (bytes) => {
              await later();
              apply(server, { at: op.at, data: bytes });
            });
            known = Math.max(known, op.at + op.len);
          } else if (op.kind === 'extend') {
            const size = known + op.by;
            apply(model, { at: 0, size });
            await behind.extend(known, async () => {
              await later();
              apply(server, { at: 0, size });
            });
            known = size;
          } else {
            await behind.before(op.at, op.len);
            expect(visible(server, op.at, op.len).equals(visible(model, op.at, op.len))).toBe(true);
          }
        }
        await behind.settle();
        behind.check();
        expect(server.size).toBe(model.size);
        expect(server.bytes.equals(model.bytes)).toBe(true);
      }),
      { numRuns: 80 },
    );
  });

  it('never has more than the window in flight (one larger write alone may exceed it)', async () => {
    const behind = new WriteBehind(1000);
    let inFlight = 0;
    let most = 0;
    const send = async (bytes: Buffer) => {
      inFlight += bytes.length;
      most = Math.max(most, inFlight);
      await tick(2);
      inFlight -= bytes.length;
    };
    for (let i = 0; i < 20; i++) await behind.write(i * 300, Buffer.alloc(300, 1), send);
    await behind.write(10_000, Buffer.alloc(5000, 2), send);
    await behind.settle();
    expect(most).toBeGreaterThan(300);
    expect(most).toBeLessThanOrEqual(5000);
    // The 300-byte writes: at most 3 at once within 1000 bytes.
    const small = new WriteBehind(1000);
    most = 0;
    for (let i = 0; i < 20; i++) await small.write(i * 300, Buffer.alloc(300, 1), send);
    await small.settle();
    expect(most).toBeLessThanOrEqual(900);
  });

  it('keeps the first failure and throws it from every later call, so a flush cannot succeed over it', async () => {
    const behind = new WriteBehind(1 << 20);
    const failure = new IoError('connection lost; gave up after 3 reconnects', '//server/share/disk.vhdx');
    await behind.write(0, Buffer.alloc(10, 1), async () => {
      await tick(1);
      throw failure;
    });
    await behind.write(100, Buffer.alloc(10, 1), async () => {
      await tick(1);
    });
    await behind.settle();
    expect(() => behind.check()).toThrow(failure);
    await expect(behind.write(200, Buffer.alloc(10, 1), async () => undefined)).rejects.toBe(failure);
    await expect(behind.before(0, 10)).rejects.toBe(failure);
  });
});
