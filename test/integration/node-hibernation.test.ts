import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { HadbDatabase } from '../../src/api-types.ts';
import type { HostedDatabase } from '../../src/runtime/hosted-database.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import { FAST_TIMING, SECRET, testClusters, waitFor } from './support/nodes.ts';

const cluster = testClusters('hadb-hibernation-');
const SCHEMA = 'create table if not exists t(k text, v integer)';

/** The database files this process holds a descriptor of under `dir` (the kernel's view). */
function filesOpenUnder(dir: string): Set<string> {
  const open = new Set<string>();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    // Side files (WAL, shared memory, state being written) count as their database.
    if (target.startsWith(`${dir}${path.sep}`))
      open.add(target.replace(/(-wal|-shm|-hadb-.*)$/, ''));
  }
  return open;
}

function awake(node: HadbNode): number {
  return node.status().databases.filter((db) => !db.hibernated).length;
}

function allHibernated(node: HadbNode): boolean {
  return node.status().databases.every((db) => db.hibernated);
}

async function keys(db: HadbDatabase, consistency: 'local' | 'read-your-writes' = 'local') {
  const rows = await db.all('select k from t order by k', [], { consistency });
  return rows.map((row) => row.k as string);
}

describe('hibernation', () => {
  test('an idle leader and follower close their handles and wake in the same epoch', async () => {
    const c = cluster();
    const options = { hibernateAfterMs: 150 };
    const a = await c.start('a', options);
    const onA = await a.open('h', { schema: SCHEMA });
    await onA.execute('insert into t values (?, ?)', ['a1', 1]);
    const b = await c.start('b', options);
    const onB = await b.open('h');
    expect(await keys(onB, 'read-your-writes')).toEqual(['a1']);
    const epoch = onA.position.epoch;
    const dirA = path.join(c.dir, 'nodes', 'a');
    const dirB = path.join(c.dir, 'nodes', 'b');

    await waitFor(() => allHibernated(a) && allHibernated(b), 5000, 'both copies to hibernate');
    // Really closed: the leader checkpointed and dropped its WAL, no descriptor is left open.
    expect(fs.existsSync(path.join(dirA, 'h.db-wal'))).toBe(false);
    expect(filesOpenUnder(dirA)).toEqual(new Set());
    expect(filesOpenUnder(dirB)).toEqual(new Set());
    expect(a.status().databases[0]).toMatchObject({ role: 'leader', hibernated: true, epoch });

    // A write through the follower wakes the leader: same lease, same epoch, next sequence.
    const seqBefore = onA.position.seq;
    const { token } = await onB.execute('insert into t values (?, ?)', ['b1', 2]);
    expect(token).toEqual({ epoch, seq: seqBefore + 1 });
    expect(await keys(onB, 'read-your-writes')).toEqual(['a1', 'b1']);
    expect(await keys(onA)).toEqual(['a1', 'b1']);
    expect(onA.role).toBe('leader');

    // A hibernated follower still converges: the apply reopens it, the next idle period closes it.
    await waitFor(() => allHibernated(a) && allHibernated(b), 5000, 'both copies to hibernate');
    await onA.execute('insert into t values (?, ?)', ['a2', 3]);
    const target = onA.position.seq;
    await waitFor(() => onB.position.seq >= target, 5000, 'the follower to apply the write');
    await waitFor(() => allHibernated(b), 5000, 'the follower to hibernate again');
    expect(await keys(onB)).toEqual(['a1', 'a2', 'b1']);
    expect(b.status().databases[0]).toMatchObject({ role: 'follower', epoch, seq: target });
    expect(a.status().databases[0]).toMatchObject({ role: 'leader', epoch, seq: target });
  });

  test('a leader with commits storage does not hold yet stays open until they ship', async () => {
    const c = cluster();
    const storage = new MemoryStorage();
    const dataDir = path.join(c.dir, 'solo');
    const node = await createNode({
      id: 'a',
      secret: SECRET,
      dataDir,
      storage: storage.forNode('a'),
      leases: new MemoryLeaseStore().forNode('a'),
      timing: FAST_TIMING,
      hibernateAfterMs: 50,
    });
    try {
      const db = await node.open('u', { schema: SCHEMA });
      await waitFor(() => allHibernated(node), 5000, 'the leader to hibernate');
      const seq = db.position.seq;
      storage.faults.cutOff('a');
      await db.execute('insert into t values (?, ?)', ['unshipped', 1], { durability: 'async' });
      // Several sweeps pass; closing now would checkpoint the commit out of the WAL unshipped.
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect(node.status().databases[0]?.hibernated).toBe(false);
      expect(fs.existsSync(path.join(dataDir, 'u.db-wal'))).toBe(true);
      expect(db.position.seq).toBe(seq);
      storage.faults.heal('a');
      await waitFor(() => db.position.seq === seq + 1, 5000, 'the commit to ship');
      await waitFor(() => allHibernated(node), 5000, 'the leader to hibernate once shipped');
      expect(fs.existsSync(path.join(dataDir, 'u.db-wal'))).toBe(false);
      expect(await keys(db)).toEqual(['unshipped']);
      expect(db.position).toEqual({ epoch: 1, seq: seq + 1 });
    } finally {
      await node.close();
    }
  });

  test('a write racing hibernation is neither lost nor run twice', async () => {
    const c = cluster();
    // Idle at once: the sweep (every 20 ms) and direct calls below close handles between writes.
    const options = { hibernateAfterMs: 0 };
    const a = await c.start('a', options);
    const onA = await a.open('race', { schema: SCHEMA });
    const b = await c.start('b', options);
    const onB = await b.open('race');
    let closed = 0;
    const hammer = setInterval(() => {
      for (const db of [onA, onB]) if ((db as HostedDatabase).hibernate()) closed += 1;
    }, 1);
    const acked: string[] = [];
    try {
      const writer = async (db: HadbDatabase, label: string) => {
        for (let i = 0; i < 40; i++) {
          const key = `${label}-${i}`;
          const durability = i % 3 === 0 ? 'async' : 'replicated';
          await db.execute('insert into t values (?, ?)', [key, i], { durability });
          acked.push(key);
          // Sometimes right away, sometimes after the handles had time to close.
          if (i % 4 === 0) await new Promise((resolve) => setTimeout(resolve, 25));
        }
      };
      await Promise.all([writer(onA, 'a'), writer(onB, 'b'), writer(onB, 'b2')]);
    } finally {
      clearInterval(hammer);
    }
    expect(closed).toBeGreaterThan(0);
    await onA.execute('select 1', [], { durability: 'replicated' });
    const target = onA.position.seq;
    await waitFor(() => onB.position.seq >= target, 5000, 'the follower to catch up');
    const twice = await onA.all('select k from t group by k having count(*) > 1');
    expect(twice).toEqual([]);
    const expected = [...acked].sort();
    expect(await keys(onA)).toEqual(expected);
    expect(await keys(onB)).toEqual(expected);
    expect(onA.position.epoch).toBe(1);
  });

  test('with a cap of 5, never more than 5 of 20 databases are open, and all stay correct', async () => {
    const c = cluster();
    const options = {
      hibernateAfterMs: false as const,
      maxOpenDatabases: 5,
      pageCacheBytes: 5 << 20,
    };
    const a = await c.start('a', options);
    const b = await c.start('b', options);
    const dirs = { a: path.join(c.dir, 'nodes', 'a'), b: path.join(c.dir, 'nodes', 'b') };
    let most = 0;
    const check = () => {
      for (const [node, dir] of [
        [a, dirs.a],
        [b, dirs.b],
      ] as const) {
        most = Math.max(most, awake(node), filesOpenUnder(dir).size);
      }
    };
    const sampler = setInterval(check, 5);
    const names = Array.from({ length: 20 }, (_, i) => `db${i}`);
    const onA = new Map<string, HadbDatabase>();
    const onB = new Map<string, HadbDatabase>();
    const expected = new Map<string, string[]>(names.map((name) => [name, []]));
    try {
      for (const name of names) {
        onA.set(name, await a.open(name, { schema: SCHEMA }));
        check();
      }
      for (const name of names) {
        onB.set(name, await b.open(name));
        check();
      }
      // Each connection's page cache is its share of the budget: 5 MiB / 5 − 64 KiB.
      const leader = onA.get('db0') as HadbDatabase;
      expect(await leader.get('pragma cache_size')).toEqual({ cache_size: -960 });
      const follower = onB.get('db0') as HadbDatabase;
      expect(await follower.get('pragma cache_size')).toEqual({ cache_size: -960 });
      for (let i = 0; i < 60; i++) {
        const name = names[(i * 7 + (i % 3)) % names.length] as string;
        const via = (i % 2 === 0 ? onA : onB).get(name) as HadbDatabase;
        const key = `k${String(i).padStart(3, '0')}`;
        await via.execute('insert into t values (?, ?)', [key, i]);
        expected.get(name)?.push(key);
        check();
        if (i % 5 === 0) {
          const other = names[(i * 3) % names.length] as string;
          const rows = await keys(onA.get(other) as HadbDatabase);
          expect(rows).toEqual(expected.get(other));
          check();
        }
      }
      for (const name of names) {
        expect(await keys(onA.get(name) as HadbDatabase)).toEqual(expected.get(name));
        check();
        expect(await keys(onB.get(name) as HadbDatabase, 'read-your-writes')).toEqual(
          expected.get(name),
        );
        check();
      }
    } finally {
      clearInterval(sampler);
    }
    expect(most).toBeLessThanOrEqual(5);
    expect(most).toBe(5);
    expect(awake(a)).toBeLessThanOrEqual(5);
    expect(a.status().databases.every((db) => db.role === 'leader')).toBe(true);
  }, 90_000);
});
