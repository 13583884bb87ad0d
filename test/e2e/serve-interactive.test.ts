import { describe, expect, test } from 'vitest';
import { HadbError, NotLeaderError, SqlError, TimeoutError } from '../../src/errors.ts';
import { testClusters, waitFor } from '../integration/support/nodes.ts';

// The leader side of `hadb serve`'s interactive transactions, in process: `db.begin()`.

const cluster = testClusters('hadb-interactive-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';

async function leaderAndFollower() {
  const c = cluster();
  const a = await c.start('a', { forwardTimeoutMs: 3000 });
  const leader = await a.open('db', { schema: SCHEMA });
  const b = await c.start('b', { forwardTimeoutMs: 3000 });
  const follower = await b.open('db', { schema: SCHEMA });
  expect(leader.role).toBe('leader');
  return { a, leader, follower };
}

async function ids(db: { all: (sql: string) => Promise<Record<string, unknown>[]> }) {
  return (await db.all('select id from t order by id')).map((row) => Number(row.id));
}

describe('interactive transactions on the leader (db.begin)', () => {
  test('hold the writer: local and forwarded writes wait, then land after the commit', async () => {
    const { leader, follower } = await leaderAndFollower();
    const tx = await leader.begin();
    tx.run({ sql: 'insert into t(id, v) values (1, ?)', params: ['tx'] }, false);
    // Uncommitted: the leader's own readers do not see it.
    expect(await ids(leader)).toEqual([]);
    const order: string[] = [];
    const local = leader.execute('insert into t(id, v) values (2, ?)', ['local']).then(() => {
      order.push('local');
    });
    const forwarded = follower
      .execute('insert into t(id, v) values (3, ?)', ['forwarded'])
      .then(() => {
        order.push('forwarded');
      });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(order).toEqual([]);
    const token = await tx.commit();
    order.push('commit');
    expect(token?.seq).toBeGreaterThan(0);
    await Promise.all([local, forwarded]);
    expect(order[0]).toBe('commit');
    expect(await ids(leader)).toEqual([1, 2, 3]);
    // The commit was durable when acknowledged: the follower reaches it from storage.
    await waitFor(async () => (await ids(follower)).length === 3, 5000, 'the follower');
  });

  test('a second transaction waits its turn, bounded; rollback applies nothing', async () => {
    const { leader } = await leaderAndFollower();
    const first = await leader.begin();
    first.run({ sql: 'insert into t(id) values (10)' }, false);
    await expect(leader.begin({ waitMs: 200 })).rejects.toBeInstanceOf(TimeoutError);
    const second = leader.begin({ waitMs: 5000 });
    first.rollback();
    const tx = await second;
    tx.run({ sql: 'insert into t(id) values (11)' }, false);
    // SQLite's own errors leave the transaction open, as on a plain connection.
    expect(() => tx.run({ sql: 'insert into t(id) values (11)' }, false)).toThrow(SqlError);
    await tx.commit();
    expect(await ids(leader)).toEqual([11]);
    // Ended: further use says so.
    expect(() => tx.run({ sql: 'select 1' }, false)).toThrow(HadbError);
  });

  test('only on the leader; a demotion rolls open transactions back', async () => {
    const { a, leader, follower } = await leaderAndFollower();
    await expect(follower.begin({ waitMs: 100 })).rejects.toBeInstanceOf(NotLeaderError);
    const tx = await leader.begin();
    tx.run({ sql: 'insert into t(id) values (20)' }, false);
    leader.handoff();
    await waitFor(() => !tx.open, 5000, 'the transaction to end');
    await expect(tx.commit()).rejects.toThrow(/stopped leading/);
    await waitFor(() => follower.role === 'leader', 10_000, 'the follower to take over');
    await follower.execute('insert into t(id) values (21)');
    expect(await ids(follower)).toEqual([21]);
    await a.close();
  });
});
