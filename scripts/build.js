#!/usr/bin/env node
// Builds dist/ (tsc) and dist/bundle/ (scripts/bundle.js) so that a process running from the tree meanwhile never
// reads a half-written file: every jest run builds first (test/global-setup.js), and two runs in one tree (a
// developer's and a reviewer's, or a land beside a test loop) used to truncate and rewrite dist/ under each other's
// CLI runs and under each other's bundler, which then bundled a module read half-written.
//
// tsc emits into a staging folder beside dist/ (same depth, so the source maps' '../src/...' paths stay right), and
// each file is renamed over its old copy: a reader sees the old file or the new one whole.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const staging = path.join(root, `.dist-${process.pid}`);

/** Moves every file under `from` to the same relative path under `to`, one rename each. */
function moveTree(from, to) {
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) moveTree(src, dst);
    else renameSync(src, dst);
  }
}

/** Runs a node script; its output goes to ours, and false when it exits non-zero (it has said why). */
function run(script, ...args) {
  try {
    execFileSync(process.execPath, [script, ...args], { stdio: 'inherit' });
    return true;
  } catch (err) {
    process.exitCode = typeof err.status === 'number' && err.status !== 0 ? err.status : 1;
    return false;
  }
}

rmSync(staging, { recursive: true, force: true });
try {
  if (run(path.join(root, 'node_modules/typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json'), '--outDir', staging)) moveTree(staging, dist);
} finally {
  rmSync(staging, { recursive: true, force: true });
}
if (!process.exitCode) run(path.join(root, 'scripts/bundle.js'));
