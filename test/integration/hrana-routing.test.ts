import http from 'node:http';
import { createClient, LibsqlError } from '@libsql/client';
import { afterEach, describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { InvalidArgumentError } from '../../src/errors.ts';
import { type HranaServer, startHranaServer } from '../../src/hrana/server.ts';
import { SECRET, testClusters } from './support/nodes.ts';

// Each path names exactly one database, or none: a request never lands in another database.

const cluster = testClusters('hadb-hrana-routing-');
const servers: HranaServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function serveDatabases(names: string[]) {
  const node = await cluster().start('a');
  const databases = new Map<string, HadbDatabase>();
  for (const name of names) databases.set(name, await node.open(name));
  const hrana = await startHranaServer({
    host: '127.0.0.1',
    port: 0,
    databases,
    authToken: null,
    secret: SECRET,
    self: node.address ?? '',
    leaderAddress: () => null,
  });
  servers.push(hrana);
  return { hrana, databases };
}

/** Sends `path` as the request target byte for byte (fetch would resolve `//x` as a host). */
function post(
  address: string,
  path: string,
  sql: string,
): Promise<{ status: number; body: { code?: string; message?: string } }> {
  const url = new URL(address);
  const payload = JSON.stringify({
    baton: null,
    requests: [{ type: 'execute', stmt: { sql } }, { type: 'close' }],
  });
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: url.hostname, port: url.port, method: 'POST', path },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
          }),
        );
      },
    );
    request.on('error', reject);
    request.end(payload);
  });
}

async function tables(db: HadbDatabase): Promise<string[]> {
  const rows = await db.all("select name from sqlite_schema where type = 'table' order by name");
  return rows.map((row) => String(row.name));
}

describe('Hrana routing', () => {
  test('a malformed or ambiguous path is a 404 and runs nothing in any database', async () => {
    const { hrana, databases } = await serveDatabases(['app', 'orders']);
    const app = databases.get('app') as HadbDatabase;
    const orders = databases.get('orders') as HadbDatabase;

    for (const path of ['//orders/v3/pipeline', '/orders//v3/pipeline', '/v3/pipeline']) {
      const answer = await post(hrana.address, path, 'create table wrong(x)');
      expect(answer.status, path).toBe(404);
      expect(answer.body.code, path).toBe('NOT_FOUND');
    }
    const ambiguous = await post(hrana.address, '/v3/pipeline', 'select 1');
    expect(ambiguous.body.message).toContain('trailing slash');

    // The client resolves `v3/pipeline` against `/orders` to `/v3/pipeline`: refused, not `app`.
    const noSlash = createClient({ url: `${hrana.address}/orders` });
    const refused = await noSlash.execute('create table wrong(x)').catch((error) => error);
    noSlash.close();
    expect(refused).toBeInstanceOf(LibsqlError);
    expect(String(refused.message)).toContain('trailing slash');

    const unknown = await post(hrana.address, '/nowhere/v3/pipeline', 'select 1');
    expect(unknown).toMatchObject({ status: 404, body: { code: 'UNKNOWN_DATABASE' } });
    expect(await tables(app)).toEqual([]);
    expect(await tables(orders)).toEqual([]);

    const ok = await post(hrana.address, '/orders/v3/pipeline', 'create table right(x)');
    expect(ok.status).toBe(200);
    const client = createClient({ url: `${hrana.address}/app/` });
    await client.execute('create table mine(x)');
    client.close();
    expect(await tables(orders)).toEqual(['right']);
    expect(await tables(app)).toEqual(['mine']);
  }, 60_000);

  test('a node serving one database also serves it at the root', async () => {
    const { hrana, databases } = await serveDatabases(['only']);
    const client = createClient({ url: hrana.address });
    await client.execute('create table t(x)');
    client.close();
    expect(await tables(databases.get('only') as HadbDatabase)).toEqual(['t']);
    expect((await post(hrana.address, '//only/v3/pipeline', 'select 1')).status).toBe(404);
  }, 60_000);

  test('database names that are Hrana path segments are refused when opened', async () => {
    const node = await cluster().start('a');
    for (const name of ['v2', 'v3', 'v3-x', 'V3', 'v3-protobuf']) {
      await expect(node.open(name), name).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    expect(node.status().databases).toEqual([]);
    await expect(node.open('v3x')).resolves.toMatchObject({ name: 'v3x' });
  }, 60_000);
});
