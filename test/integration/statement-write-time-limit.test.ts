import { createClient } from '@libsql/client';
import { describe, expect, test } from 'vitest';
import {
  duringOtherWrite,
  rowsInStorage,
  servedWithOther,
  type TestCluster,
  testClusters,
  waitFor,
} from './support/nodes.ts';

// Client writes from the network (Hrana on the leader, writes forwarded to it) run in the node's
// statement processes: a long one is ended at the time limit, nothing of it is committed, and the
// event loop that keeps the node's leases never waits for it.

const cluster = testClusters('hadb-statement-write-limit-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
/** Seconds of SQLite work, far past the 1 s limit. */
const LONG_INSERT =
  'insert into t(v) with recursive c(x) as (select 1 union all select x + 1 from c where x < 30000000) select count(*) from c';
const LIMIT_MS = 1000;

function served(c: TestCluster, id: string) {
  return servedWithOther(c, id, SCHEMA, { timeoutMs: LIMIT_MS });
}

/** The rows storage holds for `name`, restored into a fresh file (checked for integrity). */
describe('no client write can stall the node', () => {
  test('a long insert over Hrana on the leader ends with STATEMENT_TIMEOUT at the limit; nothing of it is committed', async () => {
    const c = cluster();
    const { db, other, hrana } = await served(c, 'a');
    await db.ready({ writable: true });
    await other.ready({ writable: true });
    const client = createClient({ url: `${hrana.address}/db/` });
    try {
      await client.execute({ sql: 'insert into t(v) values (?)', args: ['before'] });
      const { result, stallMs } = await duringOtherWrite(other, () => client.execute(LONG_INSERT));
      expect(result.error).toMatchObject({
        code: 'STATEMENT_TIMEOUT',
        message:
          'STATEMENT_TIMEOUT: the statement ran past the time limit of 1000 ms and was ended',
      });
      expect(result.endedAfterMs).toBeGreaterThanOrEqual(LIMIT_MS - 50);
      expect(result.endedAfterMs).toBeLessThan(LIMIT_MS + 1500);
      expect(result.otherWriteMs).toBeLessThan(1000);
      expect(stallMs).toBeLessThan(500);
      expect(db.role).toBe('leader');
      expect(other.role).toBe('leader');
      // The writer is free again, for the next client and for the application.
      await client.execute({ sql: 'insert into t(v) values (?)', args: ['after'] });
      await db.execute('insert into t(v) values (?)', ['embedded'], { durability: 'replicated' });
      const rows = await db.all('select id, v from t order by id');
      expect(rows.map((row) => row.v)).toEqual(['before', 'after', 'embedded']);
      expect(await rowsInStorage(c, 'db')).toEqual(rows);
    } finally {
      client.close();
    }
  }, 60_000);

  test('a long insert forwarded by a follower ends on the leader with STATEMENT_TIMEOUT; the copy equals storage', async () => {
    const c = cluster();
    const leader = await served(c, 'a');
    const follower = await served(c, 'b');
    await leader.db.ready({ writable: true });
    await leader.other.ready({ writable: true });
    expect(follower.db.role).toBe('follower');
    await follower.db.execute('insert into t(v) values (?)', ['before']);
    const { result, stallMs } = await duringOtherWrite(leader.other, () =>
      follower.db.execute(LONG_INSERT),
    );
    expect(result.error).toMatchObject({
      name: 'StatementTimeoutError',
      code: 'STATEMENT_TIMEOUT',
    });
    expect(result.endedAfterMs).toBeLessThan(LIMIT_MS + 1500);
    expect(result.otherWriteMs).toBeLessThan(1000);
    expect(stallMs).toBeLessThan(500);
    expect(leader.db.role).toBe('leader');
    expect(leader.other.role).toBe('leader');
    const { token } = await follower.db.execute('insert into t(v) values (?)', ['after'], {
      durability: 'replicated',
    });
    await waitFor(() => follower.db.position.seq >= token.seq, 10_000, 'the follower to catch up');
    const rows = await follower.db.all('select id, v from t order by id');
    expect(rows.map((row) => row.v)).toEqual(['before', 'after']);
    expect(await leader.db.all('select id, v from t order by id')).toEqual(rows);
    expect(await rowsInStorage(c, 'db')).toEqual(rows);
  }, 60_000);
});
