import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getWithBody, hostileCluster } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectPeakMemoryBounded,
  expectWritesWork,
} from './support/expect.ts';

// Finding 5: unauthenticated routes buffered request bodies up to 64 MiB: 10 × 60 MB to
// `GET /health` took the node's RSS up by 785 MB. They must never read a body.

const cluster = hostileCluster('unauthenticated-bodies');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

const BODY = Buffer.alloc(60 * 1000 * 1000, 0x78);

describe('hostile client: big bodies to unauthenticated routes', () => {
  it('answers 10 × 60 MB GET /health without buffering the bodies', async () => {
    const target = await cluster.leaderOf('app');
    const report = await cluster.underAttack(() =>
      Promise.all(Array.from({ length: 10 }, () => getWithBody(`${target.peer}/health`, BODY))),
    );
    // Each request answered (or cut off once answered): never left hanging, never a 5xx.
    expect.soft(report.outcome.ok).toBe(true);
    for (const status of report.outcome.ok ? report.outcome.value : []) {
      expect.soft(status).not.toMatch(/^5|timed out/);
    }
    expectPeakMemoryBounded(report, 100);
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-health-bodies');
  }, 120_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
