import { formatSize } from './units.js';

/** A one-line progress bar on stderr, drawn only when stderr is a TTY and not disabled. */
export interface Progress {
  /** Adds `n` units of work done. */
  advance(n: number): void;
  /** Sets the work done so far. */
  set(done: number): void;
  /** Removes the bar. */
  finish(): void;
}

const NOOP: Progress = { advance() {}, set() {}, finish() {} };

/** Creates a progress bar for `total` bytes; a no-op when output is not a terminal. */
export function createProgress(label: string, total: number, enabled = Boolean(process.stderr.isTTY)): Progress {
  if (!enabled || total <= 0) return NOOP;
  const stream = process.stderr;
  const start = Date.now();
  let done = 0;
  let lastDraw = 0;
  const draw = (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    stream.write(`\r${progressLine(label, done, total, (now - start) / 1000, stream.columns ?? 80)}${stream.isTTY ? '\x1b[K' : ''}`);
  };
  return {
    advance(n) {
      done += n;
      draw(false);
    },
    set(v) {
      done = v;
      draw(false);
    },
    finish() {
      draw(true);
      stream.write('\n');
    },
  };
}

/** One bar's text: label, bar, percentage, amounts, rate and ETA (or the time taken once done), fitted to `columns`. */
export function progressLine(label: string, done: number, total: number, secs: number, columns: number): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const amounts = `${formatSize(done)} / ${formatSize(total)}`;
  const width = Math.max(10, Math.min(40, columns - label.length - amounts.length - 42));
  const filled = Math.round(frac * width);
  const perSec = secs > 0 ? done / secs : 0;
  const eta = perSec > 0 && done < total ? `ETA ${clock((total - done) / perSec)}` : done >= total ? `in ${clock(secs)}` : 'ETA --:--';
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
  return `${label} [${bar}] ${(frac * 100).toFixed(1).padStart(5)}% ${amounts} ${(perSec / 1024 ** 2).toFixed(0).padStart(5)} MiB/s ${eta}`;
}

/** vhd-tool's `--machine` progress for programs that wrap the tool: the whole percentage done, one per line, when it changes. */
export function createMachineProgress(total: number, stream: NodeJS.WritableStream = process.stdout): Progress {
  let done = 0;
  let shown = -1;
  const show = () => {
    const pct = total > 0 ? Math.min(100, Math.floor((done * 100) / total)) : 100;
    if (pct !== shown) {
      shown = pct;
      stream.write(`${pct}\n`);
    }
  };
  show();
  return {
    advance(n) {
      done += n;
      show();
    },
    set(v) {
      done = v;
      show();
    },
    finish() {
      done = total;
      show();
    },
  };
}

/** Seconds as m:ss (h:mm:ss past an hour). */
function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const two = (n: number) => String(n).padStart(2, '0');
  return s >= 3600 ? `${Math.floor(s / 3600)}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}` : `${Math.floor(s / 60)}:${two(s % 60)}`;
}
