import { describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { testClusters, waitFor } from './support/nodes.ts';

const cluster = testClusters('hadb-writer-handover-');
const SCHEMA = 'create table if not exists t(k text)';

/** The longest gap between ticks of a 5 ms interval while `work` runs: how long the loop stalled. */
async function longestStall(work: () => Promise<void>): Promise<number> {
  let last = performance.now();
  let stallMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    stallMs = Math.max(stallMs, now - last);
    last = now;
  }, 5);
  try {
    await work();
    return stallMs;
  } finally {
    clearInterval(timer);
  }
}

/**
 * A transaction holds the writer; a plain write and then a BEGIN wait for it; it rolls back. Both
 * wake at once, and the BEGIN must not take the writer between the write's wake-up and its commit.
 */
async function handOverRounds(
  leader: HadbDatabase,
  write: (key: string) => Promise<unknown>,
): Promise<void> {
  const roles: string[] = [];
  leader.on('role', ({ role }) => roles.push(role));
  for (let round = 0; round < 4; round++) {
    const stallMs = await longestStall(async () => {
      const holder = await leader.begin();
      holder.run({ sql: 'insert into t values (?)', params: [`held-${round}`] }, false);
      const waitingWrite = write(`plain-${round}`);
      const nextTransaction = leader.begin();
      await new Promise((resolve) => setTimeout(resolve, 30));
      holder.rollback();
      const next = await nextTransaction;
      next.run({ sql: 'insert into t values (?)', params: [`next-${round}`] }, false);
      await next.commit();
      await waitingWrite;
    });
    expect(stallMs).toBeLessThan(1000);
  }
  expect(roles).toEqual([]);
  const rows = await leader.all('select k from t order by k');
  expect(rows.map((row) => row.k)).toEqual(
    [0, 1, 2, 3].flatMap((round) => [`next-${round}`, `plain-${round}`]).sort(),
  );
}

async function leaderOf(id: string, c = cluster()) {
  const node = await c.start(id);
  const db = await node.open('db', { schema: SCHEMA });
  await waitFor(() => db.writable, 5000, 'the leader');
  return { c, db };
}

describe('the writer passes from a rolled-back transaction to the next waiting ones', () => {
  test('execute on the leader', async () => {
    const { db } = await leaderOf('a');
    await handOverRounds(db, (key) => db.execute('insert into t values (?)', [key]));
  });

  test('transaction(fn) on the leader', async () => {
    const { db } = await leaderOf('a');
    await handOverRounds(db, (key) =>
      db.transaction((tx) => tx.execute('insert into t values (?)', [key])),
    );
  });

  test('a write forwarded from a follower', async () => {
    const { c, db } = await leaderOf('a');
    const follower = await (await c.start('b')).open('db', { schema: SCHEMA });
    await waitFor(() => follower.role === 'follower', 5000, 'b to follow');
    await handOverRounds(db, (key) => follower.execute('insert into t values (?)', [key]));
  });
});
