import { createHash } from 'node:crypto';
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

  it('version 2 chain checksum: SHA-256 over prevChecksum, header, dbChecksum, then page digests', () => {
    const source = input(0xfeed_beefn);
    const { changeset } = encodeChangeset(source);
    // Independent restatement of the documented layout: pins the format.
    const db = Buffer.from(source.db, 'utf8');
    const header = Buffer.alloc(40);
    header.writeUInt32BE(DB_CHECKSUM_CHANGESET_VERSION, 0);
    header.writeUInt32BE(db.length, 4);
    header.writeBigUInt64BE(BigInt(source.epoch), 8);
    header.writeBigUInt64BE(BigInt(source.seq), 16);
    header.writeBigUInt64BE(BigInt(source.commitTimeMs), 24);
    header.writeUInt32BE(source.pageSize, 32);
    header.writeUInt32BE(source.dbSizePages, 36);
    const dbChecksum = Buffer.alloc(8);
    dbChecksum.writeBigUInt64BE(0xfeed_beefn, 0);
    const count = Buffer.alloc(4);
    count.writeUInt32BE(source.pages.length, 0);
    const hash = createHash('sha256').update(source.prevChecksum);
    hash.update(header).update(dbChecksum).update(db).update(count);
    for (const { pgno, data } of source.pages) {
      const pageHeader = Buffer.alloc(8);
      pageHeader.writeUInt32BE(pgno, 0);
      pageHeader.writeUInt32BE(data.length, 4);
      const pgnoBytes = pageHeader.subarray(0, 4);
      const digest = createHash('sha256').update(pgnoBytes).update(data).digest();
      hash.update(pageHeader).update(digest);
    }
    expect(Buffer.from(changeset.checksum).toString('hex')).toBe(hash.digest('hex'));
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
