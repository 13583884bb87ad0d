import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { testClusters, waitFor } from './support/nodes.ts';

// The application's reads on a leader run on a read-only connection of their own, never on the
// writer connection whose settings and state the capture of its commits depends on.

const cluster = testClusters('hadb-leader-reads-');

describe('reads on the leader', () => {
  test('run on a connection that is not the writer, and see every commit at once', async () => {
    const node = await cluster().start('a');
    const db = await node.open('db', { schema: 'create table if not exists t(v)' });
    await db.ready({ writable: true });
    for (let i = 0; i < 3; i++) await db.execute('insert into t(v) values (?)', [i]);
    // Connection state: the writer counted the schema and the three inserts.
    expect(await db.get('select total_changes() as n')).toEqual({ n: 0 });
    expect(await db.get('select count(*) as n from t')).toEqual({ n: 3 });
    await db.execute('insert into t(v) values (3)', [], { durability: 'async' });
    expect(await db.get('select count(*) as n from t')).toEqual({ n: 4 });
  });

  test('hibernation closes the readers (in this process and the statement processes) before the writer, which drops the WAL', async () => {
    const c = cluster();
    const node = await c.start('a', { hibernateAfterMs: 300 });
    const db = await node.open('db', { schema: 'create table if not exists t(v)' });
    await db.ready({ writable: true });
    await db.execute('insert into t(v) values (1)');
    expect(await db.get('select count(*) as n from t')).toEqual({ n: 1 });
    expect(await db.get('select count(*) as n from t', [], { isolated: true })).toEqual({ n: 1 });
    const wal = path.join(c.dir, 'nodes', 'a', 'db.db-wal');
    expect(fs.existsSync(wal)).toBe(true);
    const hibernated = () => node.status().databases.find((d) => d.name === 'db')?.hibernated;
    await waitFor(() => hibernated() === true, 10_000, 'the database to hibernate');
    // The writer was the last connection: SQLite checkpointed and removed the WAL.
    expect(fs.existsSync(wal)).toBe(false);
    await db.execute('insert into t(v) values (2)');
    expect(await db.get('select count(*) as n from t', [], { isolated: true })).toEqual({ n: 2 });
    expect(await db.get('select count(*) as n from t')).toEqual({ n: 2 });
  });
});
