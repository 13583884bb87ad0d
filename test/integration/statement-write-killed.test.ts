import { statSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { rowsInStorage, testClusters, waitFor } from './support/nodes.ts';

// A client write killed at the time limit has already written frames to the leader's WAL (its
// page cache spilled): they lie past the last commit, where capture never reads, and the next
// commit overwrites them. Storage, the follower's copy and later commits stay right.

const cluster = testClusters('hadb-statement-write-killed-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
/** 2 GB of new pages, far more than a 64 KiB page cache holds: they spill to the WAL. */
const BIG_INSERT =
  'insert into t(v) with recursive c(x) as (select 1 union all select x + 1 from c where x < 1000000) select randomblob(2000) from c';

describe('a client write killed at the time limit', () => {
  test('leaves its spilled frames uncommitted: storage, the copy and later commits are right', async () => {
    const c = cluster();
    const options = { statements: { timeoutMs: 1000 }, pageCacheBytes: 64 * 1024 };
    const a = await c.start('a', options);
    const leader = await a.open('db', { schema: SCHEMA });
    const b = await c.start('b', options);
    const follower = await b.open('db', { schema: SCHEMA });
    await leader.ready({ writable: true });
    expect(follower.role).toBe('follower');
    await leader.execute('insert into t(v) values (?)', ['before'], { durability: 'replicated' });
    const leaderWal = `${path.join(c.dir, 'nodes', 'a', 'db.db')}-wal`;
    const walBefore = statSync(leaderWal).size;

    const killed = await leader.execute(BIG_INSERT, [], { isolated: true }).then(
      () => null,
      (error: unknown) => error,
    );
    expect(killed).toMatchObject({ code: 'STATEMENT_TIMEOUT' });
    // The killed write did reach the WAL.
    expect(statSync(leaderWal).size).toBeGreaterThan(walBefore + 1024 * 1024);

    // Later commits, in a statement process, forwarded and in-process, each shipped.
    await leader.execute('insert into t(v) values (?)', ['isolated'], {
      isolated: true,
      durability: 'replicated',
    });
    await follower.execute('insert into t(v) values (?)', ['forwarded'], {
      durability: 'replicated',
    });
    const { token } = await leader.execute('insert into t(v) values (?)', ['embedded'], {
      durability: 'replicated',
    });
    expect(leader.role).toBe('leader');
    await waitFor(() => follower.position.seq >= token.seq, 10_000, 'the follower to catch up');
    const rows = await leader.all('select id, v from t order by id');
    expect(rows.map((row) => row.v)).toEqual(['before', 'isolated', 'forwarded', 'embedded']);
    expect(await follower.all('select id, v from t order by id')).toEqual(rows);
    expect(await rowsInStorage(c, 'db')).toEqual(rows);
    // The follower's copy is a sound file too.
    const copy = new Database(path.join(c.dir, 'nodes', 'b', 'db.db'), { readonly: true });
    try {
      expect(copy.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      copy.close();
    }
  }, 60_000);
});
