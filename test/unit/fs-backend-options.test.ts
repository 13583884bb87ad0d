import { describe, expect, it } from 'vitest';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { InvalidArgumentError } from '../../src/errors.ts';

// Plain JavaScript callers get no type check: a wrong option name must say which one is wanted.
describe('the folder backends, given the wrong options', () => {
  it('createFsLeaseStore names its path option', () => {
    const open = () => createFsLeaseStore({ root: '/tmp/leases' } as never);
    expect(open).toThrow(InvalidArgumentError);
    expect(open).toThrow('createFsLeaseStore needs { path }');
  });

  it('createFsStorage names its root option', () => {
    for (const options of [{ path: '/tmp/storage' }, { root: '' }, undefined]) {
      const open = () => createFsStorage(options as never);
      expect(open).toThrow(InvalidArgumentError);
      expect(open).toThrow('createFsStorage needs { root }');
    }
  });
});
