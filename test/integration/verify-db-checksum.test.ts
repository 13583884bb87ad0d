import { describe, expect, it } from 'vitest';
import { verifyDatabase } from '../../src/cli/commands/verify.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import { tempDirs } from './support/replication.ts';
import {
  DB,
  PREFIX,
  replaceSnapshotImage,
  resealAltered,
  storedHistory,
} from './support/tampering.ts';

const freshDir = tempDirs('hadb-verify-db-checksum-');
const quiet = { write: () => true, isTTY: false } as never;

describe('hadb verify checks the database checksum', () => {
  it('of every changeset of an intact log, and a restore of it', async () => {
    const { storage, leader, lastSeq } = await storedHistory(freshDir('leader'));
    const report = await verifyDatabase(storage, PREFIX, DB, {
      images: true,
      restore: true,
      progressStream: quiet,
    });
    expect(report.problem).toBeNull();
    expect(report.dbChecksumsChecked).toBe(lastSeq);
    expect(report.restoreChecked).toBe(true);
    await leader.close();
  });

  it('reports a changeset altered and sealed again as DATABASE_DIVERGED at its seq', async () => {
    const { storage, leader, lastSeq } = await storedHistory(freshDir('leader'));
    await resealAltered(storage, lastSeq);
    const report = await verifyDatabase(storage, PREFIX, DB, {
      images: false,
      progressStream: quiet,
    });
    expect(report.problem).toMatchObject({ seq: lastSeq, code: 'DATABASE_DIVERGED' });
    await leader.close();
  });

  it('reports a snapshot image that is not the database the log records at its seq', async () => {
    const { storage, leader, snapshotSeq } = await storedHistory(freshDir('leader'));
    await replaceSnapshotImage(storage, snapshotSeq, freshDir('scratch'));
    const report = await verifyDatabase(storage, PREFIX, DB, {
      images: true,
      progressStream: quiet,
    });
    expect(report.problem).toMatchObject({ seq: snapshotSeq, code: 'DATABASE_DIVERGED' });
    await leader.close();
  });

  it('with --restore, finds a bad snapshot image below which the log was compacted', async () => {
    const { storage, leader, snapshotSeq } = await storedHistory(freshDir('leader'));
    await replaceSnapshotImage(storage, snapshotSeq, freshDir('scratch'));
    await storage.delete(Array.from({ length: snapshotSeq }, (_, i) => logKey(PREFIX, DB, i + 1)));
    // Nothing in the log can vouch for the image any more; its manifest agrees with it.
    const logOnly = await verifyDatabase(storage, PREFIX, DB, {
      images: true,
      progressStream: quiet,
    });
    expect(logOnly.problem).toBeNull();
    const restored = await verifyDatabase(storage, PREFIX, DB, {
      images: false,
      restore: true,
      progressStream: quiet,
    });
    expect(restored.problem).toMatchObject({ seq: snapshotSeq + 1, code: 'DATABASE_DIVERGED' });
    await leader.close();
  });
});
