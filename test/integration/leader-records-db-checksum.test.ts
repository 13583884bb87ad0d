import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import { SqliteLeader } from '../../src/replication/sqlite/leader.ts';
import { hashDatabaseFile } from '../../src/replication/sqlite/page-hashes.ts';
import { readCommittedFrames } from '../../src/replication/sqlite/wal.ts';
import { decodeChangeset } from '../../src/wire/changeset.ts';
import { openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-leader-db-checksum-');

/** The leader's database as SQLite sees it: the file with the committed WAL frames over it. */
function checksumOfLeaderFile(file: string): bigint {
  const frames = readCommittedFrames(`${file}-wal`, null);
  const pageSize = frames?.cursor.pageSize ?? 4096;
  const dbSizePages = frames?.dbSizePages ?? Math.floor(fs.statSync(file).size / pageSize);
  return hashDatabaseFile(file, pageSize, dbSizePages, frames?.pages).checksum;
}

describe('a leader', () => {
  it('records in every changeset the checksum of its database after it, on and off the worker, across a restart', async () => {
    const storage = createMemoryStorage();
    const file = path.join(freshDir('leader'), 'leader.db');
    const options = { path: file, db: 'app', storage, prefix: 'p', workerCaptureBytes: 64 * 1024 };
    let leader = await openNewLeader(options);
    leader.database.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)');
    const insert = (from: number, count: number, size: number) => {
      const statement = leader.database.prepare('INSERT OR REPLACE INTO t VALUES (?, ?)');
      leader.database.transaction(() => {
        for (let i = from; i < from + count; i++) statement.run(i, Buffer.alloc(size, i % 251));
      })();
    };
    const check = async (seq: number) => {
      const changeset = decodeChangeset((await storage.get(logKey('p', 'app', seq))) as Uint8Array);
      expect(changeset.dbChecksum).toBe(checksumOfLeaderFile(file));
    };
    // Small captures on this thread, a large one on the worker, deletes that shrink the file.
    for (const [from, count, size] of [
      [0, 10, 100],
      [5, 400, 900],
      [10, 3, 50],
    ] as const) {
      insert(from, count, size);
      await check((await leader.flush()).seq);
    }
    leader.database.exec('DELETE FROM t WHERE id > 20; VACUUM');
    await check((await leader.flush()).seq);
    await leader.close();

    // A restart rebuilds the page hashes from the file at its first capture.
    leader = await SqliteLeader.open({ ...options, epoch: 1, position: leader.position });
    insert(1000, 5, 3000);
    await check((await leader.flush()).seq);
    await leader.close();
  });
});
