import { describe, expect, it } from 'vitest';
import { errorTable, type HadbErrorCode } from '../../src/errors.ts';
import { hranaStatus, problem } from '../../src/hrana/codec.ts';

// The statuses Hrana clients get for a refused request: hadb's codes from the one table, Hrana's
// own codes as they always were.

describe('Hrana whole-request error statuses', () => {
  it.each([
    ['UNAUTHORIZED', 401],
    ['BAD_REQUEST', 400],
    ['UNKNOWN_DATABASE', 404],
    ['NOT_LEADER', 409],
    ['LIMIT_EXCEEDED', 429],
    ['LEADER_UNAVAILABLE', 503],
    ['NOT_FOUND', 404],
    ['METHOD_NOT_ALLOWED', 405],
    ['STREAM_EXPIRED', 400],
    ['OVERLOADED', 503],
    ['STARTING', 503],
  ] as const)('answers %s with %i', (code, status) => {
    expect(problem(code, 'why')).toEqual({ status, body: { message: 'why', code } });
  });

  it('takes every hadb code from the table', () => {
    for (const code of Object.keys(errorTable) as HadbErrorCode[]) {
      expect(hranaStatus(code)).toBe(errorTable[code].status);
    }
  });
});
