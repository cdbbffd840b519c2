/**
 * Replays every input the fuzzer ever failed on (test/fuzz/regressions/<target>/*.bin): each must now end in
 * success or a one-line VhdsyncError, within the time and allocation limits, like any fuzz input.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { installAllocationCap, judge, withTimeLimit } from './guards.js';
import { INPUT_TIME_LIMIT_MS } from './campaign.js';
import { TARGETS } from './targets/index.js';

const ROOT = path.join(process.cwd(), 'test/fuzz/regressions');

const cases = TARGETS.flatMap((t) => {
  const dir = path.join(ROOT, t.name);
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.bin')).map((f) => [t.name, f] as const) : [];
});

beforeAll(() => installAllocationCap());

test('every regression folder belongs to a target', () => {
  const names = TARGETS.map((t) => t.name);
  expect(readdirSync(ROOT).filter((d) => !names.includes(d) && !d.startsWith('README'))).toEqual([]);
});

test.each(cases)('%s: %s', async (name, file) => {
  const target = TARGETS.find((t) => t.name === name)!;
  let err: unknown;
  try {
    await withTimeLimit(INPUT_TIME_LIMIT_MS, () => target.replay(readFileSync(path.join(ROOT, name, file))));
  } catch (e) {
    err = e;
  }
  expect(judge(err)?.message ?? null).toBeNull();
});
