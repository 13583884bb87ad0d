import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf, hostileCluster } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectMemoryReleased,
  expectNodeUnharmed,
  expectWritesWork,
} from './support/expect.ts';

// Finding 5: the statement cache kept 200 statements per connection whatever their size: 40
// distinct SQL texts of 12 MB left the node 625 MB bigger, for good. Caches are bounded by bytes.

const cluster = hostileCluster('statement-cache');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

const STATEMENTS = 24;
const FILLER = 'x'.repeat(12 * 1000 * 1000);

describe('hostile client: 24 distinct SQL texts of 12 MB', () => {
  it('runs or refuses each, and the node does not keep them', async () => {
    const leader = cluster.client(await cluster.leaderOf('app'), 'app');
    const follower = cluster.client(await cluster.followerOf('app'), 'app');
    const report = await cluster.underAttack(async () => {
      const answers: string[] = [];
      for (let i = 0; i < STATEMENTS; i++) {
        // Half reads on the leader, half write batches forwarded by the follower.
        const sql = `select ${i} as i, length('${FILLER}') as n`;
        try {
          if (i % 2 === 0) await leader.execute(sql);
          else await follower.batch([sql], 'write');
          answers.push('ok');
        } catch (error) {
          answers.push(codeOf(error) ?? String(error));
        }
      }
      return answers;
    });
    expect.soft(report.outcome.ok).toBe(true);
    for (const answer of report.outcome.ok ? report.outcome.value : []) {
      expect.soft(['ok', 'LIMIT_EXCEEDED']).toContain(answer);
    }
    expectMemoryReleased(report, 200);
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-big-statements');
  }, 180_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
