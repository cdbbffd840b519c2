/**
 * Runs targets for a time budget: each target gets a share by weight and runs fast-check properties in a loop
 * (a new seed after each failure, so one run finds several distinct crashes). Failures are grouped by signature,
 * their inputs written as regression files to `outDir`, and everything counted for the report.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import fc from 'fast-check';
import { installAllocationCap, judge, Violation, Watchdog, withTimeLimit } from './guards.js';
import type { FuzzTarget } from './target.js';

/** Per-input time limit: a legitimate input takes milliseconds; seconds mean a loop that does not end. */
export const INPUT_TIME_LIMIT_MS = 10_000;

export interface TargetReport {
  target: string;
  about: string;
  skipped?: string;
  inputs: number;
  seconds: number;
  /** Distinct failures: signature, seed and path to replay, where the input was saved. */
  failures: Array<{ signature: string; seed: number; path: string; file: string }>;
  /** How inputs ended: `ok`, or the error class and the first words of its message (the most frequent few). */
  outcomes: Record<string, number>;
}

/** An input's outcome in a few words, to see how deep mutations get (past checksums, into reads). */
function outcome(err: unknown): string {
  if (err === undefined) return 'ok';
  const e = err as Error;
  return `${e?.name}: ${String(e?.message).replace(/\d+|0x[0-9a-f]+/gi, 'N').split(' ').slice(0, 5).join(' ')}`;
}

function topOutcomes(all: Map<string, number>, n = 12): Record<string, number> {
  return Object.fromEntries([...all].sort((a, b) => b[1] - a[1]).slice(0, n));
}

export interface CampaignOptions {
  targets: FuzzTarget[];
  budgetMs: number;
  seed: number;
  outDir: string;
  log?: (line: string) => void;
}

/** A failure's signature: its kind and message with numbers blanked, so one bug counts once. */
function signature(v: Violation): string {
  return v.message.replace(/0x[0-9a-f]+/gi, 'N').replace(/\d+/g, 'N').replace(/\(file:\/\/[^)]*\)|\([^)]*\.ts:N:N\)/g, '').slice(0, 200);
}

/** Runs each target for its share of the budget; never throws for a failing input (that is in the report). */
export async function runCampaign(opts: CampaignOptions): Promise<TargetReport[]> {
  installAllocationCap();
  mkdirSync(opts.outDir, { recursive: true });
  const statusFile = path.join(opts.outDir, 'current-input.txt');
  const watchdog = new Watchdog(INPUT_TIME_LIMIT_MS * 3, statusFile);
  const totalWeight = opts.targets.reduce((n, t) => n + t.weight, 0);
  const reports: TargetReport[] = [];
  // Every target's seeds start building at once: unpacking real images overlaps with fuzzing the first targets.
  const prepared = opts.targets.map((t) => t.prepare());
  for (const p of prepared) p.catch(() => {});
  try {
    for (const [ti, t] of opts.targets.entries()) {
      const share = (opts.budgetMs * t.weight) / totalWeight;
      const preparing = Date.now();
      const report: TargetReport = { target: t.name, about: t.about, inputs: 0, seconds: 0, failures: [], outcomes: {} };
      const outcomes = new Map<string, number>();
      reports.push(report);
      const ctx = await prepared[ti];
      if (typeof ctx === 'string') {
        report.skipped = ctx;
        report.seconds = 0;
        opts.log?.(`${t.name}: skipped (${ctx})`);
        continue;
      }
      // Seeds are built once and shared by targets; their cost is not taken from the target's share.
      opts.log?.(`${t.name}: seeds ready in ${((Date.now() - preparing) / 1000).toFixed(1)} s`);
      const started = Date.now();
      const seen = new Set<string>();
      let seed = opts.seed;
      while (Date.now() - started < share) {
        let lastFailure: Violation | null = null;
        const property = fc.asyncProperty(t.arbitrary(ctx), async (input) => {
          report.inputs++;
          writeFileSync(statusFile, `${t.name} ${t.describe(ctx, input)}\n`);
          watchdog.beat();
          let err: unknown;
          try {
            await withTimeLimit(INPUT_TIME_LIMIT_MS, () => t.run(ctx, input));
          } catch (e) {
            err = e ?? new Error('undefined thrown');
          } finally {
            watchdog.beat();
          }
          const o = outcome(err);
          outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
          const v = judge(err);
          if (v) {
            lastFailure = v;
            throw v;
          }
        });
        const remaining = Math.max(1, share - (Date.now() - started));
        const result = await fc.check(property, { seed, numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: remaining, markInterruptAsFailure: false, maxSkipsPerRun: 0 });
        if (result.failed && result.counterexample && lastFailure) {
          const input = result.counterexample[0];
          // Shrinking ran the property again on smaller inputs: judge the final counterexample once more.
          let final: Violation | null = null;
          try {
            await withTimeLimit(INPUT_TIME_LIMIT_MS, () => t.run(ctx, input));
          } catch (e) {
            final = judge(e);
          }
          const v = final ?? (lastFailure as Violation);
          const sig = signature(v);
          if (!seen.has(sig)) {
            seen.add(sig);
            const bytes = t.save(ctx, input);
            const name = `${createHash('sha1').update(bytes).digest('hex').slice(0, 12)}.bin`;
            const dir = path.join(opts.outDir, t.name);
            mkdirSync(dir, { recursive: true });
            writeFileSync(path.join(dir, name), bytes);
            writeFileSync(path.join(dir, `${name}.txt`), `${v.message}\nseed ${seed} path ${result.counterexamplePath}\n${t.describe(ctx, input)}\n`);
            report.failures.push({ signature: sig, seed, path: result.counterexamplePath ?? '', file: path.join(dir, name) });
            opts.log?.(`${t.name}: FAILURE ${v.message} (seed ${seed}, path ${result.counterexamplePath}; input saved as ${path.join(dir, name)})`);
          }
        } else if (result.failed && result.errorInstance && !lastFailure) {
          // Fast-check itself or the target's own machinery broke: report it rather than spin.
          throw result.errorInstance;
        }
        seed = (seed * 1103515245 + 12345) >>> 0;
        if (!result.failed) break;
      }
      report.outcomes = topOutcomes(outcomes);
      report.seconds = Math.round((Date.now() - started) / 100) / 10;
      opts.log?.(`${t.name}: ${report.inputs} inputs in ${report.seconds} s, ${report.failures.length} distinct failures`);
    }
  } finally {
    await watchdog.stop();
  }
  return reports;
}
