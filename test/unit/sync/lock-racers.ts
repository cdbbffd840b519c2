/** Drives several lock-racer.mjs processes through rounds of racing for one image's lock. */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createInterface } from 'node:readline';
import { bootId, pidNamespace } from '../../../src/util/process-identity.js';
import * as path from 'node:path';

class Racer {
  private readonly replies: string[] = [];
  private waiting: { resolve: (line: string) => void; reject: (err: Error) => void } | null = null;
  readonly child: ChildProcessWithoutNullStreams;
  stderr = '';

  constructor(dist: string, image: string, env: NodeJS.ProcessEnv, timing?: object) {
    const args = [path.resolve('test/unit/sync/lock-racer.mjs'), dist, image, ...(timing ? [JSON.stringify(timing)] : [])];
    this.child = spawn(process.execPath, args, { env: { ...process.env, ...env } });
    this.child.stderr.on('data', (d) => (this.stderr += d));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const w = this.waiting;
      this.waiting = null;
      if (w) w.resolve(line);
      else this.replies.push(line);
    });
    this.child.on('exit', (code) => this.waiting?.reject(new Error(`racer exited (${code}): ${this.stderr}`)));
  }

  next(): Promise<string> {
    const r = this.replies.shift();
    if (r !== undefined) return Promise.resolve(r);
    if (this.child.exitCode !== null) return Promise.reject(new Error(`racer exited (${this.child.exitCode}): ${this.stderr}`));
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  send(line: string): void {
    this.child.stdin.write(line + '\n');
  }
}

/** `count` processes that each try to take the lock of `image` when told to go. */
export class Racers {
  private readonly racers: Racer[];

  constructor(dist: string, image: string, count: number, env: NodeJS.ProcessEnv = {}, timing?: object) {
    this.racers = Array.from({ length: count }, () => new Racer(dist, image, env, timing));
  }

  async ready(): Promise<void> {
    for (const r of this.racers) expectLine(await r.next(), 'ready');
  }

  /** Lets every process try at once; returns their answers (`won`, `busy`, `error ...`). */
  async race(): Promise<string[]> {
    for (const r of this.racers) r.send('go');
    return Promise.all(this.racers.map((r) => r.next()));
  }

  /** Makes every process forget the lock it holds (without deleting the file). */
  async drop(): Promise<void> {
    for (const r of this.racers) r.send('drop');
    for (const r of this.racers) expectLine(await r.next(), 'dropped');
  }

  async quit(): Promise<void> {
    await Promise.all(
      this.racers.map(
        (r) =>
          new Promise<void>((resolve) => {
            if (r.child.exitCode !== null) return resolve();
            r.child.once('exit', () => resolve());
            r.send('quit');
          }),
      ),
    );
  }
}

function expectLine(got: string, want: string): void {
  if (got !== want) throw new Error(`racer said ${JSON.stringify(got)}, expected ${want}`);
}

/** The pid of a process that has exited. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
}

/**
 * Plays `rounds` rounds: plant the lock of a killed run at `lockFile`, let the racers go at once, count the rounds
 * where other than exactly one of them won.
 */
export async function raceRounds(racers: Racers, lockFile: string, rounds: number): Promise<string[]> {
  const bad: string[] = [];
  const gone = deadPid();
  for (let i = 0; i < rounds; i++) {
    writeFileSync(lockFile, JSON.stringify({ pid: gone, host: hostname(), boot: bootId(), pidns: pidNamespace(), start: '1', op: 'merge', since: 'then' }));
    const answers = await racers.race();
    if (answers.filter((a) => a === 'won').length !== 1 || answers.some((a) => a.startsWith('error'))) bad.push(`round ${i}: ${answers.join(', ')}`);
    await racers.drop();
  }
  return bad;
}
