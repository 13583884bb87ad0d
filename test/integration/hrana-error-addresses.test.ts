import pino from 'pino';
import { afterEach, describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { type HranaServer, startHranaServer } from '../../src/hrana/server.ts';
import { withoutAddresses } from '../../src/wire/client-errors.ts';
import { freePort } from '../support/relay.ts';
import { SECRET, testClusters } from './support/nodes.ts';

// What a Hrana client hears of a failure names no node of the cluster; the server logs it all.

const cluster = testClusters('hadb-hrana-addresses-');
const servers: HranaServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function pipeline(address: string, body: unknown) {
  const response = await fetch(`${address}/db/v3/pipeline`, {
    method: 'POST',
    body: JSON.stringify(body),
  });
  return { status: response.status, text: await response.text() };
}

describe('Hrana error messages', () => {
  test('a stream whose node does not answer is reported without that node address', async () => {
    const node = await cluster().start('a');
    const db = await node.open('db');
    const gonePort = await freePort();
    const gone = `http://127.0.0.1:${gonePort}`;
    const logged: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => logged.push(line) });
    const start = async (self: string) => {
      const server = await startHranaServer({
        host: '127.0.0.1',
        port: 0,
        databases: new Map<string, HadbDatabase>([['db', db]]),
        authToken: null,
        secret: SECRET,
        self,
        leaderAddress: () => null,
        logger,
      });
      servers.push(server);
      return server;
    };
    // The stream is held by a node at `gone` (its baton says so), which then stops answering.
    const holder = await start(gone);
    const other = await start(node.address ?? '');
    const opened = await pipeline(holder.address, {
      baton: null,
      requests: [{ type: 'execute', stmt: { sql: 'select 1' } }],
    });
    const { baton } = JSON.parse(opened.text) as { baton: string };
    const answer = await pipeline(other.address, {
      baton,
      requests: [{ type: 'execute', stmt: { sql: 'select 2' } }],
    });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.text)).toMatchObject({ code: 'STREAM_EXPIRED' });
    expect(answer.text).toContain('<internal address>');
    expect(answer.text).not.toContain('127.0.0.1');
    expect(answer.text).not.toContain(String(gonePort));
    // The operator still sees where it went wrong.
    expect(logged.join('\n')).toContain(gone);
  }, 60_000);

  test('URLs, IP addresses with ports and unresolved host names are hidden', () => {
    expect(
      withoutAddresses(
        'POST http://10.0.0.7:7000/hadb/v1/forward: connect ECONNREFUSED 10.0.0.7:7000',
      ),
    ).toBe('POST <internal address>: connect ECONNREFUSED <internal address>');
    expect(withoutAddresses('connect ECONNREFUSED [::1]:7000 (http://[::1]:7000)')).toBe(
      'connect ECONNREFUSED <internal address> (<internal address>)',
    );
    expect(withoutAddresses('getaddrinfo ENOTFOUND node-b.internal')).toBe(
      'getaddrinfo ENOTFOUND <internal address>',
    );
    expect(withoutAddresses('UNIQUE constraint failed: t.k')).toBe('UNIQUE constraint failed: t.k');
  });
});
