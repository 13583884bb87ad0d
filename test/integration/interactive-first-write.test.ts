import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import type { HadbDatabase } from '../../src/api-types.ts';
import { restoreDatabase } from '../../src/replication/restore.ts';
import { testClusters, waitFor } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

// An interactive transaction that is the first write of a leader that starts hibernated (a new
// database, a promotion, a handoff) was acknowledged, and then never reached storage.
const cluster = testClusters('hadb-interactive-first-');
const scratch = tempDirs('hadb-interactive-first-restore-');

async function writeInteractively(db: HadbDatabase, key: string): Promise<void> {
  const tx = await db.begin();
  tx.run({ sql: 'create table if not exists t(k text primary key)' }, false);
  tx.run({ sql: 'insert into t values (?)', params: [key] }, false);
  await tx.commit();
}

/** The keys a copy restored from storage holds: what the log really has. */
async function keysInStorage(storageRoot: string, name: string): Promise<string[]> {
  const target = path.join(scratch('restored'), `${name}.db`);
  await restoreDatabase({
    storage: createFsStorage({ root: storageRoot }),
    prefix: '',
    db: name,
    destPath: target,
  });
  const copy = new Database(target, { readonly: true });
  try {
    return (copy.prepare('select k from t order by k').all() as { k: string }[]).map((r) => r.k);
  } finally {
    copy.close();
  }
}

/** Node a leads `db` and has written `on-a` interactively; node b has opened it too. */
async function leaderWithOneWriteAndFollower() {
  const c = cluster();
  const a = await c.start('a');
  const onA = await a.open('db');
  await waitFor(() => onA.writable, 5000, 'a to lead');
  await writeInteractively(onA, 'on-a');
  const onB = await (await c.start('b')).open('db');
  return { c, a, onA, onB };
}

describe('an interactive transaction as the first write of a leader', () => {
  test('on a new database: its commit is in storage once acknowledged', async () => {
    const c = cluster();
    const node = await c.start('a');
    const db = await node.open('fresh');
    await waitFor(() => db.writable, 5000, 'the leader');
    // A new leader starts with its files closed: the first use opens them.
    expect(node.status().databases[0]?.hibernated).toBe(true);
    await writeInteractively(db, 'first');
    expect(await keysInStorage(path.join(c.dir, 'storage'), 'fresh')).toEqual(['first']);
  });

  test('after a handoff: the new leader ships it', async () => {
    const { c, onA, onB } = await leaderWithOneWriteAndFollower();
    onA.handoff();
    await waitFor(() => onB.writable, 5000, 'b to lead');
    await writeInteractively(onB, 'on-b');
    expect(await keysInStorage(path.join(c.dir, 'storage'), 'db')).toEqual(['on-a', 'on-b']);
  });

  test('after a failover: the promoted leader ships it', async () => {
    const { c, a, onB } = await leaderWithOneWriteAndFollower();
    await waitFor(() => onB.role === 'follower', 5000, 'b to follow');
    await a.close();
    await waitFor(() => onB.writable, 5000, 'b to lead');
    await writeInteractively(onB, 'on-b');
    expect(await keysInStorage(path.join(c.dir, 'storage'), 'db')).toEqual(['on-a', 'on-b']);
  });
});
