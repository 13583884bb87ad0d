import { createClient, LibsqlError } from '@libsql/client';
import { afterEach, describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { TransactionExpiredError } from '../../src/errors.ts';
import { type HranaServer, startHranaServer } from '../../src/hrana/server.ts';
import { SECRET, testClusters, waitFor } from './support/nodes.ts';

// A transaction kept busy (a `select 1` every 100 ms, well inside the idle timeout) is rolled back
// at its maximum lifetime: the writer is free again, and the holder learns it on its next call.

const cluster = testClusters('hadb-interactive-lifetime-');
const LIFETIME_MS = 600;
const SCHEMA = 'create table if not exists t(k text primary key)';
const servers: HranaServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function leader(): Promise<HadbDatabase> {
  const node = await cluster().start('a', { transactionLifetimeMs: LIFETIME_MS });
  const db = await node.open('db', { schema: SCHEMA });
  await waitFor(() => db.writable, 5000, 'the leader');
  return db;
}

/** Calls `keepAlive` every 100 ms until it throws (returned) or `limitMs` passes (null). */
async function keepBusy(keepAlive: () => Promise<unknown>, limitMs: number): Promise<unknown> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    try {
      await keepAlive();
    } catch (error) {
      return error;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return null;
}

describe('interactive transactions have a maximum lifetime', () => {
  test('embedded begin(): rolled back at its lifetime though kept busy; the writer is released', async () => {
    const db = await leader();
    const began = Date.now();
    const tx = await db.begin();
    tx.run({ sql: 'insert into t values (?)', params: ['in-tx'] }, false);
    const error = await keepBusy(async () => tx.run({ sql: 'select 1' }, false), 5000);
    expect(error).toBeInstanceOf(TransactionExpiredError);
    expect((error as TransactionExpiredError).code).toBe('TRANSACTION_EXPIRED');
    expect(Date.now() - began).toBeGreaterThanOrEqual(LIFETIME_MS);
    expect(tx.open).toBe(false);
    await expect(tx.commit()).rejects.toBeInstanceOf(TransactionExpiredError);
    // The writer is free: a write goes through at once rather than after the 15 s wait.
    await db.execute('insert into t values (?)', ['after'], {});
    expect((await db.all('select k from t order by k')).map((row) => row.k)).toEqual(['after']);
  });

  test('begin({ lifetimeMs }) overrides the node default', async () => {
    const db = await leader();
    const tx = await db.begin({ lifetimeMs: 150 });
    const error = await keepBusy(async () => tx.run({ sql: 'select 1' }, false), 450);
    expect(error).toBeInstanceOf(TransactionExpiredError);
  });

  test('over Hrana: @libsql/client gets TRANSACTION_EXPIRED on its next request', async () => {
    const db = await leader();
    const hrana = await startHranaServer({
      host: '127.0.0.1',
      port: 0,
      databases: new Map([['db', db]]),
      authToken: null,
      secret: SECRET,
      self: 'http://127.0.0.1:1',
      leaderAddress: () => null,
    });
    servers.push(hrana);
    const client = createClient({ url: hrana.address });
    try {
      const tx = await client.transaction('write');
      await tx.execute({ sql: 'insert into t values (?)', args: ['in-tx'] });
      const error = await keepBusy(() => tx.execute('select 1'), 5000);
      expect(error).toBeInstanceOf(LibsqlError);
      expect((error as LibsqlError).code).toBe('TRANSACTION_EXPIRED');
      expect((error as LibsqlError).message).toMatch(/maximum lifetime \(600 ms\)/);
      tx.close();
      await client.execute({ sql: 'insert into t values (?)', args: ['after'] });
      const { rows } = await client.execute('select k from t order by k');
      expect(rows.map((row) => row.k)).toEqual(['after']);
    } finally {
      client.close();
    }
  });
});
