import fc from 'fast-check';
import { CorruptImageError, ParentError } from '../../../src/util/errors.js';

test('describe() is one line whatever the message and subject hold (names and paths come from files)', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary' }), fc.option(fc.string({ unit: 'binary' }), { nil: undefined }), (message, subject) => {
      const line = new CorruptImageError(message, subject).describe();
      expect(line).not.toMatch(/[\r\n\0]/);
    }),
  );
  expect(new ParentError('parent image not found (looked for /x/a\nb.vhd)', 'c.vhd').describe()).toBe('c.vhd: parent image not found (looked for /x/a\\x0ab.vhd)');
});
