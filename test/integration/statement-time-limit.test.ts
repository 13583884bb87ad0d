import { createClient } from '@libsql/client';
import { describe, expect, test } from 'vitest';
import { longestStall, type TestCluster, testClusters } from './support/nodes.ts';

// Client reads run in the node's statement processes: a long one is ended at the time limit and
// never blocks the event loop that keeps the node's leases.

const cluster = testClusters('hadb-statement-limit-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
/** About 5 s of SQLite work on an idle machine here (4M rows took 1.6 s, once under 1 s in CI). */
const LONG_READ =
  'with recursive c(x) as (select 1 union all select x + 1 from c where x < 12000000) select count(*) as n from c';

async function served(
  c: TestCluster,
  id: string,
  limits: { timeoutMs?: number; maxResultBytes?: number },
) {
  const served = await c.serveOverHrana(id, { schema: SCHEMA, node: { statements: limits } });
  return { ...served, other: await served.node.open('other', { schema: SCHEMA }) };
}

describe('no client statement can stall the node', () => {
  test('a 3+ s read over Hrana ends with STATEMENT_TIMEOUT at the 1 s limit; the node keeps working meanwhile', async () => {
    const { db, other, hrana } = await served(cluster(), 'a', { timeoutMs: 1000 });
    await db.ready({ writable: true });
    await other.ready({ writable: true });
    const client = createClient({ url: `${hrana.address}/db/` });
    try {
      const started = Date.now();
      const { result, stallMs } = await longestStall(async () => {
        const read = client.execute(LONG_READ).then(
          () => null,
          (error: unknown) => error,
        );
        // Another database of the node commits and ships while the read runs.
        await new Promise((resolve) => setTimeout(resolve, 200));
        const writeStarted = Date.now();
        await other.execute('insert into t(v) values (?)', ['during'], {
          durability: 'replicated',
        });
        const writeMs = Date.now() - writeStarted;
        return { error: await read, writeMs, endedAfterMs: Date.now() - started };
      });
      expect(result.error).toMatchObject({
        code: 'STATEMENT_TIMEOUT',
        // Once: the client puts the code in front of the message.
        message:
          'STATEMENT_TIMEOUT: the statement ran past the time limit of 1000 ms and was ended',
      });
      expect(result.endedAfterMs).toBeGreaterThanOrEqual(950);
      expect(result.endedAfterMs).toBeLessThan(2500);
      expect(result.writeMs).toBeLessThan(1000);
      expect(stallMs).toBeLessThan(500);
      expect(db.role).toBe('leader');
      expect(other.role).toBe('leader');
      // The next read gets a fresh process.
      const { rows } = await client.execute('select count(*) as n from t');
      expect(Number(rows[0]?.n)).toBe(0);
    } finally {
      client.close();
    }
  });

  test('a read forwarded to the leader ends there with a typed timeout for the follower', async () => {
    const c = cluster();
    const leader = await served(c, 'a', { timeoutMs: 1000 });
    const follower = await served(c, 'b', { timeoutMs: 60_000 });
    await leader.db.ready({ writable: true });
    expect(follower.db.role).toBe('follower');
    const started = Date.now();
    const { result, stallMs } = await longestStall(() =>
      follower.db.all(LONG_READ, [], { consistency: 'strong' }).then(
        () => null,
        (error: unknown) => error,
      ),
    );
    expect(result).toMatchObject({ name: 'StatementTimeoutError', code: 'STATEMENT_TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(2500);
    expect(stallMs).toBeLessThan(500);
    expect(leader.db.role).toBe('leader');
  });

  test('rows past the result cap are refused with RESULT_TOO_LARGE; smaller ones are served', async () => {
    const { db, hrana } = await served(cluster(), 'a', { maxResultBytes: 1024 * 1024 });
    await db.ready({ writable: true });
    const client = createClient({ url: `${hrana.address}/db/` });
    try {
      const oneLargeValue = await client.execute('select zeroblob(2000000) as b').catch((e) => e);
      expect(oneLargeValue).toMatchObject({ code: 'RESULT_TOO_LARGE' });
      const manyRows = await client
        .execute(
          'with recursive c(x) as (select 1 union all select x + 1 from c where x < 10) select zeroblob(200000) as b from c',
        )
        .catch((e) => e);
      expect(manyRows).toMatchObject({ code: 'RESULT_TOO_LARGE' });
      const { rows } = await client.execute(
        'select length(zeroblob(2000000)) as n, zeroblob(1000) as b',
      );
      expect(Number(rows[0]?.n)).toBe(2_000_000);
      expect((rows[0]?.b as ArrayBuffer | undefined)?.byteLength).toBe(1000);
    } finally {
      client.close();
    }
  });
});
