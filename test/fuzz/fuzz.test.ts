/**
 * The fuzzing campaign. In CI it spends a fixed budget (VHDSYNC_FUZZ_SECONDS, default 120 s over all targets) from
 * a seed that changes per run (VHDSYNC_FUZZ_SEED to repeat one); `npm run fuzz -- --minutes N` runs it longer.
 * A failure names its target, seed and fast-check path, and its input is saved as a regression file to commit.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { runCampaign } from './campaign.js';
import { TARGETS } from './targets/index.js';
import { skipped } from './seeds.js';

const seconds = Number(process.env.VHDSYNC_FUZZ_SECONDS ?? 120);
const seed = Number(process.env.VHDSYNC_FUZZ_SEED ?? Date.now() % 2 ** 31);
const only = process.env.VHDSYNC_FUZZ_TARGETS?.split(',').filter(Boolean);
const outDir = path.resolve(process.env.VHDSYNC_FUZZ_OUT ?? '.tmp/fuzz');

test(`fuzz targets for ${seconds} s (seed ${seed})`, async () => {
  const targets = only ? TARGETS.filter((t) => only.includes(t.name)) : TARGETS;
  const lines: string[] = [];
  const log = (l: string) => {
    lines.push(l);
    process.stderr.write(`fuzz: ${l}\n`);
  };
  const reports = await runCampaign({ targets, budgetMs: seconds * 1000, seed, outDir, log });
  for (const s of skipped) log(`seeds skipped: ${s}`);
  writeFileSync(path.join(outDir, 'report.json'), JSON.stringify({ seed, seconds, reports }, null, 2));
  const failures = reports.flatMap((r) => r.failures.map((f) => `${r.target}: ${f.signature} (seed ${f.seed}, path ${f.path}; input ${f.file})`));
  expect(failures).toEqual([]);
}, (seconds + 600) * 1000);
