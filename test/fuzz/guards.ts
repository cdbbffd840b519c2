/**
 * The fuzzer's properties, checked around each input: the outcome (success or a one-line VhdsyncError), time (an
 * async time limit per input, and a watchdog thread that kills the process when a synchronous loop never yields),
 * and memory (every Buffer allocation is checked against a per-input cap before it happens).
 */
import { Worker } from 'node:worker_threads';
import { VhdsyncError } from '../../src/util/errors.js';

/** A property broken by an input: what happened, in one line. */
export class Violation extends Error {
  constructor(
    readonly kind: 'crash' | 'message' | 'hang' | 'memory' | 'write',
    message: string,
  ) {
    super(`${kind}: ${message}`);
  }
}

/**
 * Judges how an input ended: null for success or a proper VhdsyncError, else the violation. Only the first stack
 * frame of a crash is kept, which is what crashes are grouped by.
 */
export function judge(err: unknown): Violation | null {
  if (err === undefined) return null;
  if (err instanceof Violation) return err;
  if (err instanceof VhdsyncError) {
    const line = err.describe();
    if (/[\r\n]/.test(line) || line.length === 0 || line.length > 2000) return new Violation('message', `${err.name} with a message that is not one line: ${JSON.stringify(line.slice(0, 300))}`);
    return null;
  }
  const e = err as Error;
  // The first frame of our own code: Node's internals (node:internal/buffer's bounds check) say nothing.
  const frames = (e?.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l));
  const frame = (frames.find((l) => !l.includes('node:')) ?? frames[0] ?? '').trim().replace(/\(.*\/(src|test)\//, '($1/');
  return new Violation('crash', `${e?.name ?? typeof err}: ${String(e?.message ?? err).split('\n')[0].slice(0, 300)} ${frame}`);
}

/** Runs `fn` with a time limit; a promise that never settles (or takes too long) is a hang. */
export async function withTimeLimit<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Violation('hang', `no result after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([fn(), limit]);
  } finally {
    clearTimeout(timer);
  }
}

let allocCap = Infinity;
let allocWorst = 0;
let allocBreach: string | null = null;
let installed = false;

function checked<A extends unknown[]>(orig: (size: number, ...rest: A) => Buffer, what: string) {
  return function (this: unknown, size: number, ...rest: A): Buffer {
    if (typeof size === 'number' && size > allocCap) {
      allocBreach ??= `${what}(${size}) over the cap of ${allocCap} bytes`;
      throw new Violation('memory', allocBreach);
    }
    if (typeof size === 'number' && size > allocWorst) allocWorst = size;
    return orig.call(Buffer, size, ...rest);
  };
}

/** Wraps Buffer.alloc/allocUnsafe/allocUnsafeSlow (once) so allocations can be capped per input. */
export function installAllocationCap(): void {
  if (installed) return;
  installed = true;
  Buffer.alloc = checked(Buffer.alloc, 'Buffer.alloc') as typeof Buffer.alloc;
  Buffer.allocUnsafe = checked(Buffer.allocUnsafe, 'Buffer.allocUnsafe') as typeof Buffer.allocUnsafe;
  Buffer.allocUnsafeSlow = checked(Buffer.allocUnsafeSlow, 'Buffer.allocUnsafeSlow') as typeof Buffer.allocUnsafeSlow;
}

/**
 * Runs `fn` with every Buffer allocation capped at `cap` bytes. The breach is remembered even when the code under
 * test catches the error thrown at it, and reported as a memory violation.
 */
export async function withAllocationCap<T>(cap: number, fn: () => Promise<T>): Promise<{ result: T; worst: number }> {
  allocCap = cap;
  allocWorst = 0;
  allocBreach = null;
  try {
    const result = await fn();
    if (allocBreach) throw new Violation('memory', allocBreach);
    return { result, worst: allocWorst };
  } catch (err) {
    if (allocBreach) throw new Violation('memory', allocBreach);
    throw err;
  } finally {
    allocCap = Infinity;
  }
}

/**
 * A thread that kills the process when the main thread stops making progress for `stallMs` (a synchronous loop
 * the async time limit cannot interrupt), after printing `describe()`'s last value: which input was running.
 */
export class Watchdog {
  private readonly beats = new Int32Array(new SharedArrayBuffer(4));
  private readonly worker: Worker;
  constructor(stallMs: number, statusFile: string) {
    const code = `
      const { workerData } = require('node:worker_threads');
      const fs = require('node:fs');
      const beats = workerData.beats;
      let last = -1, since = Date.now();
      setInterval(() => {
        const now = Atomics.load(beats, 0);
        if (now !== last) { last = now; since = Date.now(); return; }
        if (now % 2 === 1 && Date.now() - since > workerData.stallMs) {
          let status = '';
          try { status = fs.readFileSync(workerData.statusFile, 'utf8'); } catch {}
          fs.writeSync(2, '\\nvhdsync fuzz: HANG, the main thread made no progress for ' + workerData.stallMs + ' ms on input: ' + status + '\\n');
          process.kill(process.pid, 'SIGKILL');
        }
      }, 500);`;
    this.worker = new Worker(code, { eval: true, workerData: { beats: this.beats, stallMs, statusFile } });
    this.worker.unref();
  }
  /** Marks the start (odd count) or end (even count) of an input. */
  beat(): void {
    Atomics.add(this.beats, 0, 1);
  }
  async stop(): Promise<void> {
    await this.worker.terminate();
  }
}
