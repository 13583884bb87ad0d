import { describe, expect, it } from 'vitest';
import { messageOf } from '../../src/error-message.ts';
import { ClosedError } from '../../src/errors.ts';

describe('messageOf', () => {
  it("gives an Error's own message, without its name", () => {
    expect(messageOf(new TypeError('bad input'))).toBe('bad input');
    expect(messageOf(new ClosedError('database a'))).toBe(new ClosedError('database a').message);
  });

  it('gives anything else thrown as a string', () => {
    expect(messageOf('plain text')).toBe('plain text');
    expect(messageOf(42)).toBe('42');
    expect(messageOf(undefined)).toBe('undefined');
    expect(messageOf({ message: 'not an Error' })).toBe('[object Object]');
  });
});
