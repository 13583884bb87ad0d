import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import { writeEpochStart } from '../../src/replication/sqlite/promotion.ts';
import { countedCluster } from './support/counted-cluster.ts';
import { tempDirs, withReadOnly } from './support/replication.ts';

const freshDir = tempDirs('hadb-epoch-start-');

const cluster = () => countedCluster(freshDir('cluster'));

/** The old leader wrote a row and closed, the copy caught up, then epoch 2's record, counted. */
async function recordAfter(options: { atTip?: boolean }) {
  const counted = await cluster();
  const { storage, calls, common, leader, write, follower } = counted;
  await write('a');
  await leader.close();
  await follower.pull();
  const before = follower.position;
  calls.length = 0;
  const position = await writeEpochStart({
    ...common,
    storage,
    epoch: 2,
    follower,
    pageSize: 4096,
    ...options,
  });
  return { ...counted, before, position };
}

describe('the epoch-start record', () => {
  it('is written with one listing and one putIfAbsent at the tip, and applied without reading it back', async () => {
    const { dir, storage, calls, common, follower, before, position } = await recordAfter({});
    expect(calls).toEqual(['list', 'putIfAbsent']);
    expect(position.epoch).toBe(2);
    expect(position.seq).toBe(before.seq + 1);
    expect(follower.position).toEqual(position);
    follower.close();
    // A copy reopened from its files catches up to the same record from storage.
    const reopened = await SqliteFollower.open({
      ...common,
      storage,
      path: path.join(dir, 'f.db'),
    });
    await reopened.pull();
    expect(reopened.position).toEqual(position);
    const rows = withReadOnly(path.join(dir, 'f.db'), (db) =>
      db.prepare('SELECT v FROM t ORDER BY id').all(),
    );
    expect(rows).toEqual([{ v: 'a' }]);
    reopened.close();
  });

  it('applies the page of a new database it writes (its first epoch)', async () => {
    const dir = freshDir('new');
    const storage = createMemoryStorage();
    const common = { db: 'fresh', prefix: 'p', storage };
    const file = path.join(dir, 'f.db');
    const follower = await SqliteFollower.open({ ...common, path: file });
    const position = await writeEpochStart({ ...common, epoch: 1, follower, pageSize: 4096 });
    expect(position).toMatchObject({ epoch: 1, seq: 1 });
    expect(follower.dimensions).toEqual({ pageSize: 4096, dbSizePages: 1 });
    follower.close();
    const reopened = await SqliteFollower.open({ ...common, path: file });
    expect(reopened.position).toEqual(position);
    reopened.close();
  });

  it('goes straight for the next slot when the copy is known to be at the tip', async () => {
    const { calls, follower, before, position } = await recordAfter({ atTip: true });
    expect(calls).toEqual(['putIfAbsent']);
    expect(position).toMatchObject({ epoch: 2, seq: before.seq + 1 });
    follower.close();
  });

  it('believed at the tip but behind, meets the taken slot, catches up and takes the next', async () => {
    const { dir, storage, calls, common, leader, write, follower } = await cluster();
    await follower.pull();
    const stale = follower.position;
    // The old leader shipped after the copy last heard of it.
    await write('late');
    await leader.close();
    calls.length = 0;
    const position = await writeEpochStart({
      ...common,
      storage,
      epoch: 2,
      follower,
      pageSize: 4096,
      atTip: true,
    });
    expect(calls[0]).toBe('putIfAbsent');
    expect(calls.filter((call) => call === 'putIfAbsent')).toHaveLength(2);
    expect(position).toMatchObject({ epoch: 2, seq: stale.seq + 2 });
    follower.close();
    const rows = withReadOnly(path.join(dir, 'f.db'), (db) =>
      db.prepare('SELECT v FROM t ORDER BY id').all(),
    );
    expect(rows).toEqual([{ v: 'late' }]);
  });
});
