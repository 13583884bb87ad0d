import { describe, expect, test } from 'vitest';
import type { ClusterView } from '../../src/api-types.ts';
import { freePort } from '../support/relay.ts';
import { testClusters, waitFor } from './support/nodes.ts';

const cluster = testClusters('hadb-cluster-view-');
const SCHEMA = 'create table if not exists t(k text primary key)';

/** An address nothing listens on. */
async function deadAddress(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

async function clusterOf(address: string | undefined): Promise<ClusterView> {
  const response = await fetch(`${address}/cluster`);
  expect(response.headers.get('content-type')).toContain('application/json');
  return (await response.json()) as ClusterView;
}

function summary(view: ClusterView) {
  return view.nodes.map((node) => ({
    node: node.node,
    up: node.up,
    roles: node.databases.map((db) => `${db.name}:${db.role}`),
  }));
}

describe('the cluster view of a node', () => {
  test('/cluster shows the nodes learned from leases, tails and peers, and those down', async () => {
    const c = cluster();
    const dead = await deadAddress();
    const a = await c.start('a');
    await a.open('db', { schema: SCHEMA });
    const b = await c.start('b', { peers: [dead] });
    await b.open('db');
    const cNode = await c.start('c');
    await cNode.open('db');
    // b knows a from the lease, c through a (c tails a), and the dead peer from its options.
    await waitFor(
      async () => (await clusterOf(b.address)).nodes.filter((node) => node.up).length === 3,
      5000,
      'b to see three nodes up',
    );
    const view = await clusterOf(b.address);
    expect(view.node).toBe('b');
    expect(summary(view)).toEqual([
      { node: 'a', up: true, roles: ['db:leader'] },
      { node: 'b', up: true, roles: ['db:follower'] },
      { node: 'c', up: true, roles: ['db:follower'] },
      { node: null, up: false, roles: [] },
    ]);
    expect(view.nodes.find((node) => node.self)?.node).toBe('b');
    expect(view.nodes.find((node) => !node.up)).toMatchObject({ address: dead });
    expect(view.nodes[0]?.transitions.at(-1)).toMatchObject({ node: 'a', to: 'leader' });

    await a.close();
    await waitFor(
      () => ['b', 'c'].includes(b.status().databases[0]?.leader ?? ''),
      5000,
      'new leader',
    );
    await waitFor(
      async () => {
        const after = await clusterOf(b.address);
        return after.nodes.some((node) => node.node === 'a' && !node.up);
      },
      5000,
      'a shown as down',
    );
    const after = summary(await clusterOf(b.address));
    expect(after.filter((node) => node.roles.includes('db:leader'))).toHaveLength(1);
    expect(after.find((node) => node.node === 'a')).toEqual({ node: 'a', up: false, roles: [] });
  });

  test('GET / is the status page, escaped, with no secrets in it', async () => {
    const c = cluster();
    const a = await c.start('a');
    await a.open('db', { schema: SCHEMA });
    const response = await fetch(`${a.address}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await response.text();
    expect(html).toContain('<title>hadb: a</title>');
    expect(html).toContain("fetch('cluster'");
    expect(html).not.toContain('test-cluster-secret');
  });
});
