import { describe, expect, test } from 'vitest';
import { nodeLeaseKey } from '../../src/actors/node-liveness.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import type { HadbDatabase } from '../../src/api-types.ts';
import type { HadbNode } from '../../src/runtime/node.ts';
import { decodeLeaseRecord } from '../../src/wire/lease-record.ts';
import {
  FAST_TIMING,
  memoryNodes,
  openAll as openEach,
  waitFor,
  writeLoop,
} from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-node-leases-');
const SCHEMA = 'create table if not exists t(k text primary key)';

/** Counts every lease-store call, across all nodes that share it. */
class CountingLeases {
  calls = 0;
  wrap(store: LeaseStore): LeaseStore {
    const count = <T>(result: Promise<T>) => {
      this.calls += 1;
      return result;
    };
    const wrapped: LeaseStore = {
      get: (key) => count(store.get(key)),
      create: (key, value) => count(store.create(key, value)),
      update: (key, value, revision) => count(store.update(key, value, revision)),
    };
    if (store.watch) wrapped.watch = store.watch.bind(store);
    return wrapped;
  }
}

/** Counts storage calls, across all nodes that share it. */
function countingStorage(storage: StorageBackend): {
  storage: StorageBackend;
  calls: () => number;
} {
  let calls = 0;
  const wrapped = new Proxy(storage, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls += 1;
        return value.apply(target, args);
      };
    },
  });
  return { storage: wrapped, calls: () => calls };
}

function memoryCluster() {
  const counting = new CountingLeases();
  const nodes = memoryNodes(freshDir('nodes'), { leaseScope: 'node' }, (store) =>
    counting.wrap(store),
  );
  return { ...nodes, counting };
}

function openAll(node: HadbNode, count: number): Promise<HadbDatabase[]> {
  return openEach(node, count, SCHEMA);
}

async function record(leases: LeaseStore, key: string) {
  const entry = await leases.get(key);
  if (!entry) throw new Error(`no record at ${key}`);
  return decodeLeaseRecord(entry.value);
}

describe('node-level leases', () => {
  test('one liveness record per node; ownership records name the node incarnation', async () => {
    const c = memoryCluster();
    try {
      const a = await c.start('a');
      const onA = await openAll(a, 3);
      const b = await c.start('b');
      const onB = await openAll(b, 3);
      expect(onA.map((db) => db.role)).toEqual(['leader', 'leader', 'leader']);
      const nodeRecord = await record(c.leases, nodeLeaseKey('a'));
      expect(nodeRecord.holder).toBe('a');
      expect(nodeRecord.released).toBe(false);
      for (const name of ['db0', 'db1', 'db2']) {
        const ownership = await record(c.leases, name);
        expect(ownership.holder).toBe('a');
        expect(ownership.nodeSession).toBe(nodeRecord.session);
      }
      // Writes from a follower reach the leader; reads on the follower catch up.
      await onB[1]?.execute('insert into t values (?)', ['from-b']);
      const rows = await onB[1]?.all('select k from t', [], { consistency: 'read-your-writes' });
      expect(rows).toEqual([{ k: 'from-b' }]);
      expect(a.status().lease.scope).toBe('node');
      expect(a.status().lease.validForMs).toBeGreaterThan(0);
    } finally {
      await c.closeAll();
    }
  });

  test('idle lease-store requests do not grow with the number of databases', async () => {
    const c = memoryCluster();
    try {
      const a = await c.start('a');
      await openAll(a, 40);
      const b = await c.start('b');
      const onB = await openAll(b, 40);
      await waitFor(() => onB.every((db) => db.role === 'follower'), 5000, 'followers');
      await new Promise((resolve) => setTimeout(resolve, 500));
      const before = c.counting.calls;
      const windowMs = 2000;
      await new Promise((resolve) => setTimeout(resolve, windowMs));
      const calls = c.counting.calls - before;
      // Per node: a renewal every renewIntervalMs and a read of its peer every pollIntervalMs.
      // Per-database leases would cost 40 × that.
      const perNode =
        windowMs / FAST_TIMING.renewIntervalMs + windowMs / FAST_TIMING.pollIntervalMs;
      expect(calls).toBeGreaterThan(0);
      // Slack for retries; per-database leases would cost about 40 times perNode.
      expect(calls).toBeLessThanOrEqual(2 * (perNode + 6));
    } finally {
      await c.closeAll();
    }
  });

  test('followers hear of commits through one node tail, and poll no storage while idle', async () => {
    const c = memoryCluster();
    try {
      const a = await c.start('a');
      const onA = await openAll(a, 20);
      const counted = countingStorage(c.storage.forNode('b'));
      const b = await c.start('b', { storage: counted.storage });
      const onB = await openAll(b, 20);
      await waitFor(() => onB.every((db) => db.role === 'follower'), 5000, 'followers');
      await new Promise((resolve) => setTimeout(resolve, 500));
      const idleStart = counted.calls();
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(counted.calls() - idleStart).toBe(0);

      const written = Date.now();
      await onA[7]?.execute('insert into t values (?)', ['pushed']);
      await waitFor(
        async () => (await onB[7]?.all('select k from t'))?.length === 1,
        2000,
        'the follower to apply',
      );
      // Well under one storage poll interval: it came through the tail, not a poll.
      expect(Date.now() - written).toBeLessThan(FAST_TIMING.pollIntervalMs * 4);
      expect(await onB[8]?.all('select k from t')).toEqual([]);
    } finally {
      await c.closeAll();
    }
  });

  test('a node cut off from the lease store stops all its leaders before others take over', async () => {
    const c = memoryCluster();
    try {
      const a = await c.start('a');
      const onA = await openAll(a, 8);
      const b = await c.start('b');
      const onB = await openAll(b, 8);
      const load = writeLoop(onB[0] as HadbDatabase, 'b');
      await waitFor(() => load.acked.length >= 5, 5000, 'forwarded writes');

      const takeovers: number[] = [];
      let aStillValidAtTakeover = false;
      for (const db of onB) {
        db.on('role', ({ role }) => {
          if (role !== 'leader') return;
          takeovers.push(Date.now());
          // I5: by the time anyone else leads, a's own lease has lapsed on a's clock.
          if ((a.status().lease.validForMs ?? 0) > 0) aStillValidAtTakeover = true;
        });
      }
      c.leases.faults.cutOff('a');
      const cutAt = Date.now();
      await waitFor(() => onB.every((db) => db.role === 'leader'), 10_000, 'b to lead all');
      expect(aStillValidAtTakeover).toBe(false);
      expect(onA.map((db) => db.role)).not.toContain('leader');
      expect(Math.min(...takeovers) - cutAt).toBeGreaterThanOrEqual(FAST_TIMING.ttlMs - 300);

      const ackedBefore = load.acked.length;
      await waitFor(() => load.acked.length >= ackedBefore + 5, 5000, 'writes on b');
      await load.stop();
      const rows = await (onB[0] as HadbDatabase).all('select k from t order by k');
      const stored = rows.map((row) => String(row.k));
      for (const key of load.acked) expect(stored).toContain(key);

      c.leases.faults.heal('a');
      await waitFor(() => (a.status().lease.validForMs ?? 0) > 0, 5000, 'a to hold its record');
      await onA[3]?.execute('insert into t values (?)', ['from-a-again']);
      const onB3 = await onB[3]?.all('select k from t', [], { consistency: 'read-your-writes' });
      expect(onB3).toEqual([{ k: 'from-a-again' }]);
      expect(onA.every((db) => db.role === 'follower')).toBe(true);
    } finally {
      await c.closeAll();
    }
  });

  test('a node that closes releases everything: followers lead well before the TTL', async () => {
    const c = memoryCluster();
    try {
      const a = await c.start('a');
      await openAll(a, 6);
      const b = await c.start('b');
      const onB = await openAll(b, 6);
      const closing = Date.now();
      await a.close();
      await waitFor(() => onB.every((db) => db.role === 'leader'), 5000, 'b to lead all');
      expect(Date.now() - closing).toBeLessThan(FAST_TIMING.ttlMs);
      expect((await record(c.leases, nodeLeaseKey('a'))).released).toBe(true);
    } finally {
      await c.closeAll();
    }
  });

  test('a restarted node waits out its earlier incarnation, then takes its databases back', async () => {
    const c = memoryCluster();
    try {
      const first = await c.start('a');
      await openAll(first, 2);
      c.leases.faults.cutOff('a');
      await first.close(); // its releases cannot land: as after a crash
      c.leases.faults.heal('a');
      const started = Date.now();
      const again = await c.start('a');
      const dbs = await openAll(again, 2);
      await waitFor(() => dbs.every((db) => db.role === 'leader'), 10_000, 'a to lead again');
      expect(Date.now() - started).toBeGreaterThanOrEqual(FAST_TIMING.ttlMs - 300);
      const ownership = await record(c.leases, 'db0');
      expect(ownership.nodeSession).toBe((await record(c.leases, nodeLeaseKey('a'))).session);
      expect(ownership.epoch).toBe(2);
    } finally {
      await c.closeAll();
    }
  });

  test('a node on per-database leases never claims a database held under node leases', async () => {
    const c = memoryCluster();
    try {
      const a = await c.start('a');
      await openAll(a, 1);
      const b = await c.start('b', { leaseScope: 'database' });
      const onB = await b.open('db0');
      await waitFor(() => b.status().databases[0]?.leaseProblem !== null, 5000, 'the problem');
      expect(b.status().databases[0]?.leaseProblem).toMatch(/node-level leases/);
      await a.close();
      await new Promise((resolve) => setTimeout(resolve, FAST_TIMING.ttlMs + 500));
      expect(onB.role).toBe('follower');
    } finally {
      await c.closeAll();
    }
  });
});
