import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createClient, LibsqlError } from '@libsql/client';
import { afterAll, describe, expect, it } from 'vitest';
import { serveCluster } from './support/serve.ts';

// `hadb serve --transaction-lifetime` and `--max-streams-per-client` reach the node and its
// Hrana server: a busy transaction is rolled back at its lifetime, a second stream is refused.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-serve-limits-'));
const cluster = serveCluster(root, [
  '--db',
  'app',
  '--transaction-lifetime',
  '1.5',
  '--max-streams-per-client',
  '1',
]);

afterAll(async () => {
  await cluster.stop();
  fs.rmSync(root, { recursive: true, force: true });
}, 30_000);

describe('hadb serve: limit flags', () => {
  it('rolls a busy transaction back at --transaction-lifetime and caps streams per client', async () => {
    const node = await cluster.start('a');
    await cluster.roles('app');
    const client = createClient({ url: `${node.hrana}/app/`, authToken: cluster.token });
    try {
      await client.execute('create table t(k text)');
      const tx = await client.transaction('write');
      await tx.execute({ sql: 'insert into t values (?)', args: ['in-tx'] });

      const second = await client.transaction('read');
      const refused = await second.execute('select 1').catch((error: unknown) => error);
      second.close();
      expect(refused).toBeInstanceOf(LibsqlError);
      expect((refused as LibsqlError).code).toBe('LIMIT_EXCEEDED');

      const began = Date.now();
      let expired: unknown = null;
      while (expired === null && Date.now() - began < 10_000) {
        expired = await tx.execute('select 1').then(
          () => null,
          (error: unknown) => error,
        );
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      tx.close();
      expect(expired).toBeInstanceOf(LibsqlError);
      expect((expired as LibsqlError).code).toBe('TRANSACTION_EXPIRED');
      expect(Date.now() - began).toBeLessThan(5000);
      await client.execute({ sql: 'insert into t values (?)', args: ['after'] });
      const { rows } = await client.execute('select k from t');
      expect(rows.map((row) => row.k)).toEqual(['after']);
    } finally {
      client.close();
    }
  }, 60_000);
});
