import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';

/**
 * `-q` silences every command: a whole backup cycle in both syntaxes, each step with -q (and with --json too, which
 * -q also silences), must print nothing on stdout and, as it succeeds, nothing on stderr.
 */
describe('-q silences every command', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);

  const quiet = (args: string[]) => {
    const r = cli(args);
    expect({ args, status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({ args, status: 0, stdout: '', stderr: '' });
  };

  function writeAt(file: string, offset: number, data: Buffer): void {
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, data, 0, data.length, offset);
    fs.closeSync(fd);
  }

  it('every subcommand with -q', () => {
    const at = (name: string) => p(name);
    quiet(['create', at('t.vhdx'), '--size', '8M', '-q']);
    quiet(['create', at('s.raw'), '--size', '8M', '-q']);
    writeAt(at('s.raw'), 3 << 20, randomBytes(5000));
    quiet(['create', at('child.vhdx'), '--parent', at('t.vhdx'), '-q']);
    quiet(['info', at('child.vhdx'), '-q']);
    quiet(['get', at('t.vhdx'), 'virtual-size', '-q']);
    quiet(['convert', at('s.raw'), at('s.vhd'), '-q']);
    quiet(['stream', '--source', at('s.raw'), '--destination', at('st.vhd'), '--destination-format', 'vhd', '-q']);
    quiet(['createmeta', at('s.raw'), at('t.vhdx'), '-q']);
    quiet(['check', at('s.raw'), at('t.vhdx'), '-q']);
    quiet(['validate', at('s.raw'), '-q']);
    quiet(['copy', at('s.raw'), at('t.vhdx'), '-q']);
    quiet(['merge', at('t_diff.vhdx'), '-q']);
    writeAt(at('s.raw'), 6 << 20, randomBytes(5000));
    quiet(['copy', '--createmeta', at('s.raw'), at('t.vhdx'), '-q']);
    expect(fs.existsSync(at('t_diff.vhdx'))).toBe(true);
  });

  it("VhdBlockBackup's flag syntax with --quiet, also silencing --json", () => {
    const at = (name: string) => p(`vbb-${name}`);
    quiet(['create', at('t.vhd'), '--size', '8M', '--quiet', '--json']);
    quiet(['create', at('s.raw'), '--size', '8M', '--quiet', '--json']);
    writeAt(at('s.raw'), 1 << 20, randomBytes(5000));
    quiet(['info', at('t.vhd'), '--quiet', '--json']);
    quiet(['stream', '--source', at('s.raw'), '--destination', at('st.raw'), '--quiet', '--json']);
    quiet(['--quiet', '--json', '--createmeta', at('s.raw'), at('t.vhd')]);
    quiet(['--quiet', '--json', '--check', at('s.raw'), at('t.vhd')]);
    quiet(['--quiet', '--json', '--validate', at('t.vhd')]);
    quiet(['--quiet', '--json', '--copy', at('s.raw'), at('t.vhd')]);
    quiet(['--quiet', '--json', '--merge', at('t_diff.vhd')]);
    writeAt(at('s.raw'), 6 << 20, randomBytes(5000));
    quiet(['--quiet', '--json', '--copy', '--createmeta', '--diffdir', tmp.dir, at('s.raw'), at('t.vhd')]);
    expect(fs.existsSync(p('vbb-t_diff.vhd'))).toBe(true);
  });
});
