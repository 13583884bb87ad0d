import { createHash } from 'node:crypto';
import { brotliDecompressSync, crc32, deflateRawSync, inflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { ChangesetError, type ChangesetErrorCode, InvalidArgumentError } from '../../src/errors.ts';
import {
  CHANGESET_VERSION,
  type ChangedPage,
  type Changeset,
  type ChangesetCodec,
  type ChangesetExpectation,
  checksumsEqual,
  decodeChangeset,
  encodeChangeset,
  GENESIS_CHECKSUM,
  MAX_CHANGESET_BODY_BYTES,
} from '../../src/wire/changeset.ts';

type ChangesetInput = Omit<Changeset, 'checksum' | 'version'>;

const HEADER_BYTES = 14;
const CODECS: ChangesetCodec[] = ['brotli', 'deflate-raw', 'none'];
const CODEC_IDS: Record<ChangesetCodec, number> = { none: 0, 'deflate-raw': 1, brotli: 2 };
// Same wire options as the codec, so tests can take a body apart and put it back together.
const testPackr = new Packr({ useRecords: false, int64AsType: 'number', copyBuffers: true });

/** A page whose bytes depend on `seed`, compressible but not trivially. */
function page(pgno: number, pageSize: number, seed = pgno): ChangedPage {
  const data = new Uint8Array(pageSize);
  for (let i = 0; i < pageSize; i++) data[i] = (seed * 31 + (i >> 3) * 7) & 0xff;
  return { pgno, data };
}

function input(fields: Partial<ChangesetInput> = {}): ChangesetInput {
  return {
    db: 'orders',
    epoch: 3,
    seq: 1,
    commitTimeMs: 1_700_000_000_123,
    prevChecksum: GENESIS_CHECKSUM,
    pageSize: 4096,
    dbSizePages: 10,
    pages: [page(1, 4096), page(4, 4096), page(10, 4096)],
    ...fields,
  };
}

/** Compares as plain bytes: decode may hand back Buffers where the input had Uint8Arrays. */
function expectSameContent(actual: Changeset, expected: ChangesetInput): void {
  const { pages, prevChecksum, ...scalars } = expected;
  expect(actual).toMatchObject(scalars);
  expect(actual.version).toBe(CHANGESET_VERSION);
  expect(new Uint8Array(actual.prevChecksum)).toEqual(new Uint8Array(prevChecksum));
  expect(actual.pages.map((p) => p.pgno)).toEqual(pages.map((p) => p.pgno));
  actual.pages.forEach((p, i) => {
    expect(p.data).toBeInstanceOf(Uint8Array);
    expect(Buffer.compare(p.data, pages[i]?.data ?? new Uint8Array())).toBe(0);
  });
}

function rejection(run: () => unknown): ChangesetError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ChangesetError);
    return error as ChangesetError;
  }
  throw new Error('expected a ChangesetError, but nothing was thrown');
}

function expectRejected(
  bytes: Uint8Array,
  code: ChangesetErrorCode,
  expectation?: ChangesetExpectation,
): ChangesetError {
  const error = rejection(() => decodeChangeset(bytes, expectation));
  expect(error.code).toBe(code);
  expect(error.message.startsWith(`${code}: `)).toBe(true);
  return error;
}

/** A frame as the wire layout documents it, around any body. */
function frame(body: Uint8Array, codecId = 0, frameVersion = 1): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES + body.length);
  const view = new DataView(bytes.buffer);
  bytes.set(Buffer.from('HADB'), 0);
  bytes[4] = frameVersion;
  bytes[5] = codecId;
  view.setUint32(6, body.length);
  view.setUint32(10, crc32(body));
  bytes.set(body, HEADER_BYTES);
  return bytes;
}

/** The msgpack body of an encoded changeset, as a mutable object. */
function unpackBody(bytes: Uint8Array): Record<string, unknown> {
  const stored = bytes.subarray(HEADER_BYTES);
  const raw =
    bytes[5] === 1
      ? inflateRawSync(stored)
      : bytes[5] === 2
        ? brotliDecompressSync(stored)
        : stored;
  return testPackr.unpack(raw);
}

function withBody(fields: Record<string, unknown>, remove: string[] = []): Uint8Array {
  const body = { ...unpackBody(encodeChangeset(input()).bytes), ...fields };
  for (const key of remove) delete body[key];
  return frame(testPackr.pack(body));
}

function flipBit(bytes: Uint8Array, bit: number): Uint8Array {
  const copy = bytes.slice();
  copy[bit >> 3] = (copy[bit >> 3] as number) ^ (1 << (bit & 7));
  return copy;
}

describe('encodeChangeset / decodeChangeset round trip', () => {
  for (const codec of CODECS) {
    for (const pageSize of [4096, 65536]) {
      it(`${codec}, page size ${pageSize}`, () => {
        const source = input({
          pageSize,
          pages: [page(1, pageSize), page(2, pageSize), page(7, pageSize)],
        });
        const { bytes, changeset } = encodeChangeset(source, { codec });
        expectSameContent(changeset, source);
        const decoded = decodeChangeset(bytes);
        expectSameContent(decoded, source);
        expect(checksumsEqual(decoded.checksum, changeset.checksum)).toBe(true);
      });
    }

    it(`${codec}, no pages`, () => {
      const source = input({ pages: [] });
      const decoded = decodeChangeset(encodeChangeset(source, { codec }).bytes);
      expectSameContent(decoded, source);
      expect(decoded.pages).toEqual([]);
    });

    it(`${codec}, many pages`, () => {
      const pages = Array.from({ length: 1000 }, (_, i) => page(i * 3 + 1, 4096));
      const source = input({ dbSizePages: 3000, pages });
      expectSameContent(decodeChangeset(encodeChangeset(source, { codec }).bytes), source);
    });
  }

  it('writes the documented frame header', () => {
    for (const codec of CODECS) {
      const { bytes } = encodeChangeset(input(), { codec });
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      expect(Buffer.from(bytes.subarray(0, 4)).toString('latin1')).toBe('HADB');
      expect(bytes[4]).toBe(1);
      expect(bytes[5]).toBe(CODEC_IDS[codec]);
      expect(view.getUint32(6)).toBe(bytes.length - HEADER_BYTES);
      expect(view.getUint32(10)).toBe(crc32(bytes.subarray(HEADER_BYTES)));
    }
  });

  it('compresses with brotli by default', () => {
    const { bytes } = encodeChangeset(input());
    expect(bytes[5]).toBe(CODEC_IDS.brotli);
  });

  for (const [codec, bestLevel] of [
    ['brotli', 11],
    ['deflate-raw', 9],
  ] as const) {
    it(`compresses repetitive pages with ${codec} and honours the level`, () => {
      const source = input();
      const plain = encodeChangeset(source, { codec: 'none' }).bytes;
      const fast = encodeChangeset(source, { codec }).bytes;
      const best = encodeChangeset(source, { codec, level: bestLevel }).bytes;
      expect(fast.length).toBeLessThan(plain.length / 4);
      expect(best.length).toBeLessThanOrEqual(fast.length);
      expectSameContent(decodeChangeset(best), source);
    });
  }

  it('writes a plain msgpack body any msgpack reader understands', () => {
    const body = unpackBody(encodeChangeset(input({ epoch: 2 ** 40 })).bytes);
    expect(Object.keys(body).sort()).toEqual(
      [
        'checksum',
        'commitTimeMs',
        'db',
        'dbSizePages',
        'epoch',
        'pageSize',
        'pages',
        'prevChecksum',
        'seq',
        'v',
      ].sort(),
    );
    expect(body.v).toBe(1);
    expect(body.epoch).toBe(2 ** 40);
    expect(body.commitTimeMs).toBe(1_700_000_000_123);
    expect((body.pages as unknown[][]).map(([pgno]) => pgno)).toEqual([1, 4, 10]);
  });

  it('writes the body byte for byte as msgpackr packs the same map', () => {
    // The body is written by hand in one pass; msgpackr's encoding is the reference.
    const reference = new Packr({
      useRecords: false,
      moreTypes: false,
      structuredClone: false,
      bundleStrings: false,
      variableMapSize: true,
      mapsAsObjects: true,
      int64AsType: 'number',
    });
    const wide = (value: number) => (value > 0xffffffff ? BigInt(value) : value);
    const cases: Partial<ChangesetInput>[] = [
      {},
      { pages: [], dbSizePages: 1 },
      { db: 'd'.repeat(40), epoch: 2 ** 40, seq: 2 ** 32, commitTimeMs: Number.MAX_SAFE_INTEGER },
      { db: 'é'.repeat(200), epoch: 255, seq: 65535, commitTimeMs: 0 },
      {
        pageSize: 512,
        dbSizePages: 70_000,
        pages: Array.from({ length: 300 }, (_, i) => page(i * 200 + 1, 512)),
      },
      { pageSize: 65536, dbSizePages: 3, pages: [page(1, 65536), page(3, 65536)] },
    ];
    for (const fields of cases) {
      const source = input(fields);
      const { bytes, changeset } = encodeChangeset(source, { codec: 'none' });
      const expected = reference.pack({
        v: 1,
        db: source.db,
        epoch: wide(source.epoch),
        seq: wide(source.seq),
        commitTimeMs: wide(source.commitTimeMs),
        prevChecksum: source.prevChecksum,
        checksum: changeset.checksum,
        pageSize: source.pageSize,
        dbSizePages: source.dbSizePages,
        pages: source.pages.map(({ pgno, data }) => [pgno, data]),
      });
      expect(Buffer.from(bytes.subarray(HEADER_BYTES)).equals(Buffer.from(expected))).toBe(true);
    }
  });

  it('hands back copies, not views into the input', () => {
    const { bytes } = encodeChangeset(input(), { codec: 'none' });
    const decoded = decodeChangeset(bytes);
    const before = decoded.pages.map((p) => Buffer.from(p.data));
    const checksumBefore = Buffer.from(decoded.checksum);
    bytes.fill(0xee, HEADER_BYTES);
    decoded.pages.forEach((p, i) => {
      expect(p.data.buffer).not.toBe(bytes.buffer);
      expect(Buffer.compare(p.data, before[i] as Buffer)).toBe(0);
    });
    expect(Buffer.compare(decoded.checksum, checksumBefore)).toBe(0);
  });

  it('keeps integers exact up to Number.MAX_SAFE_INTEGER', () => {
    const source = input({
      epoch: Number.MAX_SAFE_INTEGER,
      seq: 2 ** 32 + 1,
      commitTimeMs: 0,
      dbSizePages: 4294967294,
      pages: [page(4294967294, 4096)],
    });
    expectSameContent(decodeChangeset(encodeChangeset(source).bytes), source);
  });
});

describe('checksum', () => {
  it('is SHA-256 over prevChecksum and a length-prefixed serialization of the content', () => {
    const source = input({ db: 'zürich', prevChecksum: new Uint8Array(32).fill(7) });
    const { changeset } = encodeChangeset(source);
    // Independent restatement of the documented layout: pins the format across versions.
    const db = Buffer.from(source.db, 'utf8');
    const header = Buffer.alloc(44);
    header.writeUInt32BE(CHANGESET_VERSION, 0);
    header.writeUInt32BE(db.length, 4);
    header.writeBigUInt64BE(BigInt(source.epoch), 8);
    header.writeBigUInt64BE(BigInt(source.seq), 16);
    header.writeBigUInt64BE(BigInt(source.commitTimeMs), 24);
    header.writeUInt32BE(source.pageSize, 32);
    header.writeUInt32BE(source.dbSizePages, 36);
    header.writeUInt32BE(source.pages.length, 40);
    const hash = createHash('sha256').update(source.prevChecksum);
    hash.update(header.subarray(0, 40)).update(db).update(header.subarray(40));
    for (const { pgno, data } of source.pages) {
      const pageHeader = Buffer.alloc(8);
      pageHeader.writeUInt32BE(pgno, 0);
      pageHeader.writeUInt32BE(data.length, 4);
      hash.update(pageHeader).update(data);
    }
    expect(Buffer.from(changeset.checksum).toString('hex')).toBe(hash.digest('hex'));
  });

  it('does not depend on the codec', () => {
    const [a, b] = CODECS.map((codec) => encodeChangeset(input(), { codec }).changeset.checksum);
    expect(checksumsEqual(a as Uint8Array, b as Uint8Array)).toBe(true);
  });

  it('changes with every content field', () => {
    const base = encodeChangeset(input()).changeset.checksum;
    const variants: Partial<ChangesetInput>[] = [
      { db: 'orderz' },
      { epoch: 4 },
      { seq: 2 },
      { commitTimeMs: 1_700_000_000_124 },
      { prevChecksum: new Uint8Array(32).fill(1) },
      { dbSizePages: 11 },
      { pages: [page(1, 4096), page(4, 4096)] },
      { pages: [page(1, 4096), page(5, 4096), page(10, 4096)] },
      { pages: [page(1, 4096), page(4, 4096, 99), page(10, 4096)] },
      { pageSize: 512, pages: [] },
    ];
    for (const fields of variants) {
      expect(checksumsEqual(encodeChangeset(input(fields)).changeset.checksum, base)).toBe(false);
    }
  });

  it('chains: each link is accepted after the one before', () => {
    const first = encodeChangeset(input({ seq: 1, prevChecksum: GENESIS_CHECKSUM }));
    const second = encodeChangeset(
      input({ seq: 2, prevChecksum: first.changeset.checksum, pages: [page(2, 4096, 5)] }),
    );
    const one = decodeChangeset(first.bytes, {
      db: 'orders',
      pageSize: 4096,
      seq: 1,
      prevChecksum: GENESIS_CHECKSUM,
    });
    const two = decodeChangeset(second.bytes, {
      db: 'orders',
      pageSize: 4096,
      seq: 2,
      prevChecksum: one.checksum,
    });
    expect(checksumsEqual(two.prevChecksum, one.checksum)).toBe(true);
    expect(checksumsEqual(two.checksum, second.changeset.checksum)).toBe(true);
  });

  it('checksumsEqual compares bytes and lengths', () => {
    expect(checksumsEqual(new Uint8Array([1, 2]), Buffer.from([1, 2]))).toBe(true);
    expect(checksumsEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(checksumsEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 0]))).toBe(false);
  });
});

const pageSizes = fc.constantFrom(512, 1024, 4096);
const changesetInputs = pageSizes
  .chain((pageSize) =>
    fc.record({
      db: fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }),
      epoch: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      commitTimeMs: fc.maxSafeNat(),
      prevChecksum: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      pageSize: fc.constant(pageSize),
      extraPages: fc.nat({ max: 1000 }),
      pages: fc.uniqueArray(
        fc.record({
          pgno: fc.integer({ min: 1, max: 5000 }),
          data: fc.uint8Array({ minLength: pageSize, maxLength: pageSize }),
        }),
        { selector: (p) => p.pgno, maxLength: 6 },
      ),
    }),
  )
  .map(({ extraPages, pages, ...rest }): ChangesetInput => {
    const sorted = [...pages].sort((a, b) => a.pgno - b.pgno);
    const maxPgno = sorted.at(-1)?.pgno ?? 1;
    return { ...rest, pages: sorted, dbSizePages: maxPgno + extraPages };
  });

describe('properties', () => {
  it('random changesets round trip exactly', () => {
    fc.assert(
      fc.property(changesetInputs, fc.constantFrom(...CODECS), (source, codec) => {
        const { bytes, changeset } = encodeChangeset(source, { codec });
        const decoded = decodeChangeset(bytes, {
          db: source.db,
          pageSize: source.pageSize,
          seq: source.seq,
          prevChecksum: source.prevChecksum,
        });
        expectSameContent(decoded, source);
        expect(checksumsEqual(decoded.checksum, changeset.checksum)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('any single bit flip anywhere is rejected', () => {
    fc.assert(
      fc.property(changesetInputs, fc.constantFrom(...CODECS), fc.nat(), (source, codec, seed) => {
        const { bytes } = encodeChangeset(source, { codec });
        rejection(() => decodeChangeset(flipBit(bytes, seed % (bytes.length * 8))));
      }),
      { numRuns: 300 },
    );
  });

  it('every bit flip in the frame header is rejected with the expected code', () => {
    for (const codec of CODECS) {
      const { bytes } = encodeChangeset(input({ pageSize: 512, pages: [page(1, 512)] }), { codec });
      for (let bit = 0; bit < HEADER_BYTES * 8; bit++) {
        const error = rejection(() => decodeChangeset(flipBit(bytes, bit)));
        const byte = bit >> 3;
        // A flip in the codec id that lands on another known codec leaves a body that fails to
        // decompress or parse: corrupt, not unknown.
        const flippedCodecKnown =
          byte === 5 && Object.values(CODEC_IDS).includes(CODEC_IDS[codec] ^ (1 << (bit & 7)));
        const expected =
          byte === 4 || (byte === 5 && !flippedCodecKnown)
            ? 'CHANGESET_UNKNOWN_VERSION'
            : 'CHANGESET_CORRUPT';
        expect(error.code, `bit ${bit}`).toBe(expected);
      }
    }
  });
});

describe('decodeChangeset rejects', () => {
  it('every truncation as corrupt', () => {
    for (const codec of CODECS) {
      const { bytes } = encodeChangeset(
        input({ pageSize: 512, dbSizePages: 2, pages: [page(2, 512)] }),
        { codec },
      );
      for (let length = 0; length < bytes.length; length++) {
        expectRejected(bytes.subarray(0, length), 'CHANGESET_CORRUPT');
      }
    }
  });

  it('trailing bytes as corrupt', () => {
    const { bytes } = encodeChangeset(input());
    expectRejected(Buffer.concat([bytes, new Uint8Array([0])]), 'CHANGESET_CORRUPT');
  });

  it('a body length larger than the input or the limit as corrupt', () => {
    const { bytes } = encodeChangeset(input());
    for (const length of [bytes.length, MAX_CHANGESET_BODY_BYTES + 1, 0xffffffff]) {
      const lying = bytes.slice();
      new DataView(lying.buffer).setUint32(6, length);
      expectRejected(lying, 'CHANGESET_CORRUPT');
    }
  });

  it('bad magic as corrupt', () => {
    const { bytes } = encodeChangeset(input());
    const other = bytes.slice();
    other.set(Buffer.from('SQLi'), 0);
    expect(expectRejected(other, 'CHANGESET_CORRUPT').message).toMatch(/magic/);
  });

  it('frame version 9 as an unknown version', () => {
    const { bytes } = encodeChangeset(input());
    const future = bytes.slice();
    future[4] = 9;
    expect(expectRejected(future, 'CHANGESET_UNKNOWN_VERSION').message).toMatch(/frame version 9/);
    // Even when the rest would not fit this version's header.
    expectRejected(future.subarray(0, 5), 'CHANGESET_UNKNOWN_VERSION');
  });

  it('an unknown codec id as an unknown version', () => {
    const body = encodeChangeset(input(), { codec: 'none' }).bytes.subarray(HEADER_BYTES);
    expect(expectRejected(frame(body, 3), 'CHANGESET_UNKNOWN_VERSION').message).toMatch(
      /codec id 3/,
    );
  });

  it('body version 3 as an unknown version', () => {
    expect(expectRejected(withBody({ v: 3 }), 'CHANGESET_UNKNOWN_VERSION').message).toMatch(
      /changeset version 3/,
    );
  });

  it('a body that does not decompress, or is not msgpack, as corrupt', () => {
    expectRejected(frame(new Uint8Array([0xff, 0xff, 0xff]), 1), 'CHANGESET_CORRUPT');
    expectRejected(frame(new Uint8Array([0xff, 0xff, 0xff]), 2), 'CHANGESET_CORRUPT');
    expectRejected(frame(new Uint8Array([0xc1]), 0), 'CHANGESET_CORRUPT');
    expectRejected(frame(new Uint8Array([0x92, 0x01]), 0), 'CHANGESET_CORRUPT');
    expectRejected(frame(testPackr.pack([1, 2])), 'CHANGESET_CORRUPT');
    expectRejected(frame(testPackr.pack('HADB')), 'CHANGESET_CORRUPT');
    expectRejected(frame(testPackr.pack(new Date(0))), 'CHANGESET_CORRUPT');
    expectRejected(frame(testPackr.pack(new Map([['v', 1]]))), 'CHANGESET_CORRUPT');
    expectRejected(withBody({}, ['v']), 'CHANGESET_CORRUPT');
    expectRejected(withBody({ v: '1' }), 'CHANGESET_CORRUPT');
  });

  it('missing, mistyped or extra fields as corrupt', () => {
    const cases: [Record<string, unknown>, string[]][] = [
      [{}, ['db']],
      [{}, ['checksum']],
      [{}, ['pages']],
      [{ db: 7 }, []],
      [{ db: '' }, []],
      [{ epoch: 0 }, []],
      [{ seq: '1' }, []],
      [{ seq: 1.5 }, []],
      [{ commitTimeMs: -1 }, []],
      [{ pageSize: 1000 }, []],
      [{ dbSizePages: 0 }, []],
      [{ checksum: new Uint8Array(31) }, []],
      [{ prevChecksum: 'x'.repeat(32) }, []],
      [{ pages: {} }, []],
      [{ pages: [[1]] }, []],
      [{ pages: [[1, 'x'.repeat(4096)]] }, []],
      [{ extra: 1 }, []],
    ];
    for (const [fields, remove] of cases) {
      expectRejected(withBody(fields, remove), 'CHANGESET_CORRUPT');
    }
  });

  it('pages out of order, beyond the database or of the wrong length as corrupt', () => {
    const { data } = page(1, 4096);
    for (const pages of [
      [
        [4, data],
        [1, data],
      ],
      [
        [4, data],
        [4, data],
      ],
      [[0, data]],
      [[11, data]],
      [[1, data.subarray(0, 4095)]],
    ]) {
      expectRejected(withBody({ pages }), 'CHANGESET_CORRUPT');
    }
  });

  it('a page changed behind a recomputed CRC as a checksum mismatch', () => {
    for (const codec of CODECS) {
      const { bytes } = encodeChangeset(input(), { codec });
      const body = unpackBody(bytes);
      const pages = body.pages as [number, Uint8Array][];
      const data = (pages[1] as [number, Uint8Array])[1];
      data[100] = (data[100] as number) ^ 1;
      const packed = testPackr.pack(body);
      const tampered = codec === 'none' ? frame(packed, 0) : frame(deflateRawSync(packed), 1);
      expect(expectRejected(tampered, 'CHANGESET_CHECKSUM_MISMATCH').message).toMatch(/seq 1/);
    }
  });

  it('a changed header field behind a recomputed CRC as a checksum mismatch', () => {
    for (const fields of [
      { seq: 2 },
      { db: 'other' },
      { prevChecksum: new Uint8Array(32).fill(9) },
    ]) {
      expectRejected(withBody(fields), 'CHANGESET_CHECKSUM_MISMATCH');
    }
  });

  it('a changeset of another database', () => {
    const { bytes } = encodeChangeset(input({ db: 'invoices' }));
    expect(expectRejected(bytes, 'CHANGESET_WRONG_DATABASE', { db: 'orders' }).message).toMatch(
      /"invoices".*"orders"/,
    );
  });

  it('a page size other than expected', () => {
    const { bytes } = encodeChangeset(input({ pageSize: 65536, pages: [page(1, 65536)] }));
    expectRejected(bytes, 'CHANGESET_WRONG_PAGE_SIZE', { pageSize: 4096 });
    expect(decodeChangeset(bytes, { pageSize: 65536 }).pageSize).toBe(65536);
  });

  it('a replayed old changeset as a broken chain', () => {
    const first = encodeChangeset(input({ seq: 1 }));
    const error = expectRejected(first.bytes, 'CHANGESET_CHAIN_BROKEN', {
      seq: 2,
      prevChecksum: first.changeset.checksum,
    });
    expect(error.message).toMatch(/seq 1.*seq 2/);
    const byChecksum = expectRejected(first.bytes, 'CHANGESET_CHAIN_BROKEN', {
      prevChecksum: first.changeset.checksum,
    });
    expect(byChecksum.message).toContain(Buffer.from(first.changeset.checksum).toString('hex'));
  });

  it('a fork: the right seq on top of another history', () => {
    const first = encodeChangeset(input({ seq: 1 }));
    const fork = encodeChangeset(input({ seq: 2, prevChecksum: new Uint8Array(32).fill(0xab) }));
    const error = expectRejected(fork.bytes, 'CHANGESET_CHAIN_BROKEN', {
      seq: 2,
      prevChecksum: first.changeset.checksum,
    });
    expect(error.message).toContain('ab'.repeat(32));
  });

  it('a malformed expectation as an invalid argument', () => {
    const { bytes } = encodeChangeset(input());
    expect(() => decodeChangeset(bytes, { prevChecksum: new Uint8Array(4) })).toThrow(
      InvalidArgumentError,
    );
  });
});

describe('encodeChangeset rejects invalid input', () => {
  const cases: [string, Partial<ChangesetInput>][] = [
    ['page size not a power of two', { pageSize: 1000, pages: [] }],
    ['page size too small', { pageSize: 256, pages: [] }],
    ['page size too large', { pageSize: 131072, pages: [] }],
    ['page of the wrong length', { pages: [page(1, 512)] }],
    ['page data not bytes', { pages: [{ pgno: 1, data: 'x'.repeat(4096) as never }] }],
    ['pgno 0', { pages: [page(0, 4096)] }],
    ['fractional pgno', { pages: [page(1.5, 4096)] }],
    ['descending pgnos', { pages: [page(4, 4096), page(2, 4096)] }],
    ['duplicate pgnos', { pages: [page(4, 4096), page(4, 4096)] }],
    ['pgno beyond dbSizePages', { dbSizePages: 3, pages: [page(4, 4096)] }],
    ['dbSizePages 0', { dbSizePages: 0, pages: [] }],
    ['seq 0', { seq: 0 }],
    ['epoch 0', { epoch: 0 }],
    ['unsafe seq', { seq: 2 ** 53 }],
    ['negative commit time', { commitTimeMs: -1 }],
    ['short prevChecksum', { prevChecksum: new Uint8Array(31) }],
    ['empty db', { db: '' }],
    ['lone surrogate in db', { db: 'a\ud800' }],
  ];
  for (const [name, fields] of cases) {
    it(name, () => {
      const run = () => encodeChangeset(input(fields));
      expect(run).toThrow(InvalidArgumentError);
      expect(run).toThrow(/^INVALID_ARGUMENT: /);
    });
  }

  it('an unknown codec or compression level', () => {
    expect(() => encodeChangeset(input(), { codec: 'zstd' as ChangesetCodec })).toThrow(
      InvalidArgumentError,
    );
    expect(() => encodeChangeset(input(), { codec: 'deflate-raw', level: 10 })).toThrow(
      InvalidArgumentError,
    );
    expect(() => encodeChangeset(input(), { codec: 'brotli', level: 12 })).toThrow(
      InvalidArgumentError,
    );
    expect(() => encodeChangeset(input(), { codec: 'brotli', level: -1 })).toThrow(
      InvalidArgumentError,
    );
    expect(encodeChangeset(input(), { codec: 'brotli', level: 11 }).bytes[5]).toBe(2);
  });
});
