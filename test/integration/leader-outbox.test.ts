import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteFollower } from '../../src/adapters/replication/sqlite/follower.ts';
import { SqliteLeader } from '../../src/adapters/replication/sqlite/leader.ts';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { GENESIS_CHECKSUM } from '../../src/wire/changeset.ts';
import { expectSamePages, tempDirs, withReadOnly } from './support/replication.ts';

const freshDir = tempDirs('hadb-outbox-');
const fixture = path.resolve(import.meta.dirname, 'fixtures/outbox-leader.ts');

describe('leader outbox: commits captured before a checkpoint survive a crash', () => {
  it('a killed leader resumes from its outbox and the restarted WAL, losing no commit', async () => {
    const dir = freshDir('crash');
    const child = spawnSync(process.execPath, ['--import', 'tsx', fixture, dir], {
      cwd: path.resolve(import.meta.dirname, '../..'),
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(child.signal).toBe('SIGKILL');
    const { rows } = JSON.parse(child.stdout.trim()) as { rows: number };
    expect(rows).toBe(80);
    expect(fs.existsSync(path.join(dir, 'leader.db-hadb-outbox'))).toBe(true);

    const storage = createFsStorage({ root: path.join(dir, 'bucket') });
    const leader = await SqliteLeader.open({
      path: path.join(dir, 'leader.db'),
      db: 'app',
      storage,
      prefix: 'p',
      epoch: 1,
      position: { seq: 0, checksum: GENESIS_CHECKSUM },
    });
    expect(leader.database.prepare('SELECT count(*) AS c FROM items').get()).toEqual({ c: rows });
    await leader.flush();
    const followerPath = path.join(dir, 'follower.db');
    const follower = await SqliteFollower.open({
      path: followerPath,
      db: 'app',
      storage,
      prefix: 'p',
    });
    await follower.pull();
    follower.close();
    const count = withReadOnly(followerPath, (db) =>
      db.prepare('SELECT count(*) AS c FROM items').get(),
    );
    expect(count).toEqual({ c: rows });
    expectSamePages(leader.database.serialize(), followerPath);
    await leader.close();
    expect(fs.existsSync(path.join(dir, 'leader.db-hadb-outbox'))).toBe(false);
  });
});
