import { createClient } from '@libsql/client';
import { describe, expect, test } from 'vitest';
import { type TestCluster, testClusters } from './support/nodes.ts';

// Two nodes in this process, each with its Hrana server, wired as `hadb serve` wires them.

const cluster = testClusters('hadb-hrana-floats-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
/** atan2(-0, -1) is -π and atan2(0, -1) is π: SQLite's own view of the stored sign. */
const NEGATIVE = 'select atan2(v, -1) < 0 as negative from t where id = ?';

function served(c: TestCluster, id: string) {
  return c.serveOverHrana(id, { schema: SCHEMA });
}

/** A pipeline written by hand: JSON.stringify cannot write the -0.0 a client may send. */
async function pipeline(address: string, requests: string): Promise<string> {
  const response = await fetch(`${address}/db/v2/pipeline`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: `{"baton":null,"requests":[${requests}]}`,
  });
  expect(response.status).toBe(200);
  return response.text();
}

function execute(sql: string, args = ''): string {
  return `{"type":"execute","stmt":{"sql":"${sql}","args":[${args}]}}`;
}

async function leaderAndFollower() {
  const c = cluster();
  const leader = await served(c, 'a');
  const follower = await served(c, 'b');
  expect(leader.db.role).toBe('leader');
  expect(follower.db.role).toBe('follower');
  return { leader, follower };
}

describe('floats through Hrana: -0 and ±Infinity', () => {
  test('@libsql/client reads -0 as -0', async () => {
    const { leader } = await leaderAndFollower();
    await leader.db.execute('insert into t(id, v) values (1, ?)', [-0]);
    const client = createClient({ url: leader.hrana.address });
    const { rows } = await client.execute('select v from t where id = 1');
    client.close();
    expect(Object.is(rows[0]?.v, -0)).toBe(true);
  });

  test('@libsql/client reads ±Infinity (JSON.stringify would write null, which it refuses)', async () => {
    const { leader } = await leaderAndFollower();
    await leader.db.batch([
      { sql: 'insert into t(id, v) values (1, ?)', params: [Number.POSITIVE_INFINITY] },
      { sql: 'insert into t(id, v) values (2, ?)', params: [Number.NEGATIVE_INFINITY] },
    ]);
    const client = createClient({ url: leader.hrana.address });
    const { rows } = await client.execute('select v from t order by id');
    client.close();
    expect(rows.map((row) => row.v)).toEqual([Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]);
  });

  test('a transaction begun on a follower is relayed to the leader with -0, both ways', async () => {
    const { leader, follower } = await leaderAndFollower();
    const text = await pipeline(
      follower.hrana.address,
      [
        execute('begin'),
        execute('insert into t(id, v) values (1, ?) returning v', '{"type":"float","value":-0.0}'),
        execute('commit'),
        '{"type":"close"}',
      ].join(','),
    );
    const answer = JSON.parse(text) as {
      results: { type: string; response: { result: { rows: { value: number }[][] } } }[];
    };
    expect(answer.results.map((result) => result.type)).toEqual(['ok', 'ok', 'ok', 'ok']);
    expect((await leader.db.get(NEGATIVE, [1]))?.negative).toBe(1);
    expect(Object.is(answer.results[1]?.response.result.rows[0]?.[0]?.value, -0)).toBe(true);
  });

  test('a -0.0 argument sent to a follower is forwarded and stored as -0 on the leader', async () => {
    const { leader, follower } = await leaderAndFollower();
    await pipeline(
      follower.hrana.address,
      execute('insert into t(id, v) values (1, ?)', '{"type":"float","value":-0.0}'),
    );
    expect((await leader.db.get(NEGATIVE, [1]))?.negative).toBe(1);
  });
});
