import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRefused, hostileCluster, outcomes } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectWritesWork,
} from './support/expect.ts';

// Finding 5: `drop table _hadb_requests` broke every forwarded write from then on. Statements
// that name hadb's own tables, or write SQLite's, are refused.

const cluster = hostileCluster('internal-tables');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

describe("hostile client: hadb's and SQLite's own tables", () => {
  it('refuses dropping or writing _hadb_requests and writing sqlite_* tables; forwarded writes keep working', async () => {
    const leader = cluster.client(await cluster.leaderOf('app'), 'app');
    const follower = cluster.client(await cluster.followerOf('app'), 'app');
    // A forwarded write first, so the requests table exists.
    await follower.execute('create table if not exists t(id integer primary key autoincrement, v)');
    await follower.execute("insert into t(v) values ('before')");
    const tries = {
      'drop via the follower': () => follower.execute('drop table _hadb_requests'),
      'drop on the leader, quoted and qualified': () =>
        leader.execute('DROP TABLE main."_hadb_requests"'),
      'delete in a write batch': () =>
        follower.batch(["insert into t(v) values ('x')", 'delete from _HADB_REQUESTS'], 'write'),
      'drop hidden after a statement': () =>
        leader.executeMultiple('select 1; /* */ drop table _hadb_requests;'),
      'read of the requests table': () => leader.execute('select * from _hadb_requests'),
      'create a _hadb_ table': () => leader.execute('create table _hadb_mine(x)'),
      'write sqlite_sequence': () => follower.execute('delete from sqlite_sequence'),
      'write sqlite_master': () =>
        leader.execute("update sqlite_master set sql = 'x' where name = 't'"),
    };
    const report = await cluster.underAttack(() => outcomes(tries));
    expect
      .soft(report.outcome)
      .toEqual({ ok: true, value: allRefused(tries, 'STATEMENT_REFUSED') });
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-internal-tables');
    // Nothing of the refused batch was applied.
    expect((await leader.execute('select v from t order by id')).rows.map((row) => row.v)).toEqual([
      'before',
    ]);
  }, 60_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
