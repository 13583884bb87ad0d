import { describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { BadRequestError, NotLeaderError, SqlError } from '../../src/errors.ts';
import {
  decodeForwardResponse,
  encodeMessage,
  type ForwardRequest,
} from '../../src/wire/forward.ts';
import { FORWARD_PATH } from '../../src/wire/node-protocol.ts';
import { SECRET, testClusters, leaderAndFollower as twoNodes } from './support/nodes.ts';

const cluster = testClusters('hadb-forwarding-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';

async function rowCount(db: HadbDatabase): Promise<number> {
  const row = await db.get('select count(*) as n from t', [], { consistency: 'strong' });
  return Number(row?.n);
}

async function post(address: string, body: Uint8Array, authorization?: string) {
  const response = await fetch(`${address}${FORWARD_PATH}`, {
    method: 'POST',
    body,
    headers: authorization === undefined ? {} : { authorization },
  });
  return { status: response.status, body: new Uint8Array(await response.arrayBuffer()) };
}

function request(overrides: Partial<ForwardRequest> = {}): ForwardRequest {
  return {
    v: 1,
    db: 'db',
    requestId: `req-${Math.random()}`,
    op: 'write',
    statements: [{ sql: 'insert into t(v) values (?)', params: ['x'] }],
    durability: 'replicated',
    bigints: false,
    ...overrides,
  };
}

describe('writes forwarded from a follower', () => {
  test('every SQL value type round-trips through forwarding, both ways', async () => {
    const { follower } = await twoNodes(cluster(), SCHEMA);
    const blob = new Uint8Array([0, 1, 2, 255]);
    const big = 2n ** 62n + 3n;
    // A JS number binds as SQLite REAL (better-sqlite3's rule); integers travel as bigint.
    const values = [null, 42n, big, 3.25, 'text ✓', blob];
    const { results } = await follower.batch(
      values.map((value) => ({ sql: 'insert into t(v) values (?)', params: [value] })),
    );
    expect(results.map((r) => r.changes)).toEqual([1, 1, 1, 1, 1, 1]);
    const forwarded = await follower.all('select v from t order by id', [], {
      consistency: 'strong',
      bigints: true,
    });
    expect(forwarded.map((row) => row.v)).toEqual([
      null,
      42n,
      big,
      3.25,
      'text ✓',
      Buffer.from(blob),
    ]);
    const local = await follower.all('select v, typeof(v) as type from t order by id', [], {
      consistency: 'read-your-writes',
    });
    expect(local.map((row) => row.type)).toEqual([
      'null',
      'integer',
      'integer',
      'real',
      'text',
      'blob',
    ]);
    expect(local[1]?.v).toBe(42);
  });

  test('a batch is atomic: a failing statement applies none of it, and the SQL error is typed', async () => {
    const { follower } = await twoNodes(cluster(), SCHEMA);
    const started = Date.now();
    const failure = await follower
      .batch([
        { sql: 'insert into t(id, v) values (1, ?)', params: ['first'] },
        { sql: 'insert into t(id, v) values (1, ?)', params: ['duplicate'] },
      ])
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(SqlError);
    expect((failure as SqlError).sqliteCode).toBe('SQLITE_CONSTRAINT_PRIMARYKEY');
    // Never retried: an SQL error comes back at once, not after the forwarding timeout.
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await rowCount(follower)).toBe(0);
  });

  test('a duplicate delivery of one request applies once, even concurrently', async () => {
    const { a, follower } = await twoNodes(cluster(), SCHEMA);
    const body = encodeMessage(request({ requestId: 'same-request' }));
    const answers = await Promise.all([
      post(a.address as string, body, `Bearer ${SECRET}`),
      post(a.address as string, body, `Bearer ${SECRET}`),
    ]);
    const again = await post(a.address as string, body, `Bearer ${SECRET}`);
    for (const answer of [...answers, again]) {
      expect(answer.status).toBe(200);
      const decoded = decodeForwardResponse(answer.body);
      expect(decoded.ok).toBe(true);
    }
    expect(await rowCount(follower)).toBe(1);
  });

  test('requests without the secret get 401 and touch nothing; malformed ones get 400', async () => {
    const { a, follower } = await twoNodes(cluster(), SCHEMA);
    const body = encodeMessage(request());
    expect((await post(a.address as string, body)).status).toBe(401);
    expect((await post(a.address as string, body, 'Bearer wrong-secret-wrong-secret')).status).toBe(
      401,
    );
    expect(
      (await post(a.address as string, new Uint8Array([0xc1, 0xff]), `Bearer ${SECRET}`)).status,
    ).toBe(400);
    const bad = encodeMessage({
      ...request(),
      statements: [{ sql: 'insert into t values (?)', params: [{}] }],
    });
    expect((await post(a.address as string, bad, `Bearer ${SECRET}`)).status).toBe(400);
    expect(await rowCount(follower)).toBe(0);
  });

  test('a request for a database the node does not host is a typed 404', async () => {
    const { a } = await twoNodes(cluster(), SCHEMA);
    const answer = await post(
      a.address as string,
      encodeMessage(request({ db: 'nope' })),
      `Bearer ${SECRET}`,
    );
    expect(answer.status).toBe(404);
    const decoded = decodeForwardResponse(answer.body);
    expect(decoded.ok === false && decoded.code).toBe('UNKNOWN_DATABASE');
  });

  test('transaction(fn) runs on the leader only; a follower is told to use batch', async () => {
    const { leader, follower } = await twoNodes(cluster(), SCHEMA);
    const id = await leader.transaction((tx) => {
      tx.execute('insert into t(v) values (?)', ['in tx']);
      return tx.get('select max(id) as id from t')?.id;
    });
    expect(id).toBe(1);
    await expect(follower.transaction(() => 1)).rejects.toBeInstanceOf(NotLeaderError);
    await expect(follower.batch([])).rejects.toBeInstanceOf(BadRequestError);
  });

  test('a follower reads its own forwarded write back with read-your-writes, every time', async () => {
    const { follower } = await twoNodes(cluster(), SCHEMA);
    for (let i = 0; i < 30; i++) {
      await follower.execute('insert into t(v) values (?)', [i], {
        durability: i % 2 ? 'async' : 'replicated',
      });
      const row = await follower.get('select count(*) as n from t', [], {
        consistency: 'read-your-writes',
      });
      expect(row?.n).toBe(i + 1);
    }
  });
});
