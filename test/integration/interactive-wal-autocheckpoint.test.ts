import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { InteractiveTransaction } from '../../src/statements/interactive.ts';
import { expectFollowerMatches, openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-interactive-autocheckpoint-');

describe("an interactive transaction's connection never checkpoints", () => {
  it('a commit of more than 1000 WAL pages leaves the database file as the leader last checkpointed it', async () => {
    const dir = freshDir('large-commit');
    const file = path.join(dir, 'leader.db');
    const storage = createMemoryStorage();
    const leader = await openNewLeader({ path: file, db: 'app', storage, prefix: 'p' });
    try {
      leader.database.exec('create table items(id integer primary key, body blob)');
      await leader.flush();
      const tx = new InteractiveTransaction(file, false, {
        mayCommit: () => true,
        durable: async () => {
          const { epoch, seq } = await leader.flush();
          return { epoch, seq };
        },
        ended: () => {},
      });
      // About 1500 pages: past SQLite's default autocheckpoint threshold of 1000.
      for (let i = 0; i < 1500; i++) {
        tx.run({ sql: 'insert into items(body) values (zeroblob(4000))' }, false);
      }
      const before = fs.statSync(file).size;
      const committed = tx.commit();
      // Measured as COMMIT returns, before the leader's capture and its own checkpoint run.
      const after = fs.statSync(file).size;
      await committed;
      expect(after).toBe(before);
      await expectFollowerMatches(leader, storage, {
        dir,
        db: 'app',
        prefix: 'p',
        table: 'items',
        rows: 1500,
      });
    } finally {
      await leader.close();
    }
  });
});
