import { describe, expect, test } from 'vitest';
import { rowsInStorage, testClusters } from './support/nodes.ts';

// A leader that closes while a client write runs in a statement process: the write is rolled
// back, its connection closes before the leader's (which must stay the last, or SQLite would
// checkpoint and drop the WAL behind the replicator), and the reopened copy equals storage.

const cluster = testClusters('hadb-statement-write-close-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
const LIMIT_MS = 1500;
/** Seconds of SQLite work, past the limit. */
const LONG_INSERT =
  'insert into t(v) with recursive c(x) as (select 1 union all select x + 1 from c where x < 30000000) select count(*) from c';

describe('closing a leader during a client write in a statement process', () => {
  test('the write is not committed, the close ends by the time limit, the reopened copy equals storage', async () => {
    const c = cluster();
    const options = { statements: { timeoutMs: LIMIT_MS } };
    const a = await c.start('a', options);
    const db = await a.open('db', { schema: SCHEMA });
    await db.ready({ writable: true });
    await db.execute('insert into t(v) values (?)', ['before'], { durability: 'replicated' });
    const started = Date.now();
    const write = db.execute(LONG_INSERT, [], { isolated: true }).then(
      () => null,
      (error: unknown) => error,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    await a.close();
    // The close waited for the write to end at its limit, not for the whole statement.
    expect(Date.now() - started).toBeLessThan(LIMIT_MS + 2000);
    expect(await write).toBeInstanceOf(Error);

    const again = await c.start('a', options);
    const reopened = await again.open('db', { schema: SCHEMA });
    await reopened.ready({ writable: true });
    await reopened.execute('insert into t(v) values (?)', ['after'], {
      isolated: true,
      durability: 'replicated',
    });
    const rows = await reopened.all('select id, v from t order by id');
    expect(rows.map((row) => row.v)).toEqual(['before', 'after']);
    expect(await rowsInStorage(c, 'db')).toEqual(rows);
  }, 60_000);
});
