/**
 * The bars of `backup --jobs N` on a terminal: what the written bytes leave on a screen (a small VT interpreter of
 * the codes the renderer uses: CR, LF, cursor up, erase to end of line and of screen), and nothing when disabled.
 */
import { createMultiProgress, renderTasks } from '../../../src/util/multi-progress.js';

/** Applies terminal output to a screen of lines. */
function screenOf(output: string): string[] {
  const lines: string[] = [''];
  let row = 0;
  let col = 0;
  for (let i = 0; i < output.length; i++) {
    const c = output[i];
    if (c === '\r') col = 0;
    else if (c === '\n') {
      row++;
      col = 0;
      if (lines.length <= row) lines.push('');
    } else if (c === '\x1b') {
      const m = /^\x1b\[(\d*)([AKJ])/.exec(output.slice(i));
      if (!m) throw new Error(`unexpected escape at ${i}`);
      i += m[0].length - 1;
      if (m[2] === 'A') row = Math.max(0, row - Number(m[1] || 1));
      else {
        lines[row] = lines[row].slice(0, col);
        if (m[2] === 'J') lines.length = row + 1;
      }
    } else {
      lines[row] = lines[row].slice(0, col).padEnd(col) + c + lines[row].slice(col + 1);
      col++;
    }
  }
  return lines;
}

describe('progress of several disks', () => {
  const MiB = 1 << 20;

  it('shows a summary and one bar per running disk, redrawn in place, finished disks counted', () => {
    let out = '';
    let now = 1000;
    const p = createMultiProgress('backing up', 3, true, { write: (t: string) => (out += t), columns: 100 }, () => now);
    const a = p.task('vm1', 8 * MiB);
    const b = p.task('database', 4 * MiB);
    now += 200;
    a.advance(4 * MiB);
    let screen = screenOf(out);
    expect(screen).toHaveLength(3);
    expect(screen[0]).toBe('backing up: 0 of 3 done, 2 running');
    expect(screen[1]).toMatch(/^vm1      \[#+-+\]  50\.0% 4 MiB \/ 8 MiB/);
    expect(screen[2]).toMatch(/^database \[-+\]   0\.0% 0 B \/ 4 MiB/);
    b.set(4 * MiB);
    b.finish();
    screen = screenOf(out);
    expect(screen).toEqual([expect.stringMatching(/^backing up: 1 of 3 done, 1 running$/), expect.stringMatching(/^vm1 \[/)]);
    const c = p.task('web', MiB);
    now += 200;
    c.advance(MiB / 2);
    expect(screenOf(out)).toEqual(['backing up: 1 of 3 done, 2 running', expect.stringMatching(/^vm1 \[.*50\.0%/), expect.stringMatching(/^web \[.*50\.0%/)]);
    // Throttled: a change within 100 ms is drawn with the next one.
    c.advance(MiB / 4);
    expect(screenOf(out)[2]).toMatch(/50\.0%/);
    p.finish();
    expect(screenOf(out)).toEqual(['backing up: 3 of 3 done, 0 running', '']);
    // Every line fits the terminal.
    for (const l of out.split(/\r|\n/)) expect(l.replace(/\x1b\[\d*[AKJ]/g, '').length).toBeLessThan(100);
  });

  it('takes a terminal that reports 0 columns (a pty without a size) as 80 wide', () => {
    let out = '';
    let now = 0;
    const p = createMultiProgress('backing up', 2, true, { write: (t: string) => (out += t), columns: 0 }, () => (now += 200));
    p.task('vm1', MiB).set(MiB / 2);
    p.finish();
    expect(out).toMatch(/backing up: 0 of 2 done, 1 running/);
    expect(out).toMatch(/vm1 \[#+-+\]  50\.0% 512 KiB \/ 1 MiB/);
  });

  it('shows at most ten bars and counts the rest', () => {
    const tasks = Array.from({ length: 13 }, (_, i) => ({ label: `d${i}`, total: 100, done: i, start: 0, over: i === 0 }));
    const lines = renderTasks('backing up', 13, tasks, 1000, 80);
    expect(lines[0]).toBe('backing up: 1 of 13 done, 12 running');
    expect(lines).toHaveLength(12);
    expect(lines[11]).toBe('... and 2 more');
  });

  it('writes nothing when disabled (-q, --json, no terminal)', () => {
    let out = '';
    const p = createMultiProgress('backing up', 2, false, { write: (t: string) => (out += t) });
    p.task('a', 10).advance(5);
    p.finish();
    expect(out).toBe('');
  });
});
