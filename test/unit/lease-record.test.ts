import { describe, expect, it } from 'vitest';
import { LeaseRecordInvalidError } from '../../src/errors.ts';
import {
  decodeLeaseRecord,
  encodeLeaseRecord,
  LEASE_RECORD_VERSION,
  type LeaseRecord,
} from '../../src/wire/lease-record.ts';

const bytes = (text: string) => new TextEncoder().encode(text);

const valid = {
  format: 'hadb-lease',
  v: 1,
  holder: 'node-a',
  session: 'session-1',
  epoch: 3,
  ttlMs: 5000,
  released: false,
};

/** A valid record's JSON with some fields replaced (or removed, with `undefined`). */
function withFields(fields: Record<string, unknown>): Uint8Array {
  return bytes(JSON.stringify({ ...valid, ...fields }));
}

function rejection(input: Uint8Array): LeaseRecordInvalidError {
  try {
    decodeLeaseRecord(input);
  } catch (error) {
    expect(error).toBeInstanceOf(LeaseRecordInvalidError);
    return error as LeaseRecordInvalidError;
  }
  throw new Error(`decodeLeaseRecord accepted ${new TextDecoder().decode(input)}`);
}

function expectInvalid(input: Uint8Array, problem: RegExp): void {
  const error = rejection(input);
  expect(error.code).toBe('LEASE_RECORD_INVALID');
  expect(error.message).toMatch(/^LEASE_RECORD_INVALID: unreadable lease record: /);
  expect(error.message).toMatch(problem);
}

describe('lease record', () => {
  it('round trips a record without an address', () => {
    const record: LeaseRecord = {
      holder: 'node-a',
      session: 's-1',
      epoch: 1,
      ttlMs: 5000,
      released: false,
    };
    const decoded = decodeLeaseRecord(encodeLeaseRecord(record));
    expect(decoded).toEqual(record);
    expect('address' in decoded).toBe(false);
  });

  it('round trips a released record with an address', () => {
    const record: LeaseRecord = {
      holder: 'node-b',
      session: 's-2',
      epoch: 9_007_199_254_740_991,
      ttlMs: 600_000,
      released: true,
      address: 'http://10.0.0.2:7000',
    };
    expect(decodeLeaseRecord(encodeLeaseRecord(record))).toEqual(record);
  });

  it('writes the format name and the current version', () => {
    const record: LeaseRecord = { holder: 'n', session: 's', epoch: 2, ttlMs: 1, released: false };
    const json = JSON.parse(new TextDecoder().decode(encodeLeaseRecord(record)));
    expect(json).toMatchObject({ format: 'hadb-lease', v: LEASE_RECORD_VERSION });
    expect(LEASE_RECORD_VERSION).toBe(1);
  });

  it('accepts a hand-written record at the limits', () => {
    expect(decodeLeaseRecord(withFields({ epoch: 1, ttlMs: 1 }))).toMatchObject({
      epoch: 1,
      ttlMs: 1,
    });
    expect(decodeLeaseRecord(withFields({ ttlMs: 600_000 })).ttlMs).toBe(600_000);
  });

  it('rejects random garbage bytes', () => {
    let seed = 12345;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed;
    };
    for (let i = 0; i < 50; i++) {
      const garbage = Uint8Array.from({ length: 1 + (next() % 200) }, () => next() % 256);
      expectInvalid(garbage, /not UTF-8 JSON|not a JSON object|format is/);
    }
    expectInvalid(new Uint8Array([0xde, 0xad, 0xbe, 0xef]), /not UTF-8 JSON/);
    expectInvalid(bytes('{"format": "hadb-lease", '), /not UTF-8 JSON/);
    expectInvalid(new Uint8Array(), /not UTF-8 JSON/);
  });

  it('rejects invalid UTF-8 and keeps the decoder error as the cause', () => {
    const json = bytes(JSON.stringify({ ...valid, holder: 'XX' }));
    const at = json.indexOf('X'.charCodeAt(0));
    json[at] = 0xc3; // a lead byte followed by an ASCII byte: not UTF-8
    const error = rejection(json);
    expect(error.message).toMatch(/not UTF-8 JSON/);
    expect(error.cause).toBeInstanceOf(TypeError);
  });

  it('rejects JSON that is not an object', () => {
    for (const text of ['null', '[]', '[{"format":"hadb-lease"}]', '42', '"hadb-lease"', 'true']) {
      expectInvalid(bytes(text), /not a JSON object/);
    }
  });

  it('rejects a wrong or missing format', () => {
    expectInvalid(
      withFields({ format: 'other-lease' }),
      /format is "other-lease", expected "hadb-lease"/,
    );
    expectInvalid(withFields({ format: undefined }), /format is undefined/);
    expectInvalid(bytes('{}'), /format is undefined/);
  });

  it('rejects an unsupported version', () => {
    expectInvalid(withFields({ v: 2 }), /format version 2 is not supported/);
    expectInvalid(withFields({ v: '1' }), /format version "1" is not supported/);
    expectInvalid(withFields({ v: 0 }), /version 0 is not supported/);
    expectInvalid(withFields({ v: undefined }), /is not supported/);
  });

  it('rejects a missing or invalid holder', () => {
    for (const holder of [undefined, '', 7, null, ['a']]) {
      expectInvalid(withFields({ holder }), /holder must be a non-empty string/);
    }
  });

  it('rejects a missing or invalid session', () => {
    for (const session of [undefined, '', 1, false]) {
      expectInvalid(withFields({ session }), /session must be a non-empty string/);
    }
  });

  it('rejects a missing or invalid epoch', () => {
    for (const epoch of [undefined, 0, -1, 1.5, '1', null, 2 ** 53]) {
      expectInvalid(withFields({ epoch }), /epoch must be a positive integer/);
    }
  });

  it('rejects a missing or invalid ttlMs', () => {
    for (const ttlMs of [undefined, 0, -5, 1.5, '1000', 600_001, 10 ** 9]) {
      expectInvalid(withFields({ ttlMs }), /ttlMs must be an integer in 1\.\.600000/);
    }
  });

  it('rejects released that is not a boolean', () => {
    for (const released of [undefined, 'false', 0, 1, null]) {
      expectInvalid(withFields({ released }), /released must be a boolean/);
    }
  });

  it('rejects an address that is not a string', () => {
    for (const address of [42, null, { host: 'x' }, true]) {
      expectInvalid(withFields({ address }), /address must be a string/);
    }
  });

  it('rejects more than 4096 bytes, even when the JSON is otherwise valid', () => {
    const base = withFields({ address: '' }).length;
    const atLimit = withFields({ address: 'a'.repeat(4096 - base) });
    expect(atLimit.length).toBe(4096);
    expect(decodeLeaseRecord(atLimit).address).toHaveLength(4096 - base);
    const overLimit = withFields({ address: 'a'.repeat(4097 - base) });
    expectInvalid(overLimit, /4097 bytes, more than 4096/);
  });
});

describe('encodeLeaseRecord refuses records nobody could read back', () => {
  const base = { holder: 'a', session: 's', epoch: 1, ttlMs: 1000, released: false };
  it.each([
    ['a ttl above the maximum', { ...base, ttlMs: 600_001 }],
    ['an oversized address', { ...base, address: 'x'.repeat(5000) }],
    ['epoch 0', { ...base, epoch: 0 }],
    ['an empty holder', { ...base, holder: '' }],
  ])('%s', (_, record) => {
    expect(() => encodeLeaseRecord(record)).toThrow(
      /INVALID_ARGUMENT: cannot write this lease record/,
    );
  });
});
