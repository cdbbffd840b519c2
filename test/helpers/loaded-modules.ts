import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN } from './cli.js';

/** What one CLI run loaded: its ES module files, its CommonJS modules (native addons), and the sources bundled in those files. */
export interface LoadedModules {
  status: number;
  stderr: string;
  /** Every ES module file the run resolved (absolute paths). */
  esm: string[];
  /** The CommonJS module cache at exit (createRequire'd addons such as xxhash-addon). */
  cjs: string[];
  /** The source paths (`dist/meta/hash-pool.js`, `node_modules/@aws-sdk/...`) bundled in the ES module files loaded. */
  sources: string[];
}

/**
 * Runs `vhdsync ARGS` with a module hook (node:module register) that logs every ES module it resolves and a preload
 * that logs the CommonJS module cache at exit; the bundled sources are read from the loaded chunks' `// path`
 * markers (esbuild writes one before each module's code). `dir` holds the hook files and the log.
 */
export function loadedModules(dir: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<LoadedModules> {
  const log = path.join(dir, `loaded-${process.hrtime.bigint()}.log`);
  const hooks = path.join(dir, 'hooks.mjs');
  writeFileSync(hooks, `import { appendFileSync } from 'node:fs';\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(process.env.VHDSYNC_TEST_LOADED, 'esm ' + r.url + '\\n'); return r; }\n`);
  const register = path.join(dir, 'register.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify('./hooks.mjs')}, import.meta.url);\n`);
  const report = path.join(dir, 'report.cjs');
  writeFileSync(report, `process.on('exit', () => require('fs').appendFileSync(process.env.VHDSYNC_TEST_LOADED, Object.keys(require.cache).map((k) => 'cjs ' + k + '\\n').join('')));\n`);
  writeFileSync(log, '');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', register, '-r', report, BIN, ...args], { env: { ...process.env, ...env, VHDSYNC_TEST_LOADED: log } });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const lines = readFileSync(log, 'utf8').split('\n');
      const esm = [...new Set(lines.filter((l) => l.startsWith('esm file:')).map((l) => fileURLToPath(l.slice(4))))];
      const cjs = lines.filter((l) => l.startsWith('cjs ')).map((l) => l.slice(4));
      // A package's path is relative to the real node_modules (a worktree's may be a link elsewhere): cut to it.
      const sources = esm.flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/^\/\/ (?:\S*?\/)?((?:dist|node_modules)\/\S+)$/gm)].map((m) => m[1]));
      resolve({ status: code ?? -1, stderr, esm, cjs, sources });
    });
  });
}
