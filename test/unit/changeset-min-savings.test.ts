import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/errors.ts';
import {
  type Changeset,
  type ChangesetCodec,
  decodeChangeset,
  encodeChangeset,
  GENESIS_CHECKSUM,
} from '../../src/wire/changeset.ts';

const PAGE_SIZE = 4096;
const CODEC_AT = 5;
const CODEC_IDS: Record<ChangesetCodec, number> = { none: 0, 'deflate-raw': 1, brotli: 2 };

/** `count` pages; `randomShare` of each page random bytes, the rest one repeated byte. */
function changeset(count: number, randomShare: number): Omit<Changeset, 'checksum' | 'version'> {
  const pages = Array.from({ length: count }, (_, i) => {
    const data = new Uint8Array(PAGE_SIZE).fill(7);
    data.set(randomBytes(Math.round(PAGE_SIZE * randomShare)));
    return { pgno: i + 1, data };
  });
  return {
    db: 'orders',
    epoch: 1,
    seq: 1,
    commitTimeMs: 1_700_000_000_000,
    prevChecksum: GENESIS_CHECKSUM,
    pageSize: PAGE_SIZE,
    dbSizePages: count,
    pages,
  };
}

function codecOf(bytes: Uint8Array): number | undefined {
  return bytes[CODEC_AT];
}

function expectDecodesTo(bytes: Uint8Array, source: ReturnType<typeof changeset>): void {
  const decoded = decodeChangeset(bytes);
  expect(decoded.pages.map(({ pgno }) => pgno)).toEqual(source.pages.map(({ pgno }) => pgno));
  decoded.pages.forEach(({ data }, i) => {
    expect(Buffer.compare(data, source.pages[i]?.data ?? new Uint8Array())).toBe(0);
  });
}

describe('minSavings: compression only where it saves enough', () => {
  // 64 pages (256 KiB) are judged on a sample; 3 pages are judged whole.
  for (const count of [64, 3]) {
    it(`ships random pages uncompressed, compressible ones compressed (${count} pages)`, () => {
      const random = changeset(count, 1);
      const light = encodeChangeset(random, { minSavings: 1 / 3 });
      expect(codecOf(light.bytes)).toBe(CODEC_IDS.none);
      expectDecodesTo(light.bytes, random);
      // Without it, the same pages are compressed as before.
      expect(codecOf(encodeChangeset(random).bytes)).toBe(CODEC_IDS.brotli);

      const compressible = changeset(count, 0.1);
      const packed = encodeChangeset(compressible, { minSavings: 1 / 3 });
      expect(codecOf(packed.bytes)).toBe(CODEC_IDS.brotli);
      expect(packed.bytes.length).toBeLessThan(count * PAGE_SIZE * 0.3);
      expectDecodesTo(packed.bytes, compressible);
    });
  }

  it('compares what a sample saves with the fraction asked for', () => {
    // Half of each page random: compression saves about half.
    const half = changeset(64, 0.5);
    for (const codec of ['brotli', 'deflate-raw'] as const) {
      expect(codecOf(encodeChangeset(half, { codec, minSavings: 0.3 }).bytes)).toBe(
        CODEC_IDS[codec],
      );
      const none = encodeChangeset(half, { codec, minSavings: 0.7 }).bytes;
      expect(codecOf(none)).toBe(CODEC_IDS.none);
      expectDecodesTo(none, half);
    }
  });

  it('rejects a fraction outside 0 to 1', () => {
    for (const minSavings of [-0.1, 1.5, Number.NaN]) {
      expect(() => encodeChangeset(changeset(1, 1), { minSavings })).toThrow(InvalidArgumentError);
    }
  });
});
