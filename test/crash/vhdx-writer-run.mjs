// Starts the VHDX crash test's writer (vhdx-writer.mjs) and kills it; shared by test/crash/vhdx-crash.test.ts and
// scripts/vhdx-crash-loop.mjs. Plain JavaScript so the writer and the script can import it without a build.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const WRITER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'vhdx-writer.mjs');

/** The bytes write `i` of `len` bytes puts down: distinct per write and per sector. */
export function pattern(i, len) {
  const b = Buffer.alloc(len);
  for (let k = 0; k < len; k++) b[k] = (i * 131 + k * 7 + (k >> 9)) & 255;
  return b;
}

/** Applies write `w` to the model of the disk's content. */
export function applyWrite(model, w) {
  if (w.zero) model.fill(0, w.off, w.off + w.len);
  else pattern(w.i, w.len).copy(model, w.off);
}

/**
 * Runs the writer on `image` (writes numbered from `first`, chosen by `seed`) and kills it `delayMs` after it is
 * ready, or after its first flushed write when `fromFirstDone`. Resolves with the writes reported flushed, in order,
 * and the one started and not reported flushed (or null).
 */
export function runWriter(dist, image, first, seed, delayMs, fromFirstDone) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, dist, image, String(first), '40', String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let err = '';
    let armed = false;
    const out = { done: [], inFlight: null };
    child.stderr.on('data', (c) => (err += c));
    child.stdout.on('data', (c) => {
      buf += c;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).split(' ');
        buf = buf.slice(nl + 1);
        // Timed from the first flushed write, a kill lands in a session with a live log; from ready, in its first steps.
        if (line[0] === (fromFirstDone ? 'done' : 'ready') && !armed) {
          armed = true;
          setTimeout(() => child.kill('SIGKILL'), delayMs);
        }
        if (line[0] === 'start') out.inFlight = { i: Number(line[1]), off: Number(line[2]), len: Number(line[3]), zero: line[4] === 'zero' };
        if (line[0] === 'done' && out.inFlight) {
          out.done.push(out.inFlight);
          out.inFlight = null;
        }
      }
    });
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`writer failed (${code}): ${err}`));
      else resolve(out);
    });
  });
}

/** 512-byte sectors of `content` that are neither as in `before` nor as in `after`, by offset. */
export function tornSectors(content, before, after) {
  const bad = [];
  for (let s = 0; s < content.length; s += 512) {
    const c = content.subarray(s, s + 512);
    if (!c.equals(before.subarray(s, s + 512)) && !c.equals(after.subarray(s, s + 512))) bad.push(s);
  }
  return bad;
}
