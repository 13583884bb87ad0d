import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRefused, hostileCluster, outcomes, writeLoad } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectWritesWork,
} from './support/expect.ts';

// Finding 3: PRAGMA locking_mode=EXCLUSIVE from a client stalled /health for seconds, the node
// lost its leases and commits were parked.

const cluster = hostileCluster('locking-mode');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

describe('hostile client: PRAGMA locking_mode', () => {
  it('refuses PRAGMA locking_mode=EXCLUSIVE, the node keeps its leases, writes keep working', async () => {
    const leader = cluster.client(await cluster.leaderOf('app'), 'app');
    const follower = cluster.client(await cluster.followerOf('app'), 'app');
    const tries = {
      'execute on the leader': () => leader.execute('PRAGMA locking_mode=EXCLUSIVE'),
      'write batch on the follower, then a write': () =>
        follower.batch(
          ['PRAGMA locking_mode = exclusive', 'create table if not exists locked(x)'],
          'write',
        ),
      'write batch on the leader': () =>
        leader.batch(['PRAGMA main.locking_mode=EXCLUSIVE', 'select 1'], 'write'),
    };
    const report = await cluster.underAttack(async () => ({
      refused: await outcomes(tries),
      // Write load after it, past the checkpoint threshold: an exclusive lock left on the
      // writer would block the checkpoint and park commits.
      load: await outcomes({ 'write load after it': () => writeLoad(leader, 1200) }),
    }));
    expect.soft(report.outcome).toEqual({
      ok: true,
      value: {
        refused: allRefused(tries, 'STATEMENT_REFUSED'),
        load: { 'write load after it': 'ok' },
      },
    });
    expectNodeUnharmed(report);
    await expectWritesWork(cluster, 'after-locking-mode');
  }, 60_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
