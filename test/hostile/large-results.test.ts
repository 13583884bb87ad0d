import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostileCluster, pipeline, pipelineOutcome } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectPeakMemoryBounded,
  expectWritesWork,
} from './support/expect.ts';

// Finding 4: four `select zeroblob(250 MB)` at once took the node's RSS to 2.4 GB. Results are
// capped (default 64 MiB per response): the client gets RESULT_TOO_LARGE.

const cluster = hostileCluster('large-results');
/** Far longer than a refusal takes; a node that builds 250 MB answers is not waited for. */
const ANSWER_DEADLINE_MS = 30_000;

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

describe('hostile client: results of 250 MB', () => {
  it('refuses select zeroblob(250000000) x4 at once with RESULT_TOO_LARGE, memory bounded', async () => {
    const url = `${(await cluster.leaderOf('app')).hrana}/app/v3/pipeline`;
    const report = await cluster.underAttack(async () => {
      // Raw pipelines with a deadline: a node that builds the whole answer takes minutes.
      const each = await Promise.all(
        [1, 2, 3, 4].map(async (i) => {
          let outcome: string;
          try {
            const answer = await pipeline(
              url,
              {
                baton: null,
                requests: [
                  { type: 'execute', stmt: { sql: 'select zeroblob(250000000) as z' } },
                  { type: 'close' },
                ],
              },
              ANSWER_DEADLINE_MS,
            );
            outcome = pipelineOutcome(answer);
          } catch (error) {
            outcome = error instanceof Error ? error.name : String(error);
          }
          return [`zeroblob ${i}`, outcome] as const;
        }),
      );
      return Object.fromEntries(each);
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
  }, 90_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
