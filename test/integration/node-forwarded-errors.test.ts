import { describe, expect, test } from 'vitest';
import type { HadbDatabase, SqlParams } from '../../src/api-types.ts';
import { HadbError } from '../../src/errors.ts';
import { testClusters, leaderAndFollower as twoNodes } from './support/nodes.ts';

const cluster = testClusters('hadb-forwarded-errors-');
const SCHEMA = 'create table if not exists t(id integer primary key, v text not null)';

/** What a caller can see of a failed write: its class, code, SQLite code and message. */
async function failureOf(db: HadbDatabase, sql: string, params?: SqlParams) {
  const error = await db.execute(sql, params).then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error, sql).toBeInstanceOf(HadbError);
  const { name, code, message } = error as HadbError;
  return { name, code, message, sqliteCode: (error as { sqliteCode?: string }).sqliteCode };
}

describe('a write that fails on the leader', () => {
  test('fails on a follower with the same class, code and message, said once', async () => {
    const { leader, follower } = await twoNodes(cluster(), SCHEMA);
    await leader.execute('insert into t values (1, ?)', ['one']);
    const failing: [string, SqlParams?][] = [
      ['insert into missing values (1)'],
      ['insert into t values (1, ?)', ['again']],
      ['insert into t values (2, null)'],
      ['insert into t values (?, ?)', [3]],
      ['insert into t values (?, ?)', [4, { no: 'objects' } as never]],
      ['insert into t values (?, ?)', [5, true as never]],
      ['insert into t values (?, ?)', [6, undefined as never]],
      ['insert into t values (:id, :v)', { id: 7, v: new Date() as never }],
      ['update t set nothing = 1'],
      ['insert t values'],
      ['attach database ? as other', ['other.db']],
      ['select load_extension(?)', ['x']],
    ];
    for (const [sql, params] of failing) {
      const onLeader = await failureOf(leader, sql, params);
      expect(await failureOf(follower, sql, params), sql).toEqual(onLeader);
      expect(onLeader.message.startsWith(`${onLeader.code}: `), sql).toBe(true);
      expect(onLeader.message.slice(onLeader.code.length + 2), sql).not.toContain(
        `${onLeader.code}:`,
      );
    }
    // A read the follower sends to the leader fails the same way too.
    const read = (db: HadbDatabase) =>
      db
        .all('select * from t where id = ?', [Symbol('id') as never], { consistency: 'strong' })
        .then(
          () => null,
          (error: unknown) => (error as Error).message,
        );
    expect(await read(follower)).toBe(await read(leader));
    expect(await read(leader)).toMatch(/^SQL_ERROR: parameter 1 of statement 0 is a symbol/);
    expect(await leader.all('select id, v from t', [], { consistency: 'strong' })).toEqual([
      { id: 1, v: 'one' },
    ]);
  });
});
