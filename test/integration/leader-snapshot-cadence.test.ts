import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { listSnapshots } from '../../src/replication/snapshot.ts';
import { openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-snapshot-cadence-');

async function openLeader(dir: string, options: { changesets?: number; bytes?: number }) {
  const storage = createMemoryStorage();
  const snapshots: number[] = [];
  const leader = await openNewLeader({
    path: path.join(dir, 'leader.db'),
    db: 'app',
    storage,
    prefix: 'p',
    codec: 'none',
    ...(options.changesets !== undefined ? { snapshotEveryChangesets: options.changesets } : {}),
    ...(options.bytes !== undefined ? { snapshotEveryBytes: options.bytes } : {}),
    onEvent: (event) => {
      // The one at seq 0 is of the new database, taken on open.
      if (event.type === 'snapshot' && event.seq > 0) snapshots.push(event.seq);
    },
  });
  leader.database.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)');
  const insert = leader.database.prepare('INSERT INTO t (body) VALUES (?)');
  const update = leader.database.prepare('UPDATE t SET body = ? WHERE id > ? AND id <= ?');
  let rewrites = 0;
  /** Commits `bytes` of new rows and ships them as one changeset. */
  const ship = async (bytes: number) => {
    for (let done = 0; done < bytes; done += 1000) insert.run(Buffer.alloc(1000, done % 251));
    await leader.flush();
  };
  /** Rewrites 100 of the rows (about 100 KB) and ships them: the database keeps its size. */
  const rewrite = async () => {
    const from = (rewrites++ * 100) % 1900;
    update.run(Buffer.alloc(1000, rewrites % 251), from, from + 100);
    await leader.flush();
  };
  /** Lets a snapshot the last ship started finish. */
  const settle = () => leader.settled();
  return { leader, storage, snapshots, ship, rewrite, settle };
}

describe('automatic snapshots', () => {
  it('after snapshotEveryChangesets changesets', async () => {
    const { leader, snapshots, ship, settle } = await openLeader(freshDir('count'), {
      changesets: 4,
    });
    for (let i = 0; i < 3; i++) await ship(2000);
    await settle();
    expect(snapshots).toEqual([]);
    await ship(2000);
    await settle();
    expect(snapshots).toEqual([4]);
    await leader.close();
  });

  it('after snapshotEveryBytes of log, but never before the log is as large as the database', async () => {
    const { leader, storage, snapshots, ship, rewrite, settle } = await openLeader(
      freshDir('bytes'),
      {
        bytes: 64 * 1024,
      },
    );
    // A 2 MB database: well past the 64 KiB threshold on its own.
    await ship(2_000_000);
    await settle();
    // Its first changeset holds the whole database, so the log is as large as the database.
    expect(snapshots).toHaveLength(1);
    // 100 KB changesets: past the threshold each time, yet a snapshot only once they add up to
    // the database's size again (about 20 of them).
    const before = snapshots.length;
    for (let i = 0; i < 12; i++) await rewrite();
    await settle();
    expect(snapshots.length).toBe(before);
    for (let i = 0; i < 12; i++) await rewrite();
    await settle();
    expect(snapshots.length).toBe(before + 1);
    expect((await listSnapshots(storage, 'p', 'app')).length).toBe(snapshots.length + 1);
    await leader.close();
  });
});
