import { type Client, createClient, LibsqlError, type Transaction } from '@libsql/client';
import { describe, expect, test } from 'vitest';
import type { HranaServer } from '../../src/hrana/server.ts';
import { MAX_STORED_SQL_BYTES, MAX_STORED_SQL_COUNT } from '../../src/hrana/streams.ts';
import { type TestCluster, testClusters, waitFor } from './support/nodes.ts';

// What one client can make a node keep: SQL texts stored on a stream, and open streams.

const cluster = testClusters('hadb-hrana-limits-');

/** Node `id` of the cluster `c`, with its Hrana server wired as `hadb serve` wires it. */
function served(c: TestCluster, id: string, maxStreamsPerClient?: number) {
  return c.serveOverHrana(id, {
    schema: 'create table if not exists t(k text)',
    hrana: maxStreamsPerClient === undefined ? {} : { maxStreamsPerClient },
  });
}

async function leader(maxStreamsPerClient?: number): Promise<HranaServer> {
  const { db, hrana } = await served(cluster(), 'a', maxStreamsPerClient);
  await waitFor(() => db.writable, 5000, 'the leader');
  return hrana;
}

/**
 * Opens a read transaction through each of `urls` (one client address), then one more through
 * the last: that one must be refused; once one ends, another is accepted.
 */
async function expectCapAfter(urls: string[]): Promise<void> {
  const clients = urls.map((url) => createClient({ url }));
  const last = clients[clients.length - 1] as Client;
  const open: Transaction[] = [];
  try {
    for (const client of clients) {
      const tx = await client.transaction('read');
      await tx.execute('select 1');
      open.push(tx);
    }
    const extra = await last.transaction('read');
    const error = await extra.execute('select 1').catch((caught: unknown) => caught);
    extra.close();
    expect(error).toBeInstanceOf(LibsqlError);
    expect((error as LibsqlError).code).toBe('LIMIT_EXCEEDED');
    await open.shift()?.commit();
    const next = await last.transaction('read');
    await next.execute('select 1');
    open.push(next);
  } finally {
    for (const tx of open) tx.close();
    for (const client of clients) client.close();
  }
}

interface PipelineAnswer {
  baton: string | null;
  results: { type: 'ok' | 'error'; error?: { code: string; message: string } }[];
}

async function pipeline(
  address: string,
  baton: string | null,
  requests: unknown[],
): Promise<PipelineAnswer> {
  const response = await fetch(`${address}/db/v3/pipeline`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ baton, requests }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as PipelineAnswer;
}

const store = (id: number, sql: string) => ({ type: 'store_sql', sql_id: id, sql });

describe('Hrana: stored SQL per stream and streams per client are capped', () => {
  test('store_sql past the count limit fails with LIMIT_EXCEEDED; close_sql makes room', async () => {
    const { address } = await leader();
    const requests = Array.from({ length: MAX_STORED_SQL_COUNT + 1 }, (_, i) =>
      store(i, `select ${i}`),
    );
    const first = await pipeline(address, null, requests);
    const types = first.results.map((result) => result.type);
    expect(types.slice(0, MAX_STORED_SQL_COUNT).every((type) => type === 'ok')).toBe(true);
    expect(first.results[MAX_STORED_SQL_COUNT]?.error?.code).toBe('LIMIT_EXCEEDED');
    // The stream is still usable, and a freed slot can be taken again.
    const second = await pipeline(address, first.baton, [
      { type: 'close_sql', sql_id: 0 },
      store(MAX_STORED_SQL_COUNT, 'select 1'),
      { type: 'execute', stmt: { sql_id: MAX_STORED_SQL_COUNT } },
      { type: 'close' },
    ]);
    expect(second.results.map((result) => result.type)).toEqual(['ok', 'ok', 'ok', 'ok']);
  });

  test('store_sql past the byte limit fails with LIMIT_EXCEEDED', async () => {
    const { address } = await leader();
    const big = `select 1 /*${'x'.repeat(MAX_STORED_SQL_BYTES / 2)}*/`;
    const answer = await pipeline(address, null, [store(1, big), store(2, big), { type: 'close' }]);
    expect(answer.results[0]?.type).toBe('ok');
    expect(answer.results[1]?.error).toMatchObject({
      code: 'LIMIT_EXCEEDED',
      message: expect.stringMatching(/^a stream stores at most/),
    });
  });

  test('@libsql/client: one more open transaction than the per-client cap fails with LIMIT_EXCEEDED', async () => {
    const hrana = await leader(3);
    const url = `${hrana.address}/db/`;
    await expectCapAfter([url, url, url]);
  });

  test('streams relayed from a follower count against their client on the leader', async () => {
    const c = cluster();
    const a = await served(c, 'a', 2);
    await waitFor(() => a.db.writable, 5000, 'the leader');
    // The follower's own cap is out of reach: the leader, which holds the streams, refuses the
    // second one through the follower, as the client (same address) already holds one there.
    const b = await served(c, 'b', 100);
    expect(b.db.role).toBe('follower');
    await expectCapAfter([`${a.hrana.address}/db/`, `${b.hrana.address}/db/`]);
  });
});
