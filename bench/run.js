#!/usr/bin/env node
// Runs every benchmark script in bench/ (all *.js but this one and lib.js, the scripts' shared helpers) in turn
// with its default settings, after `npm run build`; BENCH=createmeta,copy selects scripts by name prefix. The
// scripts take different arguments, so none are passed on: run a script directly to change its settings. A
// failing script is reported and the others still run. Benchmarks are not part of CI.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const scripts = readdirSync(here).filter((n) => n.endsWith('.js') && n !== 'run.js' && n !== 'lib.js').sort();
const only = process.env.BENCH ? process.env.BENCH.split(',') : null;
let failed = 0;
for (const s of scripts) {
  if (only && !only.some((o) => s.startsWith(o))) continue;
  console.log(`\n=== bench/${s} ===\n`);
  const r = spawnSync(process.execPath, [path.join(here, s)], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.log(`bench/${s} failed (exit ${r.status ?? r.signal})`);
    failed++;
  }
}
process.exitCode = failed ? 1 : 0;
