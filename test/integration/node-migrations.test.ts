import { describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { InvalidArgumentError } from '../../src/errors.ts';
import { decodeForwardResponse, encodeMessage } from '../../src/wire/forward.ts';
import { FORWARD_PATH } from '../../src/wire/node-protocol.ts';
import { SECRET, testClusters } from './support/nodes.ts';

const cluster = testClusters('hadb-migrations-');

/** Each migration records itself, so one applied twice shows (or fails on `create table`). */
const MIGRATIONS = [
  'create table applied(n integer); insert into applied values (1)',
  'create table orders(id integer primary key, total real); insert into applied values (2)',
];

async function version(db: HadbDatabase): Promise<number> {
  const row = await db.get('pragma user_version', [], { consistency: 'strong' });
  return Number(row?.user_version);
}

async function applied(db: HadbDatabase): Promise<number[]> {
  const rows = await db.all('select n from applied order by rowid', [], { consistency: 'strong' });
  return rows.map((row) => Number(row.n));
}

describe('open with migrations', () => {
  test('a single node applies them, then serves writes and reads (the README example)', async () => {
    const node = await cluster().start('a');
    const orders = await node.open('orders', {
      migrations: ['create table orders(id integer primary key, total real)'],
    });
    const { token } = await orders.execute('insert into orders(total) values (?)', [9.5]);
    const rows = await orders.all('select * from orders', [], { consistency: 'read-your-writes' });
    expect(rows).toEqual([{ id: 1, total: 9.5 }]);
    expect(token.seq).toBeGreaterThan(0);
    expect(await version(orders)).toBe(1);
  });

  test('opening again with more migrations applies only the new ones', async () => {
    const c = cluster();
    const first = await c.start('a');
    const db = await first.open('db', { migrations: MIGRATIONS.slice(0, 1) });
    expect(await applied(db)).toEqual([1]);
    await first.close();

    const again = await c.start('a');
    const reopened = await again.open('db', { migrations: MIGRATIONS });
    expect(await applied(reopened)).toEqual([1, 2]);
    expect(await version(reopened)).toBe(2);
    await reopened.execute('insert into orders(total) values (?)', [3]);
  });

  test('two nodes opening at once, one leading and one forwarding, apply each migration once', async () => {
    const c = cluster();
    const [a, b] = await Promise.all([c.start('a'), c.start('b')]);
    const [onA, onB] = await Promise.all([
      a.open('db', { migrations: MIGRATIONS }),
      b.open('db', { migrations: MIGRATIONS }),
    ]);
    expect([onA.role, onB.role].sort()).toEqual(['follower', 'leader']);
    for (const db of [onA, onB]) {
      expect(await applied(db)).toEqual([1, 2]);
      expect(await version(db)).toBe(2);
    }
  });

  test('a follower opening with migrations has the leader apply them', async () => {
    const c = cluster();
    const a = await c.start('a');
    const leader = await a.open('db');
    await leader.execute('select 1');
    expect(leader.role).toBe('leader');
    const b = await c.start('b');
    const follower = await b.open('db', { migrations: MIGRATIONS });
    expect(follower.role).toBe('follower');
    expect(await applied(leader)).toEqual([1, 2]);
    expect(await version(leader)).toBe(2);
  });

  test('the leader judges the version in its own transaction: a repeated migrate applies nothing', async () => {
    const c = cluster();
    const a = await c.start('a');
    const leader = await a.open('db', { migrations: MIGRATIONS });
    // What a second opener sends when it read the version before the first one migrated.
    const send = (requestId: string) =>
      fetch(`${a.address}${FORWARD_PATH}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${SECRET}` },
        body: encodeMessage({
          v: 1,
          db: 'db',
          requestId,
          op: 'migrate',
          statements: MIGRATIONS.map((sql) => ({ sql })),
          durability: 'replicated',
          bigints: false,
        }),
      });
    const response = await send('late-opener');
    expect(response.status).toBe(200);
    const answer = decodeForwardResponse(new Uint8Array(await response.arrayBuffer()));
    expect(answer.ok && answer.results).toEqual([{ changes: 0, lastInsertRowid: 0 }]);
    expect(await applied(leader)).toEqual([1, 2]);
  });

  test('a database newer than the migrations given is refused, on the leader and from a follower', async () => {
    const c = cluster();
    const a = await c.start('a');
    const leader = await a.open('db', { migrations: MIGRATIONS });
    expect(leader.role).toBe('leader');
    const b = await c.start('b');
    const refused = await b
      .open('db', { migrations: MIGRATIONS.slice(0, 1) })
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(InvalidArgumentError);
    expect((refused as Error).message).toBe(
      'INVALID_ARGUMENT: db is at schema version 2, newer than the 1 migrations given',
    );
    await leader.close();
    const local = await a
      .open('db', { migrations: MIGRATIONS.slice(0, 1) })
      .catch((error: unknown) => error);
    expect(local).toBeInstanceOf(InvalidArgumentError);
    expect(await version(await b.open('db'))).toBe(2);
  });
});
