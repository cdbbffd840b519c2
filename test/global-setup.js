// End-to-end tests run the built CLI (bin/vhdsync.js -> dist/), so build once before any test runs.
import { execFileSync } from 'node:child_process';

export default function globalSetup() {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
}
