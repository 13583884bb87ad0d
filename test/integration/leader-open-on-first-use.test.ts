import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/errors.ts';
import { SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import { type LeaderOptions, SqliteLeader } from '../../src/replication/sqlite/leader.ts';
import { writeEpochStart } from '../../src/replication/sqlite/promotion.ts';
import { countedCluster } from './support/counted-cluster.ts';
import { rejection, tempDirs, withReadOnly } from './support/replication.ts';

const freshDir = tempDirs('hadb-first-use-');

/** A follower copy at the tip whose node has written the epoch-start record of epoch 2. */
async function takenOver() {
  const cluster = await countedCluster(freshDir('cluster'));
  await cluster.write('before');
  await cluster.leader.close();
  const position = await writeEpochStart({
    ...cluster.common,
    storage: cluster.inner,
    epoch: 2,
    follower: cluster.follower,
    pageSize: 4096,
  });
  cluster.follower.close();
  const file = path.join(cluster.dir, 'f.db');
  let opens = 0;
  const leader = (options: Partial<LeaderOptions> = {}) =>
    SqliteLeader.open({
      ...cluster.common,
      storage: cluster.inner,
      path: file,
      epoch: 2,
      position,
      openOnFirstUse: true,
      onOpen: () => {
        opens += 1;
      },
      ...options,
    });
  return { ...cluster, file, leader, opens: () => opens };
}

describe('a leader taking over a copy opens its files on first use', () => {
  it('starts with no connection, WAL or state file; the first write opens them and ships', async () => {
    const { file, leader: open, opens, inner, common, dir } = await takenOver();
    const leader = await open();
    expect(leader.hibernated).toBe(true);
    expect(opens()).toBe(0);
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    expect(fs.existsSync(`${file}-hadb-leader.json`)).toBe(false);
    // Nothing to ship and nothing to set aside while it never opened.
    await leader.flush();
    expect(leader.hibernate()).toBe(true);

    leader.database.prepare('INSERT INTO t (v) VALUES (?)').run('after');
    expect(leader.hibernated).toBe(false);
    expect(opens()).toBe(1);
    // The state naming this leadership is on disk before the first commit could be made.
    const state = JSON.parse(fs.readFileSync(`${file}-hadb-leader.json`, 'utf8'));
    expect(state).toMatchObject({ db: 'app', epoch: 2 });
    const shipped = await leader.flush();
    expect(shipped.epoch).toBe(2);
    await leader.close();

    const replica = await SqliteFollower.open({
      ...common,
      storage: inner,
      path: path.join(dir, 'replica.db'),
    });
    await replica.pull();
    replica.close();
    const rows = withReadOnly(path.join(dir, 'replica.db'), (db) =>
      db.prepare('SELECT v FROM t ORDER BY id').all(),
    );
    expect(rows).toEqual([{ v: 'before' }, { v: 'after' }]);
  });

  it('asks how many changesets followed the last snapshot only at first use, and ships on its ticks once open', async () => {
    const { leader: open } = await takenOver();
    let asked = 0;
    const events: string[] = [];
    const leader = await open({
      shipIntervalMs: 10,
      snapshotEveryChangesets: 5,
      changesetsSinceSnapshot: async () => {
        asked += 1;
        return 3;
      },
      onEvent: (event) => events.push(event.type),
    });
    leader.start();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(asked).toBe(0);

    // No flush(): the ticks started when the first write opened the files.
    leader.database.prepare('INSERT INTO t (v) VALUES (?)').run('one');
    const deadline = Date.now() + 5000;
    while (!events.includes('shipped') && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(events).toEqual(['shipped']);
    expect(asked).toBe(1);
    // 3 before this leadership, and 2 of its own: the snapshot is due.
    leader.database.prepare('INSERT INTO t (v) VALUES (?)').run('two');
    await leader.flush();
    const snapshotted = Date.now() + 5000;
    while (!events.includes('snapshot') && Date.now() < snapshotted) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(events.filter((type) => type !== 'shipped')).toEqual(['snapshot']);
    await leader.close();
  });

  it('closing a leader that was never used leaves the copy and its side files untouched', async () => {
    const { file, leader: open, opens } = await takenOver();
    const before = fs.readFileSync(file);
    const leader = await open();
    await leader.close();
    expect(leader.neverOpened).toBe(true);
    expect(opens()).toBe(0);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    for (const side of ['-wal', '-hadb-leader.json', '-hadb-outbox.1']) {
      expect(fs.existsSync(`${file}${side}`)).toBe(false);
    }
  });

  it('opens at once when the copy has a WAL to reconcile, and refuses commits it never shipped', async () => {
    const { file, leader: open } = await takenOver();
    // A commit made on the copy's file outside any leadership: a WAL storage knows nothing of.
    const stray = new Database(file);
    stray.pragma('journal_mode = WAL');
    stray.pragma('wal_autocheckpoint = 0');
    stray.prepare('INSERT INTO t (v) VALUES (?)').run('stray');
    // Keep the WAL: a clean close would checkpoint it away.
    const error = await rejection(open());
    stray.close();
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect((error as Error).message).toContain('holds commits this leader never shipped');
  });
});
