/**
 * Progress of several tasks at once on a terminal (`backup --jobs N`): one summary line, then one bar per task in
 * progress, redrawn in place. Finished tasks leave their bar and count in the summary, so the block stays as high as
 * the number of tasks running, whatever the number of tasks.
 */
import { progressLine, type Progress } from './progress.js';

/** Where the lines go: a terminal's stderr, or a test's recorder. */
export interface ProgressStream {
  write(text: string): unknown;
  columns?: number;
}

/** Several bars. */
export interface MultiProgress {
  /** A bar for task `label` of `total` bytes; its finish() ends the task (failed or not). */
  task(label: string, total: number): Progress;
  /** Removes every bar, leaving the summary line. */
  finish(): void;
}

interface Task {
  label: string;
  total: number;
  done: number;
  start: number;
  over: boolean;
}

const NOOP: MultiProgress = { task: () => ({ advance() {}, set() {}, finish() {} }), finish() {} };

/** The lines to show: the summary, then the bars of unfinished tasks (at most `maxBars`, the rest counted). */
export function renderTasks(title: string, count: number, tasks: readonly Task[], now: number, columns: number, maxBars = 10): string[] {
  const over = tasks.filter((t) => t.over).length;
  const running = tasks.filter((t) => !t.over);
  const lines = [`${title}: ${over} of ${count} done, ${running.length} running`];
  const width = Math.max(...running.map((t) => t.label.length), 0);
  for (const t of running.slice(0, maxBars)) lines.push(progressLine(t.label.padEnd(width), t.done, t.total, (now - t.start) / 1000, columns));
  if (running.length > maxBars) lines.push(`... and ${running.length - maxBars} more`);
  return lines.map((l) => l.slice(0, Math.max(20, columns - 1)));
}

/** Bars for `count` tasks on `stream`; a no-op when not enabled (no terminal, -q, --json). */
export function createMultiProgress(title: string, count: number, enabled: boolean, stream: ProgressStream = process.stderr, clock: () => number = Date.now): MultiProgress {
  if (!enabled) return NOOP;
  const tasks: Task[] = [];
  let shown = 0;
  let lastDraw = 0;
  const draw = (force: boolean) => {
    const now = clock();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    // A terminal without a size (a pty made by `script`) reports 0 columns.
    const lines = renderTasks(title, count, tasks, now, stream.columns || 80);
    // Back to the block's first line, each line rewritten and cleared to its end, then whatever is left below cleared.
    const up = shown > 1 ? `\x1b[${shown - 1}A` : '';
    stream.write(`${up}\r${lines.join('\x1b[K\n')}\x1b[K\x1b[J`);
    shown = lines.length;
  };
  return {
    task(label, total) {
      const t: Task = { label, total, done: 0, start: clock(), over: false };
      tasks.push(t);
      draw(true);
      return {
        advance(n) {
          t.done += n;
          draw(false);
        },
        set(v) {
          t.done = v;
          draw(false);
        },
        finish() {
          if (t.over) return;
          t.over = true;
          draw(true);
        },
      };
    },
    finish() {
      for (const t of tasks) t.over = true;
      draw(true);
      stream.write('\n');
    },
  };
}
