import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { LineageAheadError } from '../../src/errors.ts';
import { SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import { openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-bootstrap-');

async function leaderWithSnapshot() {
  const dir = freshDir('cluster');
  const storage = createMemoryStorage();
  const common = { db: 'app', storage, prefix: 'p' };
  const leader = await openNewLeader({ ...common, path: path.join(dir, 'leader.db') });
  leader.database.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  leader.database.prepare('INSERT INTO t (v) VALUES (?)').run('a');
  await leader.flush();
  await leader.snapshot();
  return { dir, storage, common, leader };
}

describe('follower bootstrap from a snapshot', () => {
  it('leaves the copy in rollback-journal mode, so a reader opened at once sees later applies', async () => {
    const { dir, common, leader } = await leaderWithSnapshot();
    const followerPath = path.join(dir, 'follower.db');
    const follower = await SqliteFollower.open({ ...common, path: followerPath });
    expect([...fs.readFileSync(followerPath).subarray(18, 20)]).toEqual([1, 1]);
    const reader = new Database(followerPath, { readonly: true });
    expect(reader.pragma('journal_mode', { simple: true })).toBe('delete');
    const count = reader.prepare('SELECT count(*) AS c FROM t');
    expect(count.get()).toEqual({ c: 1 });
    leader.database.prepare('INSERT INTO t (v) VALUES (?)').run('b');
    await leader.flush();
    await follower.pull();
    expect(count.get()).toEqual({ c: 2 });
    reader.close();
    follower.close();
    await leader.close();
  });

  it('closes its file when opening fails, leaking no descriptor', async () => {
    const { dir, common, leader } = await leaderWithSnapshot();
    const followerPath = path.join(dir, 'follower.db');
    const follower = await SqliteFollower.open({ ...common, path: followerPath });
    await follower.pull();
    follower.close();
    await leader.close();
    const openFds = () => fs.readdirSync('/proc/self/fd').length;
    const before = openFds();
    for (let i = 0; i < 5; i++) {
      const empty = { ...common, storage: createMemoryStorage() };
      await expect(SqliteFollower.open({ ...empty, path: followerPath })).rejects.toBeInstanceOf(
        LineageAheadError,
      );
    }
    expect(openFds()).toBe(before);
  });
});
