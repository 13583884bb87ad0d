import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostileCluster, pipeline, pipelineOutcome } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectPeakMemoryBounded,
  expectWritesWork,
} from './support/expect.ts';

// Finding 5: stored SQL per Hrana stream was unbounded and 10,000 streams were allowed. Both
// are capped: past the cap the client gets LIMIT_EXCEEDED.

// Streams stay open a minute when idle, so they pile up (the suite's default is 2 s).
const cluster = hostileCluster('streams', ['--transaction-timeout', '60']);

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

/** One past what main allowed in all. */
const MAX_STREAMS_TRIED = 10_001;
/** Stored SQL sent on one stream before giving up on a refusal: 15 MB per request. */
const STORE_REQUESTS = 17;
const ONE_MB_SQL = `select '${'y'.repeat(1000 * 1000)}'`;

describe('hostile client: Hrana streams and stored SQL', () => {
  // Stored SQL first: the streams the next test leaves open would refuse it for their number.
  it('refuses storing SQL on one stream past the cap with LIMIT_EXCEEDED', async () => {
    const url = `${(await cluster.leaderOf('app')).hrana}/app/v3/pipeline`;
    const report = await cluster.underAttack(async () => {
      let baton: string | null = null;
      let stored = 0;
      for (let request = 0; request < STORE_REQUESTS; request++) {
        const answer = await pipeline(url, {
          baton,
          requests: Array.from({ length: 15 }, (_, i) => ({
            type: 'store_sql',
            sql_id: request * 15 + i,
            sql: ONE_MB_SQL,
          })),
        });
        const outcome = pipelineOutcome(answer);
        if (outcome !== 'ok') return { storedMb: stored, refusal: outcome };
        stored += 15;
        baton = answer.body.baton ?? null;
      }
      // Not refused: close the stream so the next test starts from none.
      await pipeline(url, { baton, requests: [{ type: 'close' }] });
      return { storedMb: stored, refusal: null };
    });
    expect.soft(report.outcome).toMatchObject({ ok: true, value: { refusal: 'LIMIT_EXCEEDED' } });
    expectPeakMemoryBounded(report, 200);
    expectNodeUnharmed(report);
  }, 120_000);

  it('refuses opening streams past the cap with LIMIT_EXCEEDED', async () => {
    const url = `${(await cluster.leaderOf('app')).hrana}/app/v3/pipeline`;
    const report = await cluster.underAttack(async () => {
      let opened = 0;
      let refusal: string | null = null;
      // Streams left open (no close request): each holds a stored statement.
      const opener = async () => {
        while (refusal === null && opened < MAX_STREAMS_TRIED) {
          opened++;
          const answer = await pipeline(url, {
            baton: null,
            requests: [{ type: 'store_sql', sql_id: 1, sql: 'select 1' }],
          });
          const outcome = pipelineOutcome(answer);
          if (outcome !== 'ok') refusal = outcome;
        }
      };
      await Promise.all(Array.from({ length: 32 }, opener));
      return { opened, refusal };
    });
    expect.soft(report.outcome).toMatchObject({ ok: true, value: { refusal: 'LIMIT_EXCEEDED' } });
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-streams');
  }, 120_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
