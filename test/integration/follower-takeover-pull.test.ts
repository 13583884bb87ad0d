import { describe, expect, it } from 'vitest';
import { logKey } from '../../src/replication/snapshot.ts';
import { countedCluster } from './support/counted-cluster.ts';
import { tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-takeover-pull-');

const cluster = () => countedCluster(freshDir('cluster'));

describe('the catch-up of a takeover (urgent pull)', () => {
  it('asks storage once when the copy is already at the tip, and applies what is new', async () => {
    const { calls, leader, write, follower } = await cluster();
    calls.length = 0;
    expect(await follower.pull({ urgent: true })).toBe(0);
    expect(calls).toEqual(['list']);
    await write('a');
    await write('b');
    calls.length = 0;
    expect(await follower.pull({ urgent: true })).toBe(2);
    expect(follower.position.seq).toBe(leader.position.seq);
    // A listing names the two, both are read, and a last listing finds nothing after them.
    expect(calls).toEqual(['list', 'get', 'get', 'list']);
    follower.close();
    await leader.close();
  });

  it('rebuilds from a snapshot when the log after the copy was compacted away', async () => {
    const { inner, common, leader, write, follower } = await cluster();
    const from = follower.position.seq;
    await write('a');
    await write('b');
    await leader.snapshot();
    await write('c');
    const tip = leader.position.seq;
    // Retention removed the changesets the snapshot covers: the copy's next one is gone.
    await inner.delete(
      Array.from({ length: tip - 1 - from }, (_, i) =>
        logKey(common.prefix, common.db, from + 1 + i),
      ),
    );
    await follower.pull({ urgent: true });
    expect(follower.position.seq).toBe(tip);
    follower.close();
    await leader.close();
  });
});
