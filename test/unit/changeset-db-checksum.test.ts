import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ChangesetError } from '../../src/errors.ts';
import {
  CHANGESET_VERSION,
  DB_CHECKSUM_CHANGESET_VERSION,
  decodeChangeset,
  encodeChangeset,
  GENESIS_CHECKSUM,
} from '../../src/wire/changeset.ts';

const page1 = new Uint8Array(4096).fill(3);

function input(dbChecksum?: bigint) {
  return {
    db: 'orders',
    epoch: 2,
    seq: 1,
    commitTimeMs: 1_700_000_000_000,
    prevChecksum: GENESIS_CHECKSUM,
    pageSize: 4096,
    dbSizePages: 1,
    pages: [{ pgno: 1, data: page1 }],
    ...(dbChecksum === undefined ? {} : { dbChecksum }),
  };
}

describe('the database checksum in a changeset', () => {
  it('round-trips as version 2, up to 2^64 - 1', () => {
    for (const value of [0n, 1n, 0x0123_4567_89ab_cdefn, (1n << 64n) - 1n]) {
      const decoded = decodeChangeset(encodeChangeset(input(value), { codec: 'none' }).bytes);
      expect(decoded.version).toBe(DB_CHECKSUM_CHANGESET_VERSION);
      expect(decoded.dbChecksum).toBe(value);
    }
  });

  it('is absent from a changeset written without it, which still reads as version 1', () => {
    const decoded = decodeChangeset(encodeChangeset(input()).bytes);
    expect(decoded.version).toBe(CHANGESET_VERSION);
    expect('dbChecksum' in decoded).toBe(false);
  });

  it('is covered by the chain checksum', () => {
    const a = encodeChangeset(input(5n)).changeset.checksum;
    const b = encodeChangeset(input(6n)).changeset.checksum;
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });

  it('a checksum changed in the stored bytes is rejected', () => {
    const { bytes } = encodeChangeset(input(0x1111_2222_3333_4444n), { codec: 'none' });
    const at = Buffer.from(bytes).indexOf(Buffer.from('1111222233334444', 'hex'));
    expect(at).toBeGreaterThan(0);
    const changed = Buffer.from(bytes);
    changed[at] = 0x12;
    // Fix the frame CRC so only the chain checksum can tell.
    changed.writeUInt32BE(crc32(changed.subarray(14)), 10);
    expect(() => decodeChangeset(changed)).toThrow(ChangesetError);
    try {
      decodeChangeset(changed);
    } catch (error) {
      expect((error as ChangesetError).code).toBe('CHANGESET_CHECKSUM_MISMATCH');
    }
  });

  it('out of range is refused at encode', () => {
    expect(() => encodeChangeset(input(1n << 64n))).toThrow(/dbChecksum/);
    expect(() => encodeChangeset(input(-1n))).toThrow(/dbChecksum/);
  });
});
