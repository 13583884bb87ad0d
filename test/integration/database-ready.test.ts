import { describe, expect, test } from 'vitest';
import { ClosedError, TimeoutError } from '../../src/errors.ts';
import { testClusters } from './support/nodes.ts';

// open() resolves once the local copy is usable, before the first election ends.
const cluster = testClusters('hadb-ready-');

describe('waiting for a database to have a leader', () => {
  test('begin() and transaction(fn) right after open() on a new single node wait for its election', async () => {
    const node = await cluster().start('a');
    const db = await node.open('fresh');
    const tx = await db.begin();
    tx.run({ sql: 'create table t(k text)' }, false);
    await tx.commit();
    const other = await node.open('other');
    const n = await other.transaction((t) => {
      t.execute('create table u(k text)');
      return t.execute('insert into u values (?)', ['x']).changes;
    });
    expect(n).toBe(1);
  });

  test('ready({ writable: true }) resolves once this node can commit', async () => {
    const node = await cluster().start('a');
    const db = await node.open('fresh');
    await db.ready({ writable: true });
    expect(db.writable).toBe(true);
    expect(db.role).toBe('leader');
  });

  test('on a follower: ready() resolves once it knows its leader; writable: true times out', async () => {
    const c = cluster();
    const onA = await (await c.start('a')).open('db');
    await onA.ready({ writable: true });
    const onB = await (await c.start('b')).open('db');
    await onB.ready();
    expect(onB.role).toBe('follower');
    await onB.execute('create table t(k text)');
    const started = Date.now();
    await expect(onB.ready({ writable: true, timeoutMs: 300 })).rejects.toBeInstanceOf(
      TimeoutError,
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  test('a closed database refuses to wait', async () => {
    const node = await cluster().start('a');
    const db = await node.open('fresh');
    await db.close();
    await expect(db.ready()).rejects.toBeInstanceOf(ClosedError);
  });
});
