import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** True when an external program is on PATH. */
export function haveTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Debian's python3 with pyvhdi (python3-libvhdi), or null. */
export const PYTHON_VHDI = existsSync('/usr/bin/python3') && spawnSync('/usr/bin/python3', ['-c', 'import pyvhdi'], { stdio: 'ignore' }).status === 0 ? '/usr/bin/python3' : null;

/** Runs a program and returns stdout; throws with its stderr on failure. */
export function run(cmd: string, args: string[], opts: { input?: Buffer; maxBuffer?: number } = {}): Buffer {
  return execFileSync(cmd, args, { input: opts.input, maxBuffer: opts.maxBuffer ?? 1 << 30, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Runs a program and returns its exit status, stdout and stderr without throwing. */
export function runStatus(cmd: string, args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 30 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** qemu-img and qemu-io are present (Debian qemu-utils). CI installs them; a missing tool fails loudly there. */
export const HAVE_QEMU = haveTool('qemu-img') && haveTool('qemu-io');

/**
 * Interop tests must not silently pass without their oracle: in CI a missing tool is an error,
 * elsewhere the suite is skipped with a message.
 */
export function requireTool(available: boolean, name: string): boolean {
  if (available) return true;
  if (process.env.CI) throw new Error(`${name} is required in CI but missing (.ci/run installs it)`);
  // eslint-disable-next-line no-console
  console.warn(`skipping: ${name} not installed (apt-get install qemu-utils libvhdi-utils python3-libvhdi)`);
  return false;
}

/** Reads a whole image's virtual content through pyvhdi (libvhdi), optionally with a parent. */
export function pyvhdiRead(image: string, parent?: string): Buffer {
  if (!PYTHON_VHDI) throw new Error('pyvhdi missing');
  const script = `
import pyvhdi, sys
f = pyvhdi.file(); f.open(sys.argv[1])
if len(sys.argv) > 2:
    p = pyvhdi.file(); p.open(sys.argv[2]); f.set_parent(p)
size = f.media_size; off = 0
out = sys.stdout.buffer
while off < size:
    n = min(1 << 24, size - off)
    out.write(f.read_buffer_at_offset(n, off)); off += n
`;
  return run(PYTHON_VHDI, ['-c', script, image, ...(parent ? [parent] : [])]);
}
