#!/usr/bin/env node
// Entry point: the CLI lives in dist/cli/main.js, built by `npm ci` (prepare) or `npm run build`.
import { main } from '../dist/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`vhdsync: internal error: ${err && err.message ? err.message : err}\n`);
    process.exitCode = 1;
  },
);
