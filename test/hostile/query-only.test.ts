import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRefused, hostileCluster, outcomes } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectWritesWork,
} from './support/expect.ts';

// Finding 3: PRAGMA query_only=1 from a client made every write fail until the database
// hibernated. A PRAGMA takes effect when prepared, so even a failing statement must not reach SQLite.

const cluster = hostileCluster('query-only');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

describe('hostile client: PRAGMA query_only', () => {
  it('refuses PRAGMA query_only=1 in every form, and writes keep working', async () => {
    const leader = cluster.client(await cluster.leaderOf('app'), 'app');
    const follower = cluster.client(await cluster.followerOf('app'), 'app');
    const tries = {
      'execute on the leader': () => leader.execute('PRAGMA query_only=1'),
      'write batch on the follower': () =>
        follower.batch(['PRAGMA query_only = ON', 'select 1'], 'write'),
      'read batch on the leader': () => leader.batch(['pragma QUERY_ONLY=true'], 'read'),
      'qualified, after a comment': () => leader.execute('/* x */ PRAGMA main.query_only=1'),
      'function form': () => leader.execute('select * from pragma_query_only(1)'),
    };
    const report = await cluster.underAttack(() => outcomes(tries));
    expect
      .soft(report.outcome)
      .toEqual({ ok: true, value: allRefused(tries, 'STATEMENT_REFUSED') });
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-query-only');
  }, 60_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
