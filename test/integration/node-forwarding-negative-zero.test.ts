import { describe, expect, test } from 'vitest';
import {
  decodeForwardResponse,
  encodeMessage,
  type ForwardResponse,
} from '../../src/wire/forward.ts';
import { FORWARD_PATH } from '../../src/wire/node-protocol.ts';
import { SECRET, testClusters, leaderAndFollower as twoNodes } from './support/nodes.ts';

const cluster = testClusters('hadb-negative-zero-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
/** atan2(-0, -1) is -π and atan2(0, -1) is π: SQLite's own view of the stored sign. */
const STORED = 'select v, atan2(v, -1) < 0 as negative from t where id = ?';

function expectNegativeZero(value: unknown): void {
  expect(Object.is(value, -0)).toBe(true);
  expect(1 / (value as number)).toBe(Number.NEGATIVE_INFINITY);
}

describe('-0 through forwarding', () => {
  test('a forwarded write stores -0 as the same call on the leader does', async () => {
    const { leader, follower } = await twoNodes(cluster(), SCHEMA);
    await leader.execute('insert into t(id, v) values (1, ?)', [-0]);
    await follower.execute('insert into t(id, v) values (2, ?)', [-0]);
    for (const id of [1, 2]) {
      const row = await leader.get(STORED, [id]);
      expectNegativeZero(row?.v);
      expect(row?.negative).toBe(1);
    }
  });

  test('forwarded RETURNING rows and strong reads from a follower carry -0', async () => {
    const { follower } = await twoNodes(cluster(), SCHEMA);
    const inserted = await follower.execute('insert into t(id, v) values (1, ?) returning v', [-0]);
    expectNegativeZero(inserted.rows?.[0]?.v);
    const strong = await follower.get(STORED, [1], { consistency: 'strong' });
    expectNegativeZero(strong?.v);
    expect(strong?.negative).toBe(1);
    const echoed = await follower.get('select ? as v', [-0], { consistency: 'strong' });
    expectNegativeZero(echoed?.v);
  });

  test('a retried request id answers -0 from the remembered result too', async () => {
    const { a } = await twoNodes(cluster(), SCHEMA);
    const body = encodeMessage({
      v: 1,
      db: 'db',
      requestId: 'retried',
      op: 'write',
      statements: [{ sql: 'insert into t(id, v) values (1, ?) returning v', params: [-0] }],
      durability: 'replicated',
      bigints: false,
    });
    const send = async (): Promise<ForwardResponse> => {
      const response = await fetch(`${a.address}${FORWARD_PATH}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${SECRET}` },
        body,
      });
      expect(response.status).toBe(200);
      return decodeForwardResponse(new Uint8Array(await response.arrayBuffer()));
    };
    const first = await send();
    const retried = await send();
    for (const answer of [first, retried]) {
      expect(answer.ok).toBe(true);
      if (answer.ok) expectNegativeZero(answer.results[0]?.rows?.[0]?.v);
    }
  });
});
