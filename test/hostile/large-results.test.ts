import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostileCluster, outcomes } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectPeakMemoryBounded,
  expectWritesWork,
} from './support/expect.ts';

// Finding 4: four `select zeroblob(250 MB)` at once took the node's RSS to 2.4 GB. Results are
// capped (default 64 MiB per response): the client gets RESULT_TOO_LARGE.

const cluster = hostileCluster('large-results');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

describe('hostile client: results of 250 MB', () => {
  it('refuses select zeroblob(250000000) x4 at once with RESULT_TOO_LARGE, memory bounded', async () => {
    const leader = cluster.client(await cluster.leaderOf('app'), 'app');
    const report = await cluster.underAttack(async () => {
      const each = await Promise.all(
        [1, 2, 3, 4].map((i) =>
          outcomes({ [`zeroblob ${i}`]: () => leader.execute('select zeroblob(250000000) as z') }),
        ),
      );
      return Object.assign({}, ...each);
    });
    expect.soft(report.outcome).toEqual({
      ok: true,
      value: {
        'zeroblob 1': 'RESULT_TOO_LARGE',
        'zeroblob 2': 'RESULT_TOO_LARGE',
        'zeroblob 3': 'RESULT_TOO_LARGE',
        'zeroblob 4': 'RESULT_TOO_LARGE',
      },
    });
    // The serve process itself: statements may run in child processes of their own.
    expectPeakMemoryBounded(report, 400);
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-zeroblob');
  }, 120_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
