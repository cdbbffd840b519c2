// End-to-end tests run the built CLI (bin/vhdsync.js -> dist/bundle/), so build once before any test runs (tsc, then
// scripts/bundle.js), with the optional native hole map helper (a no-op when it is up to date; one line and no
// helper when it cannot be built).
import { execFileSync } from 'node:child_process';

export default function globalSetup() {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
  execFileSync(process.execPath, ['scripts/bundle.js'], { stdio: 'inherit' });
  execFileSync(process.execPath, ['scripts/build-native.js'], { stdio: 'inherit' });
}
