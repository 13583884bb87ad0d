import { describe, expect, test } from 'vitest';
import { SqlError, StatementRefusedError } from '../../src/errors.ts';
import { testClusters } from './support/nodes.ts';

const cluster = testClusters('hadb-schema-');

const SCHEMA = `
  create table if not exists items(id integer primary key, name text);
  create index if not exists items_by_name on items(name);
  create table if not exists tags(item integer, tag text);
`;

async function objects(db: { all: (sql: string) => Promise<Record<string, unknown>[]> }) {
  const rows = await db.all(
    "select type, name from sqlite_schema where name not like '\\_hadb%' escape '\\' order by name",
  );
  return rows.map((row) => `${row.type} ${row.name}`);
}

describe('open with a schema of several statements', () => {
  test('runs every statement, on the leader and from a follower, every open', async () => {
    const c = cluster();
    const a = await c.start('a');
    const leader = await a.open('db', { schema: SCHEMA });
    expect(await objects(leader)).toEqual(['table items', 'index items_by_name', 'table tags']);
    const b = await c.start('b');
    const follower = await b.open('db', { schema: SCHEMA });
    expect(follower.role).toBe('follower');
    await follower.execute('insert into tags values (?, ?)', [1n, 'x']);
    const tags = await follower.all('select * from tags', [], { consistency: 'strong' });
    expect(tags).toEqual([{ item: 1, tag: 'x' }]);
  });

  test('is atomic: a failing statement leaves none of the others', async () => {
    const a = await cluster().start('a');
    const failure = await a
      .open('db', { schema: 'create table first(x); create table broken(' })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(SqlError);
    const db = await a.open('db');
    expect(await objects(db)).toEqual([]);
  });

  test('one that ends the transaction it runs in is refused, naming why', async () => {
    const a = await cluster().start('a');
    const failure = await a
      .open('db', { schema: 'create table if not exists first(x); commit' })
      .catch((error: unknown) => error);
    // The statement gate refuses it before anything of the script runs.
    expect(failure).toBeInstanceOf(StatementRefusedError);
    expect((failure as StatementRefusedError).message).toContain('transaction control (COMMIT)');
    expect((failure as StatementRefusedError).message).toContain(
      'hadb runs the statements in its own transaction',
    );
    const db = await a.open('db');
    expect(await objects(db)).toEqual([]);
  });
});
