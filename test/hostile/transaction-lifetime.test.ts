import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf, hostileCluster, sleep, TRANSACTION_LIFETIME_MS } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectWritesWork,
} from './support/expect.ts';

// Finding 5: an interactive transaction kept alive by `select 1` more often than the idle
// timeout held the writer forever. Transactions also get a maximum lifetime.

const cluster = hostileCluster('transaction-lifetime');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

/** How long past its lifetime the suite keeps trying before calling the transaction unbounded. */
const GRACE_MS = 4000;

describe('hostile client: an interactive transaction kept busy', () => {
  it('ends at its maximum lifetime with TRANSACTION_EXPIRED, rolled back, and the writer is free', async () => {
    const follower = cluster.client(await cluster.followerOf('app'), 'app');
    const other = cluster.client(await cluster.leaderOf('app'), 'app');
    await follower.execute('create table held(v text)');
    const report = await cluster.underAttack(async () => {
      const tx = await follower.transaction('write');
      const began = Date.now();
      let ended: string | null = null;
      try {
        await tx.execute("insert into held(v) values ('in the held transaction')");
        while (Date.now() - began < TRANSACTION_LIFETIME_MS + GRACE_MS) {
          await sleep(1000);
          await tx.execute('select 1');
        }
        await tx.commit();
        ended = 'committed';
      } catch (error) {
        ended = codeOf(error) ?? String(error);
      } finally {
        tx.close();
      }
      return { ended, afterMs: Date.now() - began };
    });
    expect
      .soft(report.outcome)
      .toMatchObject({ ok: true, value: { ended: 'TRANSACTION_EXPIRED' } });
    const afterMs = report.outcome.ok ? report.outcome.value.afterMs : Number.NaN;
    expect.soft(afterMs).toBeLessThan(TRANSACTION_LIFETIME_MS + GRACE_MS);
    expectNodeUnharmed(report);
    // The writer is free and the held insert was rolled back.
    await other.execute("insert into held(v) values ('after')");
    expect((await other.execute('select v from held')).rows.map((row) => row.v)).toEqual(['after']);
    await expectWritesWork(cluster, 'after-held-transaction');
  }, 90_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
