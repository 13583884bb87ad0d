import { describe, expect, test } from 'vitest';
import { testClusters } from './support/nodes.ts';

const cluster = testClusters('hadb-observability-');
const DB = 'orders-private-name';

describe('what a node shows operators', () => {
  test('/status names every database with its role, position and leader', async () => {
    const c = cluster();
    const a = await c.start('a');
    await a.open(DB, { schema: 'create table if not exists t(x)' });
    const b = await c.start('b');
    const onB = await b.open(DB);
    await onB.execute('insert into t values (1)');
    const statusOfB = await (await fetch(`${b.address}/status`)).json();
    expect(statusOfB).toMatchObject({
      node: 'b',
      address: b.address,
      databases: [{ name: DB, role: 'follower', epoch: 1, leader: 'a', leaseProblem: null }],
    });
    expect(a.status().databases[0]).toMatchObject({ role: 'leader', leader: 'a', caughtUp: true });
  });

  test('/metrics counts by role and outcome, never by database name', async () => {
    const c = cluster();
    const a = await c.start('a');
    await a.open(DB, { schema: 'create table if not exists t(x primary key)' });
    const b = await c.start('b');
    const onB = await b.open(DB);
    await onB.execute('insert into t values (1)');
    await expect(onB.execute('insert into t values (1)')).rejects.toThrow(/UNIQUE/);
    const response = await fetch(`${a.address}/metrics`);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    expect(text).toContain('# TYPE hadb_databases gauge');
    expect(text).toContain('hadb_databases{role="leader"} 1');
    expect(text).toMatch(/hadb_forwarded_requests_total\{op="write",outcome="ok"\} [1-9]/);
    expect(text).toContain('hadb_forwarded_requests_total{op="write",outcome="sql_error"} 1');
    expect(text).toMatch(/hadb_role_changes_total\{role="leader"\} 1/);
    expect(text).not.toContain(DB);
  });
});
