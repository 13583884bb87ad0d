import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import { NotDurableError } from '../../src/errors.ts';
import { restoreDatabase } from '../../src/replication/restore.ts';
import { createNode, type HadbNode, type NodeOptions } from '../../src/runtime/node.ts';
import { FAST_TIMING, SECRET, waitFor } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-durability-');
const SCHEMA = 'create table if not exists t(k)';

async function soloLeader(extra: Partial<NodeOptions> = {}) {
  const storage = new MemoryStorage();
  const dir = freshDir('node');
  const node: HadbNode = await createNode({
    id: 'a',
    secret: SECRET,
    dataDir: path.join(dir, 'a'),
    storage: storage.forNode('a'),
    leases: new MemoryLeaseStore().forNode('a'),
    timing: FAST_TIMING,
    ...extra,
  });
  const db = await node.open('db', { schema: SCHEMA });
  expect(db.role).toBe('leader');
  return { storage, dir, node, db };
}

/** The database as storage has it, restored into a file of its own. */
async function storedRows(storage: MemoryStorage, dir: string): Promise<unknown[]> {
  const file = path.join(dir, `restored-${Math.random()}.db`);
  await restoreDatabase({ storage, prefix: '', db: 'db', destPath: file });
  const copy = new Database(file, { readonly: true });
  try {
    return copy.prepare('select k from t order by rowid').all();
  } finally {
    copy.close();
  }
}

describe("'replicated' durability on the leader", () => {
  test('an acknowledged write is in storage', async () => {
    const { storage, dir, node, db } = await soloLeader();
    try {
      await db.execute('insert into t values (?)', ['acked'], { durability: 'replicated' });
      expect(await storedRows(storage, dir)).toEqual([{ k: 'acked' }]);
    } finally {
      await node.close();
    }
  });

  test('an upload that fails once is retried, and the write applies exactly once', async () => {
    const { storage, dir, node, db } = await soloLeader();
    try {
      storage.faults.failNext(1, 'a');
      await db.execute('insert into t values (?)', ['once'], { durability: 'replicated' });
      expect(await db.all('select k from t')).toEqual([{ k: 'once' }]);
      expect(await storedRows(storage, dir)).toEqual([{ k: 'once' }]);
    } finally {
      await node.close();
    }
  });

  test('past the deadline the caller hears "not durable", and the write ships once storage is back', async () => {
    const { storage, dir, node, db } = await soloLeader({ forwardTimeoutMs: 300 });
    try {
      storage.faults.cutOff('a');
      await expect(
        db.execute('insert into t values (?)', ['late'], { durability: 'replicated' }),
      ).rejects.toBeInstanceOf(NotDurableError);
      storage.faults.heal('a');
      await waitFor(
        async () => (await storedRows(storage, dir)).length === 1,
        5000,
        'the commit to ship',
      );
      expect(await storedRows(storage, dir)).toEqual([{ k: 'late' }]);
    } finally {
      await node.close();
    }
  });

  test('concurrent writers share uploads (group commit)', async () => {
    const { node, db } = await soloLeader();
    try {
      const before = db.position.seq;
      const writers = 16;
      const writesEach = 8;
      await Promise.all(
        Array.from({ length: writers }, async (_, writer) => {
          for (let i = 0; i < writesEach; i++) {
            await db.execute('insert into t values (?)', [`${writer}-${i}`], {
              durability: 'replicated',
            });
          }
        }),
      );
      const changesets = db.position.seq - before;
      expect(await db.get('select count(*) as n from t')).toEqual({ n: writers * writesEach });
      // One upload per write would be 128; sharing them needs about one per round of writers.
      expect(changesets).toBeLessThanOrEqual(writesEach * 3);
    } finally {
      await node.close();
    }
  });
});
