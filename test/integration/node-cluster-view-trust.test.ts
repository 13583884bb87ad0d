import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import type { ClusterView } from '../../src/api-types.ts';
import { SECRET, testClusters, waitFor } from './support/nodes.ts';

// The cluster view trusts only nodes that prove they hold the cluster secret, and learns peers
// only from authenticated sources: what another process claims or lists is not taken.

const cluster = testClusters('hadb-cluster-view-trust-');
const servers: http.Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** An HTTP server answering every request with `answer(path)`; counts what it was asked. */
async function fakeServer(answer: (path: string) => unknown) {
  const asked: string[] = [];
  const server = http.createServer((request, response) => {
    asked.push(request.url ?? '');
    const body = JSON.stringify(answer(request.url ?? ''));
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return { address: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, asked };
}

async function clusterOf(address: string | undefined): Promise<ClusterView> {
  return (await (await fetch(`${address}/cluster`)).json()) as ClusterView;
}

describe('whom the cluster view trusts', () => {
  test('a process on a peer address that cannot prove the secret is shown down, and not crawled', async () => {
    const c = cluster();
    const a = await c.start('a');
    await a.open('db', { schema: 'create table if not exists t(k)' });
    const elsewhere = await fakeServer(() => ({}));
    const claim = {
      node: 'a',
      address: null,
      databases: [{ name: 'db', role: 'leader', epoch: 999, seq: 1, leaderAddress: null }],
      transitions: [],
      peers: [elsewhere.address],
    };
    // It says what a node says, at both paths, with a made-up proof.
    const fake = await fakeServer((path) =>
      path.startsWith('/hadb/') ? { status: JSON.stringify(claim), proof: 'x'.repeat(43) } : claim,
    );
    const b = await c.start('b', { peers: [fake.address] });
    await b.open('db');
    await waitFor(
      async () => (await clusterOf(b.address)).nodes.some((node) => node.node === 'a' && node.up),
      10_000,
      'b to see a',
    );

    const view = await clusterOf(b.address);
    const epochs = view.nodes.flatMap((node) => node.databases.map((db) => db.epoch));
    expect(epochs).not.toContain(999);
    const shown = view.nodes.find((node) => node.address === fake.address);
    expect(shown).toMatchObject({ up: false, node: null, databases: [] });
    expect(shown?.error).toContain('not proven with the cluster secret');
    expect(fake.asked.length).toBeGreaterThan(0);
    // The secret never went to it, and the address it listed was never asked.
    expect(fake.asked.join('\n')).not.toContain(SECRET);
    expect(elsewhere.asked).toEqual([]);
    expect(b.status().peers).not.toContain(elsewhere.address);
    expect(view.nodes.find((node) => node.node === 'a')).toMatchObject({
      up: true,
      databases: [expect.objectContaining({ name: 'db', role: 'leader' })],
    });
  }, 60_000);

  test('a tail request adds its `from` to the peers only with the cluster secret', async () => {
    const c = cluster();
    const a = await c.start('a');
    await a.open('db', { schema: 'create table if not exists t(k)' });
    const tail = (from: string, secret: string | null) =>
      fetch(`${a.address}/hadb/v1/tail?db=nowhere&after=0&from=${encodeURIComponent(from)}`, {
        headers: secret === null ? {} : { authorization: `Bearer ${secret}` },
      });
    expect((await tail('http://127.0.0.1:1', null)).status).toBe(401);
    expect((await tail('http://127.0.0.1:2', 'a-wrong-secret-of-some-length')).status).toBe(401);
    expect(a.status().peers).toEqual([]);
    expect((await tail('http://127.0.0.1:3', SECRET)).status).toBe(404);
    expect(a.status().peers).toEqual(['http://127.0.0.1:3']);
  }, 60_000);
});
