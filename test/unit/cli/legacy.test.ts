import { rewriteLegacyArgs } from '../../../src/cli/legacy.js';

describe('VhdBlockBackup flag syntax', () => {
  it.each([
    [['--createmeta', 'a.vhdx', 'b.vhdx'], ['createmeta', 'a.vhdx', 'b.vhdx']],
    [['--check', 's.vhdx', 't.vhdx'], ['check', 's.vhdx', 't.vhdx']],
    [['--copy', 's.vhdx', 't.vhdx'], ['copy', 's.vhdx', 't.vhdx']],
    [['--copy', '--createmeta', '--diffdir=D', 's', 't'], ['copy', '--createmeta', '--diffdir=D', 's', 't']],
    [['--createmeta', '--copy', 's', 't'], ['copy', '--createmeta', 's', 't']],
  ])('%j -> %j', (input, expected) => expect(rewriteLegacyArgs(input)).toEqual(expected));

  it('leaves subcommand syntax alone', () => {
    expect(rewriteLegacyArgs(['copy', '--createmeta', 's', 't'])).toEqual(['copy', '--createmeta', 's', 't']);
    expect(rewriteLegacyArgs(['info', '--json', 'x'])).toEqual(['info', '--json', 'x']);
    expect(rewriteLegacyArgs(['--help'])).toEqual(['--help']);
  });
});
