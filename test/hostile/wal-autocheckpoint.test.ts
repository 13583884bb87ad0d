import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostileCluster, writeLoad } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectRefused,
  expectWritesWork,
} from './support/expect.ts';

// Finding 1: `PRAGMA wal_autocheckpoint=N` forwarded to the leader's writer connection let
// SQLite checkpoint behind the capture; the follower's copy came out corrupt, verify said ok.

const cluster = hostileCluster('wal-autocheckpoint');
const LOAD_ROWS = 800;

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

describe('hostile client: PRAGMA wal_autocheckpoint', () => {
  it('is refused in a batch with an insert sent to the follower; write load after it is intact', async () => {
    const leader = cluster.client(await cluster.leaderOf('app'), 'app');
    const follower = cluster.client(await cluster.followerOf('app'), 'app');
    await leader.execute('create table load(id integer primary key, v blob)');
    const report = await cluster.underAttack(async () => {
      try {
        await follower.batch(
          ['PRAGMA wal_autocheckpoint=1000', 'insert into load(v) values (randomblob(100))'],
          'write',
        );
      } finally {
        // Write load on the leader either way: several MB of WAL, past any checkpoint threshold.
        await writeLoad(leader, LOAD_ROWS);
      }
    });
    expectRefused(report, 'STATEMENT_REFUSED');
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-wal-autocheckpoint');
    // Nothing of the refused batch ran: only the load's rows are there.
    expect(Number((await leader.execute('select count(*) as n from load')).rows[0]?.n)).toBe(
      LOAD_ROWS,
    );
  }, 90_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
