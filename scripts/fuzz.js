#!/usr/bin/env node
// `npm run fuzz -- --minutes N [--seed S] [--targets a,b] [--out DIR]`: runs the fuzz campaign (test/fuzz/) for N
// minutes over all targets, then prints inputs tried and failures per target. Failing inputs are saved under the out
// folder (default .tmp/fuzz) as regression files to commit under test/fuzz/regressions/<target>/ once fixed.
import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const minutes = Number(opt('minutes', '2'));
if (!(minutes > 0)) {
  console.error('usage: npm run fuzz -- --minutes N [--seed S] [--targets name,name] [--out DIR]');
  process.exit(2);
}
const out = path.resolve(root, opt('out', '.tmp/fuzz'));
const seed = opt('seed', String(Date.now() % 2 ** 31));
rmSync(path.join(out, 'report.json'), { force: true });
const env = {
  ...process.env,
  NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --experimental-vm-modules --no-warnings`.trim(),
  VHDSYNC_FUZZ_SECONDS: String(Math.round(minutes * 60)),
  VHDSYNC_FUZZ_SEED: seed,
  VHDSYNC_FUZZ_OUT: out,
  ...(opt('targets') ? { VHDSYNC_FUZZ_TARGETS: opt('targets') } : {}),
};
const jest = path.join(root, 'node_modules', 'jest', 'bin', 'jest.js');
const r = spawnSync(process.execPath, [jest, '--maxWorkers=1', '--silent', 'test/fuzz/fuzz.test.ts'], { cwd: root, env, stdio: 'inherit' });
const reportFile = path.join(out, 'report.json');
if (!existsSync(reportFile)) {
  console.error(`no report at ${reportFile}: the run did not finish (a hang kills the process; see the line above)`);
  process.exit(r.status || 1);
}
const report = JSON.parse(readFileSync(reportFile, 'utf8'));
console.log(`\nfuzz run: seed ${report.seed}, ${report.seconds} s budget`);
console.log(`${'target'.padEnd(16)} ${'inputs'.padStart(9)} ${'seconds'.padStart(8)} failures`);
for (const t of report.reports) {
  console.log(`${t.target.padEnd(16)} ${String(t.inputs).padStart(9)} ${String(t.seconds).padStart(8)} ${t.skipped ? `skipped: ${t.skipped}` : t.failures.length}`);
  for (const f of t.failures) console.log(`    ${f.signature}\n      seed ${f.seed} path ${f.path}\n      input ${f.file}`);
}
process.exit(r.status ?? 1);
