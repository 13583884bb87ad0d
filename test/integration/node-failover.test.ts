import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { HadbDatabase, ParkedTail } from '../../src/api-types.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import { decodeChangeset } from '../../src/wire/changeset.ts';
import { FAST_TIMING, SECRET, testClusters, waitFor, writeLoop } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const cluster = testClusters('hadb-failover-');
const freshDir = tempDirs('hadb-failover-mem-');
const SCHEMA = 'create table if not exists t(k text primary key)';

async function keys(db: HadbDatabase): Promise<string[]> {
  const rows = await db.all('select k from t order by k');
  return rows.map((row) => String(row.k));
}

describe('failover between nodes', () => {
  test('a leader that closes hands over at once: a follower leads well before the TTL', async () => {
    const c = cluster();
    const a = await c.start('a');
    const onA = await a.open('db', { schema: SCHEMA });
    const b = await c.start('b');
    const onB = await b.open('db', { schema: SCHEMA });
    await onA.execute('insert into t values (?)', ['before']);
    expect([onA.writable, onB.writable]).toEqual([true, false]);
    const load = writeLoop(onB, 'b');
    await waitFor(() => load.acked.length >= 5, 5000, 'forwarded writes');
    const closing = Date.now();
    await a.close();
    await waitFor(() => onB.role === 'leader', 5000, 'b to lead');
    const handoffMs = Date.now() - closing;
    await waitFor(() => onB.writable, 5000, 'b to be able to commit');
    expect(onA.writable).toBe(false);
    const ackedBefore = load.acked.length;
    await waitFor(() => load.acked.length >= ackedBefore + 5, 5000, 'writes on the new leader');
    await load.stop();
    expect(handoffMs).toBeLessThan(FAST_TIMING.ttlMs);
    expect(load.failed).toEqual([]);
    const content = await keys(onB);
    expect(content).toEqual(['before', ...load.acked].sort());
  });

  test('the old leader becomes a follower of the new one and keeps its copy current', async () => {
    const c = cluster();
    const a = await c.start('a');
    const onA = await a.open('db', { schema: SCHEMA });
    const b = await c.start('b');
    const onB = await b.open('db', { schema: SCHEMA });
    await onA.execute('insert into t values (?)', ['one']);
    onA.handoff();
    await waitFor(() => onB.role === 'leader' && onA.role === 'follower', 5000, 'the handoff');
    await onB.execute('insert into t values (?)', ['two']);
    await onA.execute('insert into t values (?)', ['three']);
    expect(
      await onA.all('select k from t order by k', [], { consistency: 'read-your-writes' }),
    ).toEqual([{ k: 'one' }, { k: 'three' }, { k: 'two' }]);
    expect(onA.position.epoch).toBe(2);
  });

  test('follower writes go on across a failover, each applied once', async () => {
    const c = cluster();
    const a = await c.start('a');
    await a.open('db', { schema: SCHEMA });
    const b = await c.start('b');
    const onB = await b.open('db', { schema: SCHEMA });
    const third = await c.start('c');
    const onC = await third.open('db', { schema: SCHEMA });
    const fromB = writeLoop(onB, 'b');
    const fromC = writeLoop(onC, 'c');
    await waitFor(() => fromB.acked.length > 10 && fromC.acked.length > 10, 5000, 'load');
    await a.close();
    await waitFor(() => onB.role === 'leader' || onC.role === 'leader', 5000, 'a new leader');
    const target = fromB.acked.length + fromC.acked.length + 20;
    await waitFor(() => fromB.acked.length + fromC.acked.length > target, 5000, 'writes after');
    await Promise.all([fromB.stop(), fromC.stop()]);
    expect([...fromB.failed, ...fromC.failed]).toEqual([]);
    const leader = onB.role === 'leader' ? onB : onC;
    const content = await keys(leader);
    expect(content).toEqual([...fromB.acked, ...fromC.acked].sort());
  });
});

describe('a leader cut off from storage and leases', () => {
  test('parks what it could not ship, steps down, and never makes it durable', async () => {
    const storage = new MemoryStorage();
    const leases = new MemoryLeaseStore();
    const root = freshDir('nodes');
    const nodes: HadbNode[] = [];
    const start = async (id: string) => {
      const node = await createNode({
        id,
        secret: SECRET,
        dataDir: path.join(root, id),
        storage: storage.forNode(id),
        leases: leases.forNode(id),
        timing: FAST_TIMING,
      });
      nodes.push(node);
      return node;
    };
    try {
      const onA = await (await start('a')).open('db', { schema: SCHEMA });
      const parked: ParkedTail[] = [];
      onA.on('parked', (tail) => parked.push(tail));
      const onB = await (await start('b')).open('db', { schema: SCHEMA });
      await onA.execute('insert into t values (?)', ['durable'], { durability: 'replicated' });

      storage.faults.cutOff('a');
      await onA.execute('insert into t values (?)', ['local only'], { durability: 'async' });
      leases.faults.cutOff('a');

      await waitFor(() => parked.length === 1, 10_000, 'the tail to be parked');
      await waitFor(() => onB.role === 'leader', 10_000, 'b to take over');
      const [tail] = parked as [ParkedTail];
      expect(fs.existsSync(tail.file)).toBe(true);
      const parkedChangeset = decodeChangeset(fs.readFileSync(tail.file), { db: 'db' });
      expect(parkedChangeset.epoch).toBe(1);
      expect(parkedChangeset.seq).toBe(tail.afterSeq + 1);
      expect(await keys(onB)).toEqual(['durable']);

      storage.faults.heal('a');
      leases.faults.heal('a');
      await onB.execute('insert into t values (?)', ['after']);
      await waitFor(async () => (await keys(onA)).length === 2, 10_000, 'a to follow b');
      expect(await keys(onA)).toEqual(['after', 'durable']);
      expect(onA.role).toBe('follower');
    } finally {
      await Promise.allSettled(nodes.map((node) => node.close()));
    }
  });
});

describe('a lease store that can watch', () => {
  test('followers hear of a release at once instead of at their next poll', async () => {
    const storage = new MemoryStorage();
    const leases = new MemoryLeaseStore();
    const root = freshDir('watch');
    // Polls nearly as rarely as the TTL allows, and no listener: only the watch can be quick.
    const timing = { ...FAST_TIMING, pollIntervalMs: FAST_TIMING.ttlMs };
    const nodes = await Promise.all(
      ['a', 'b'].map((id) =>
        createNode({
          id,
          secret: SECRET,
          dataDir: path.join(root, id),
          storage,
          leases: leases.forNode(id),
          timing,
          listen: false,
        }),
      ),
    );
    try {
      const [onA, onB] = [
        await (nodes[0] as HadbNode).open('db', { schema: SCHEMA }),
        // Without listeners nothing can be forwarded: only the leader applies the schema.
        await (nodes[1] as HadbNode).open('db'),
      ];
      let [leader, follower] = [onA, onB];
      const takeovers: number[] = [];
      for (let round = 0; round < 3; round++) {
        const started = Date.now();
        leader.handoff();
        await waitFor(() => follower.role === 'leader', 5000, 'the follower to take over');
        takeovers.push(Date.now() - started);
        [leader, follower] = [follower, leader];
        await waitFor(() => follower.role === 'follower', 5000, 'the old leader to follow');
      }
      expect(Math.max(...takeovers)).toBeLessThan(timing.pollIntervalMs / 3);
    } finally {
      await Promise.allSettled(nodes.map((node) => node.close()));
    }
  });
});
