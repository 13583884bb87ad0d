import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DatabaseDivergedError } from '../../src/errors.ts';
import { restoreDatabase } from '../../src/replication/restore.ts';
import { dbChecksumHex } from '../../src/wire/db-checksum.ts';
import { rejection, tempDirs } from './support/replication.ts';
import {
  DB,
  PREFIX,
  replaceSnapshotImage,
  resealAltered,
  storedHistory,
} from './support/tampering.ts';

const freshDir = tempDirs('hadb-restore-db-checksum-');

describe('restore checks the database checksum', () => {
  it('of an intact history, and returns it', async () => {
    const { storage, leader } = await storedHistory(freshDir('leader'));
    const destPath = path.join(freshDir('out'), 'restored.db');
    const result = await restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath });
    const { dbChecksum } = leader.position;
    expect(dbChecksum).toBeDefined();
    expect(result.dbChecksum).toBe(dbChecksumHex(dbChecksum as bigint));
    await leader.close();
  });

  it('fails with DATABASE_DIVERGED on a changeset altered and sealed again, writing nothing', async () => {
    const { storage, leader, lastSeq } = await storedHistory(freshDir('leader'));
    await resealAltered(storage, lastSeq);
    const destPath = path.join(freshDir('out'), 'restored.db');
    const error = await rejection(restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath }));
    expect(error).toBeInstanceOf(DatabaseDivergedError);
    expect((error as DatabaseDivergedError).seq).toBe(lastSeq);
    expect(fs.existsSync(destPath)).toBe(false);
    await leader.close();
  });

  it('fails with DATABASE_DIVERGED on a snapshot whose image is not the database at its seq', async () => {
    const { storage, leader, snapshotSeq } = await storedHistory(freshDir('leader'));
    await replaceSnapshotImage(storage, snapshotSeq, freshDir('scratch'));
    const destPath = path.join(freshDir('out'), 'restored.db');
    const error = await rejection(restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath }));
    expect(error).toBeInstanceOf(DatabaseDivergedError);
    expect((error as DatabaseDivergedError).seq).toBe(snapshotSeq);
    expect(fs.existsSync(destPath)).toBe(false);
    await leader.close();
  });
});
