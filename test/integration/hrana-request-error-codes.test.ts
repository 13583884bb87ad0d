import { describe, expect, test } from 'vitest';
import { testClusters, waitFor } from './support/nodes.ts';

// The codes and messages a Hrana client sees for requests the server refuses: Hrana's own codes,
// translated from hadb's errors at the Hrana edge, and SQLite's for a failed batch step.

const cluster = testClusters('hadb-hrana-codes-');

interface PipelineAnswer {
  results: {
    type: 'ok' | 'error';
    error?: { code: string; message: string };
    response?: { type: string; result?: { step_errors?: unknown[] } };
  }[];
}

async function leaderAddress(): Promise<string> {
  const { db, hrana } = await cluster().serveOverHrana('a', {
    schema: 'create table if not exists t(k text primary key)',
  });
  await waitFor(() => db.writable, 5000, 'the leader');
  return hrana.address;
}

async function pipeline(address: string, requests: unknown[]): Promise<PipelineAnswer> {
  const response = await fetch(`${address}/db/v3/pipeline`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ baton: null, requests }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as PipelineAnswer;
}

const insert = (k: string) => ({
  stmt: { sql: 'insert into t(k) values (?)', args: [{ type: 'text', value: k }] },
});

describe('Hrana: refused requests keep their codes and messages', () => {
  test('stored SQL, malformed requests and a failed atomic batch', async () => {
    const address = await leaderAddress();
    const answer = await pipeline(address, [
      { type: 'execute', stmt: { sql_id: 99 } },
      { type: 'store_sql', sql_id: 1, sql: 'select 1' },
      { type: 'store_sql', sql_id: 1, sql: 'select 2' },
      42,
      { type: 'execute', stmt: { sql: 'select ?', args: [{ type: 'integer', value: 'x' }] } },
      { type: 'batch', batch: { steps: [insert('one'), insert('one')] } },
      { type: 'execute', ...insert('one') },
    ]);
    const [missing, stored, inUse, notObject, badValue, batch, execute] = answer.results;
    expect(missing).toEqual({
      type: 'error',
      error: { code: 'SQL_NOT_FOUND', message: 'no SQL text stored as 99' },
    });
    expect(stored?.type).toBe('ok');
    expect(inUse).toEqual({
      type: 'error',
      error: { code: 'SQL_ID_IN_USE', message: 'sql_id 1 is already in use' },
    });
    expect(notObject).toEqual({
      type: 'error',
      error: { code: 'BAD_REQUEST', message: 'a request must be an object' },
    });
    expect(badValue).toEqual({
      type: 'error',
      error: { code: 'BAD_REQUEST', message: 'an integer value must be a decimal string' },
    });
    expect(batch).toMatchObject({ type: 'ok' });
    expect(batch?.response?.result?.step_errors).toEqual([
      null,
      {
        code: 'SQLITE_CONSTRAINT_PRIMARYKEY',
        message: 'UNIQUE constraint failed: t.k',
      },
    ]);
    expect(execute).toEqual({
      type: 'error',
      error: { code: 'SQLITE_CONSTRAINT_PRIMARYKEY', message: 'UNIQUE constraint failed: t.k' },
    });
  });
});
