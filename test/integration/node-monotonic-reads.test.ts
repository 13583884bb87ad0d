import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import type { ParkedTail } from '../../src/api-types.ts';
import { StorageUnavailableError } from '../../src/errors.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import { FAST_TIMING, SECRET, waitFor } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-monotonic-');
const SCHEMA = 'create table if not exists t(k text primary key)';

/** Storage that still lists but fails every upload and download while `broken` is set. */
function listingOnly(storage: StorageBackend, broken: { on: boolean }): StorageBackend {
  const refuse = (what: string) => {
    if (broken.on) throw new StorageUnavailableError(`injected: ${what} refused`);
  };
  return {
    put: async (key, body) => {
      refuse('put');
      return storage.put(key, body);
    },
    putIfAbsent: async (key, body) => {
      refuse('put');
      return storage.putIfAbsent(key, body);
    },
    get: async (key, range) => {
      refuse('get');
      return storage.get(key, range);
    },
    list: (prefix, options) => storage.list(prefix, options),
    delete: (keys) => storage.delete(keys),
  };
}

describe('local reads on one node', () => {
  test('never answer from an older state than the node already answered from', async () => {
    const storage = new MemoryStorage();
    const leases = new MemoryLeaseStore();
    const root = freshDir('nodes');
    const broken = { on: false };
    const nodes: HadbNode[] = [];
    const start = async (id: string, backend: StorageBackend) => {
      const node = await createNode({
        id,
        secret: SECRET,
        dataDir: path.join(root, id),
        storage: backend,
        leases: leases.forNode(id),
        timing: FAST_TIMING,
        readYourWritesTimeoutMs: 300,
      });
      nodes.push(node);
      return node;
    };
    try {
      const onA = await (await start('a', listingOnly(storage.forNode('a'), broken))).open('db', {
        schema: SCHEMA,
      });
      const parked: ParkedTail[] = [];
      onA.on('parked', (tail) => parked.push(tail));
      const onB = await (await start('b', storage.forNode('b'))).open('db', { schema: SCHEMA });
      await onA.execute('insert into t values (?)', ['durable'], { durability: 'replicated' });
      expect(await onA.all('select k from t')).toEqual([{ k: 'durable' }]);

      // a cannot ship, loses its lease and rebuilds its copy: storage lists no snapshot, so the
      // rebuilt copy is empty, and every pull that would fill it fails.
      broken.on = true;
      await onA.execute('insert into t values (?)', ['local only'], { durability: 'async' });
      leases.faults.cutOff('a');
      await waitFor(() => parked.length === 1, 10_000, 'the tail to be parked');
      await waitFor(() => onB.role === 'leader', 10_000, 'b to take over');
      leases.faults.heal('a');

      // The empty copy must not answer: the read goes to the leader instead.
      expect(await onA.all('select k from t order by k')).toEqual([{ k: 'durable' }]);
      await onB.execute('insert into t values (?)', ['after']);
      expect(await onA.all('select k from t order by k')).toEqual([
        { k: 'after' },
        { k: 'durable' },
      ]);

      // Once the copy can catch up, it answers locally again.
      broken.on = false;
      await waitFor(
        async () => onA.position.seq >= onB.position.seq,
        10_000,
        'a to catch up with b',
      );
      expect(await onA.all('select k from t order by k')).toEqual([
        { k: 'after' },
        { k: 'durable' },
      ]);
    } finally {
      await Promise.allSettled(nodes.map((node) => node.close()));
    }
  });
});
