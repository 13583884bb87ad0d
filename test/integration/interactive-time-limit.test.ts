import { createClient, type Transaction } from '@libsql/client';
import { describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import {
  duringOtherWrite,
  rowsInStorage,
  servedWithOther,
  type TestCluster,
  testClusters,
  waitFor,
} from './support/nodes.ts';

// Statements inside interactive transactions from the network (Hrana's BEGIN … COMMIT, on the
// leader or relayed by a follower) run in the node's statement processes: a long one ends at the
// time limit with STATEMENT_TIMEOUT, the transaction is rolled back, the writer is free again,
// and the event loop that keeps the node's leases never waits for it.

const cluster = testClusters('hadb-interactive-limit-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
/** Seconds of SQLite work, far past the 1 s limit. */
const LONG_SELECT =
  'with recursive c(x) as (select 1 union all select x + 1 from c where x < 30000000) select count(*) as n from c';
const LONG_INSERT = `insert into t(v) ${LONG_SELECT.replace('count(*) as n', 'count(*)')}`;
const LIMIT_MS = 1000;

function served(c: TestCluster, id: string, processes?: number) {
  return servedWithOther(c, id, SCHEMA, {
    timeoutMs: LIMIT_MS,
    ...(processes ? { processes } : {}),
  });
}

/** `attempt` while the node's other database writes, flattened: outcome, timings, stall. */
async function whileOtherWrites(other: HadbDatabase, attempt: () => Promise<unknown>) {
  const { result, stallMs } = await duringOtherWrite(other, attempt);
  return { ...result, stallMs };
}

/** A long statement inside a write transaction of `client`: outcomes, and what followed. */
async function longStatementInTransaction(
  client: ReturnType<typeof createClient>,
  other: HadbDatabase,
  statement: string,
) {
  const tx: Transaction = await client.transaction('write');
  try {
    await tx.execute({ sql: 'insert into t(v) values (?)', args: ['inside'] });
    const outcome = await whileOtherWrites(other, () => tx.execute(statement));
    const next = await tx.commit().then(
      () => null,
      (error: unknown) => error,
    );
    return { ...outcome, next };
  } finally {
    tx.close();
  }
}

describe('no statement inside an interactive transaction can stall the node', () => {
  test('over Hrana on the leader: STATEMENT_TIMEOUT at the limit, the transaction rolled back, the writer free', async () => {
    const c = cluster();
    const { db, other, hrana } = await served(c, 'a');
    await db.ready({ writable: true });
    await other.ready({ writable: true });
    const client = createClient({ url: `${hrana.address}/db/` });
    try {
      await client.execute({ sql: 'insert into t(v) values (?)', args: ['before'] });
      const run = await longStatementInTransaction(client, other, LONG_INSERT);
      expect(run.error).toMatchObject({
        code: 'STATEMENT_TIMEOUT',
        message: expect.stringContaining('the statement ran past the time limit of 1000 ms'),
      });
      expect(run.endedAfterMs).toBeGreaterThanOrEqual(LIMIT_MS - 50);
      expect(run.endedAfterMs).toBeLessThan(LIMIT_MS + 1500);
      expect(run.otherWriteMs).toBeLessThan(1000);
      expect(run.stallMs).toBeLessThan(500);
      // The transaction is gone: its COMMIT says so, and nothing of it is committed.
      expect(run.next).toMatchObject({ code: 'CLOSED' });
      expect(String((run.next as Error).message)).toContain('ran past the time limit');
      expect(db.role).toBe('leader');
      expect(other.role).toBe('leader');
      // The writer is free again: for Hrana, for the application, for the next transaction.
      await client.execute({ sql: 'insert into t(v) values (?)', args: ['after'] });
      await db.execute('insert into t(v) values (?)', ['embedded'], { durability: 'replicated' });
      const next = await client.transaction('write');
      await next.execute({ sql: 'insert into t(v) values (?)', args: ['next-transaction'] });
      await next.commit();
      const rows = await db.all('select id, v from t order by id');
      expect(rows.map((row) => row.v)).toEqual(['before', 'after', 'embedded', 'next-transaction']);
      expect(await rowsInStorage(c, 'db')).toEqual(rows);
    } finally {
      client.close();
    }
  }, 60_000);

  test('a read-only transaction: a long select ends with STATEMENT_TIMEOUT', async () => {
    const c = cluster();
    const { db, other, hrana } = await served(c, 'a');
    await db.ready({ writable: true });
    await other.ready({ writable: true });
    const client = createClient({ url: `${hrana.address}/db/` });
    try {
      const tx = await client.transaction('read');
      try {
        const run = await whileOtherWrites(other, () => tx.execute(LONG_SELECT));
        expect(run.error).toMatchObject({ code: 'STATEMENT_TIMEOUT' });
        expect(run.endedAfterMs).toBeLessThan(LIMIT_MS + 1500);
        expect(run.stallMs).toBeLessThan(500);
      } finally {
        tx.close();
      }
      await client.execute({ sql: 'insert into t(v) values (?)', args: ['after'] });
      expect((await db.all('select v from t')).map((row) => row.v)).toEqual(['after']);
    } finally {
      client.close();
    }
  }, 60_000);

  test('relayed by a follower: ended on the leader at the limit; the copies equal storage', async () => {
    const c = cluster();
    const leader = await served(c, 'a');
    const follower = await served(c, 'b');
    await leader.db.ready({ writable: true });
    await leader.other.ready({ writable: true });
    expect(follower.db.role).toBe('follower');
    const client = createClient({ url: `${follower.hrana.address}/db/` });
    try {
      await client.execute({ sql: 'insert into t(v) values (?)', args: ['before'] });
      const run = await longStatementInTransaction(client, leader.other, LONG_INSERT);
      expect(run.error).toMatchObject({ code: 'STATEMENT_TIMEOUT' });
      expect(run.endedAfterMs).toBeLessThan(LIMIT_MS + 1500);
      expect(run.otherWriteMs).toBeLessThan(1000);
      expect(run.stallMs).toBeLessThan(500);
      expect(leader.db.role).toBe('leader');
      const { token } = await follower.db.execute('insert into t(v) values (?)', ['after'], {
        durability: 'replicated',
      });
      await waitFor(() => follower.db.position.seq >= token.seq, 10_000, 'the follower');
      const rows = await follower.db.all('select id, v from t order by id');
      expect(rows.map((row) => row.v)).toEqual(['before', 'after']);
      expect(await leader.db.all('select id, v from t order by id')).toEqual(rows);
      expect(await rowsInStorage(c, 'db')).toEqual(rows);
    } finally {
      client.close();
    }
  }, 60_000);

  test('a kill rolls back every transaction its process held, and only those; their writers are freed', async () => {
    const c = cluster();
    // One statement process: both transactions live in it.
    const { db, other } = await served(c, 'a', 1);
    await db.ready({ writable: true });
    await other.ready({ writable: true });
    const slow = await db.begin({ isolated: true });
    const bystander = await other.begin({ isolated: true });
    await bystander.run({ sql: 'insert into t(v) values (?)', params: ['bystander'] }, false);
    await expect(slow.run({ sql: LONG_INSERT }, false)).rejects.toMatchObject({
      code: 'STATEMENT_TIMEOUT',
    });
    expect(slow.open).toBe(false);
    expect(bystander.open).toBe(false);
    await expect(
      bystander.run({ sql: 'insert into t(v) values (?)', params: ['later'] }, false),
    ).rejects.toMatchObject({
      code: 'CLOSED',
      message: expect.stringContaining(
        'a statement in its statement process ran past the time limit of 1000 ms',
      ),
    });
    // Both writers are free, in-process and in a new statement process.
    await db.execute('insert into t(v) values (?)', ['db-after']);
    await other.execute('insert into t(v) values (?)', ['other-after']);
    const again = await other.begin({ isolated: true });
    await again.run({ sql: 'insert into t(v) values (?)', params: ['other-tx'] }, false);
    await again.commit();
    expect((await db.all('select v from t order by id')).map((row) => row.v)).toEqual(['db-after']);
    expect((await other.all('select v from t order by id')).map((row) => row.v)).toEqual([
      'other-after',
      'other-tx',
    ]);
  }, 60_000);
});
