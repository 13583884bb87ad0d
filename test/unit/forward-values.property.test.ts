import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import type { SqlValue } from '../../src/api-types.ts';
import {
  decodeForwardRequest,
  decodeForwardResponse,
  decodeStored,
  encodeMessage,
  type ForwardRequest,
} from '../../src/wire/forward.ts';

/** Every SQL value: doubles with -0, NaN and ±Infinity, 64-bit integers as bigint, any text, blobs. */
const sqlValue: fc.Arbitrary<SqlValue> = fc.oneof(
  fc.constant(null),
  fc.double(),
  fc.constantFrom(-0, 0, 2 ** 53 + 2, -(2 ** 31) - 1, 2 ** 32 - 1, Number.MAX_VALUE),
  fc.integer(),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.string({ unit: 'binary' }),
  fc.uint8Array(),
);

/** The exact value: Object.is for numbers (so -0 is not 0), bytes for blobs. */
function same(decoded: unknown, given: SqlValue): boolean {
  if (given instanceof Uint8Array) {
    return decoded instanceof Uint8Array && Buffer.from(decoded).equals(Buffer.from(given));
  }
  return Object.is(decoded, given);
}

function request(params: SqlValue[]): ForwardRequest {
  return {
    v: 1,
    db: 'db',
    requestId: 'r',
    op: 'write',
    statements: [{ sql: 'insert into t values (?)', params }],
    durability: 'replicated',
    bigints: false,
  };
}

describe('SQL values through the forward protocol', () => {
  it('round-trip exactly as params, as rows, and as remembered results', () => {
    fc.assert(
      fc.property(fc.array(sqlValue, { maxLength: 20 }), (values) => {
        const params = decodeForwardRequest(encodeMessage(request(values))).statements[0]?.params;
        expect((params as unknown[]).every((value, i) => same(value, values[i] as SqlValue))).toBe(
          true,
        );
        const row = Object.fromEntries(values.map((value, i) => [`c${i}`, value]));
        const results = [{ changes: 1, lastInsertRowid: 7n, rows: [row] }];
        const answer = decodeForwardResponse(
          encodeMessage({ ok: true, results, token: { epoch: 1, seq: 2 } }),
        );
        const stored = decodeStored(encodeMessage(results)) as typeof results;
        for (const decoded of [answer.ok ? answer.results : [], stored]) {
          const got = decoded[0]?.rows?.[0] ?? {};
          expect(values.every((value, i) => same(got[`c${i}`], value))).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('sends -0 as the standard float64, which any msgpack reader (an older node) reads as -0', () => {
    const bytes = encodeMessage([-0]);
    expect(Buffer.from(bytes).toString('hex')).toBe('91cb8000000000000000');
    const [value] = new Packr({ useRecords: false }).unpack(bytes) as number[];
    expect(Object.is(value, -0)).toBe(true);
  });

  it('leaves the message it encodes as it was', () => {
    const message = { rows: [{ a: -0, b: [1, -0, 'x'] }] };
    encodeMessage(message);
    expect(Object.is(message.rows[0]?.a, -0)).toBe(true);
    expect(Object.is(message.rows[0]?.b[1], -0)).toBe(true);
  });
});
