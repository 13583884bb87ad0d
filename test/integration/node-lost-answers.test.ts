/**
 * Calls that land without their caller hearing so, and a lease store down for everyone: each
 * write is applied exactly once and the database always gets a writable leader back.
 */
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import { StorageUnavailableError } from '../../src/errors.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import { FAST_TIMING, SECRET, waitFor } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-lost-answers-');
const started: HadbNode[] = [];
afterEach(async () => {
  await Promise.allSettled(started.splice(0).map((node) => node.close()));
});

type Mode = 'ok' | 'land-then-fail' | 'down';

/** Storage as one node sees it: `land-then-fail` stores the next upload, then reports a failure. */
function lossyView(shared: MemoryStorage, onLost: () => void = () => {}) {
  const control = { mode: 'ok' as Mode };
  const view = new Proxy(shared, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        if (control.mode === 'down') throw new StorageUnavailableError(`cut off (${String(prop)})`);
        const result = await value.apply(target, args);
        if (control.mode === 'land-then-fail' && prop === 'putIfAbsent') {
          control.mode = 'ok';
          onLost();
          throw new StorageUnavailableError('the answer was lost');
        }
        return result;
      };
    },
  }) as StorageBackend;
  return { view, control };
}

async function start(id: string, storage: StorageBackend, leases: MemoryLeaseStore, dir: string) {
  const node = await createNode({
    id,
    secret: SECRET,
    dataDir: path.join(dir, id),
    storage,
    leases: leases.forNode(id),
    timing: FAST_TIMING,
    forwardTimeoutMs: 5000,
  });
  started.push(node);
  return node;
}

describe('lost answers', () => {
  test("a leader's upload that landed unheard is recognised as its own: applied once", async () => {
    const shared = new MemoryStorage();
    const leases = new MemoryLeaseStore();
    const dir = freshDir('self');
    const lossy = lossyView(shared);
    const onA = await (await start('a', lossy.view, leases, dir)).open('db', {
      schema: 'create table if not exists t(k text)',
    });
    const onB = await (await start('b', shared, leases, dir)).open('db');
    lossy.control.mode = 'land-then-fail';
    await onA.execute('insert into t values (?)', ['once']);
    expect(onA.role).toBe('leader');
    expect(await onB.all('select k from t', [], { consistency: 'strong' })).toEqual([
      { k: 'once' },
    ]);
  });

  test('a forwarded write that landed unheard is not applied again by the next leader', async () => {
    const shared = new MemoryStorage();
    const leases = new MemoryLeaseStore();
    const dir = freshDir('forwarded');
    const lossy = lossyView(shared, () => {
      // ...and the leader loses everything at that moment: b takes over and retries.
      lossy.control.mode = 'down';
      leases.faults.cutOff('a');
    });
    await (await start('a', lossy.view, leases, dir)).open('db', {
      schema: 'create table if not exists t(k text)',
    });
    const onB = await (await start('b', shared, leases, dir)).open('db');
    await onB.execute('insert into t values (?)', ['before']);
    lossy.control.mode = 'land-then-fail';
    await onB.execute('insert into t values (?)', ['once']);
    expect(onB.role).toBe('leader');
    expect(await onB.all('select k from t order by k')).toEqual([{ k: 'before' }, { k: 'once' }]);
  });
});

describe('a lease store down for everyone', () => {
  test('the leader whose lease ran out does not re-adopt its spent epoch; a leader comes back', async () => {
    const storage = new MemoryStorage();
    const leases = new MemoryLeaseStore();
    const dir = freshDir('leases-down');
    const onA = await (await start('a', storage.forNode('a'), leases, dir)).open('db', {
      schema: 'create table if not exists t(k)',
    });
    const onB = await (await start('b', storage.forNode('b'), leases, dir)).open('db');
    const leaderEpochs: number[] = [];
    for (const db of [onA, onB]) {
      db.on('role', ({ role, epoch }) => {
        if (role === 'leader' && epoch !== null) leaderEpochs.push(epoch);
        // A claim loop runs on microtasks alone and would starve every timer, the test's too:
        // break it so the assertions below can report it.
        if (leaderEpochs.length > 50) leases.faults.cutOff(db === onA ? 'a' : 'b');
      });
    }
    await onA.execute('insert into t values (1)');
    leases.faults.cutOff('a');
    leases.faults.cutOff('b');
    await waitFor(() => onA.role !== 'leader', 5000, 'a to step down');
    leases.faults.heal('a');
    await new Promise((resolve) => setTimeout(resolve, 500));
    leases.faults.heal('b');
    await onB.execute('insert into t values (2)');
    expect(await onB.all('select k from t order by k', [], { consistency: 'strong' })).toEqual([
      { k: 1 },
      { k: 2 },
    ]);
    // Every leadership after a's first is a new epoch: epoch 1 was never taken again.
    expect(leaderEpochs.length).toBeGreaterThan(0);
    expect(leaderEpochs).not.toContain(1);
    expect(leaderEpochs.length).toBeLessThan(10);
  });
});
