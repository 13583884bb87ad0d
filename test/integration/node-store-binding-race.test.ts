import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';
import { type LeaseWrite, MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import { IDENTITY_LEASE_KEY, identityObjectKey } from '../../src/runtime/cluster-identity.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import { FAST_TIMING, SECRET } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const NODES = 6;
const ROUNDS = 20;

const freshDir = tempDirs('hadb-store-binding-race-');
const started: HadbNode[] = [];
const opened: { close(): Promise<void> }[] = [];

afterEach(async () => {
  await Promise.allSettled(started.splice(0).map((node) => node.close()));
  await Promise.allSettled(opened.splice(0).map((store) => store.close()));
});

/** Starts `count` nodes at once, each after a random few milliseconds. */
async function startAtOnce(
  dir: string,
  count: number,
  stores: (id: string) => { storage: StorageBackend; leases: LeaseStore },
): Promise<void> {
  const nodes = await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const id = `n${i}`;
      await delay(Math.floor(Math.random() * 4));
      return createNode({
        id,
        secret: SECRET,
        dataDir: path.join(dir, id),
        timing: FAST_TIMING,
        listen: false,
        ...stores(id),
      });
    }),
  );
  started.push(...nodes);
}

const decoded = (bytes: Uint8Array | null | undefined) =>
  JSON.parse(new TextDecoder().decode(bytes ?? new Uint8Array())) as {
    cluster: string;
    bound?: boolean;
  };

describe('nodes starting at once on an empty cluster', () => {
  it('agree on one identity, whatever the interleaving of their store calls', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const dir = freshDir(`memory-${round}`);
      const writes: LeaseWrite[] = [];
      const storage = new MemoryStorage();
      const leases = new MemoryLeaseStore({ onWrite: (write) => writes.push(write) });
      storage.faults.setLatency({ minMs: 0, maxMs: 3 });
      leases.faults.setLatency({ minMs: 0, maxMs: 3 });
      await startAtOnce(dir, NODES, (id) => ({
        storage: storage.forNode(id),
        leases: leases.forNode(id),
      }));
      const identityWrites = writes.filter((write) => write.key === IDENTITY_LEASE_KEY);
      // One create won; at most the bound flag was set after it.
      expect(identityWrites.filter((write) => write.revision === '1')).toHaveLength(1);
      const cluster = decoded(identityWrites[0]?.value).cluster;
      for (const write of identityWrites) expect(decoded(write.value).cluster).toBe(cluster);
      expect(decoded(await storage.get(identityObjectKey(''))).cluster).toBe(cluster);
      expect(decoded(leases.peek(IDENTITY_LEASE_KEY)?.value)).toEqual(
        expect.objectContaining({ cluster, bound: true }),
      );
      await Promise.all(started.splice(0).map((node) => node.close()));
    }
  });

  it('agree on one identity over fs storage and an fs lease file, each with its own handles', async () => {
    const dir = freshDir('fs');
    const leaseFile = path.join(dir, 'leases.sqlite');
    await startAtOnce(dir, NODES, () => {
      const leases = createFsLeaseStore({ path: leaseFile });
      opened.push(leases);
      return { storage: createFsStorage({ root: path.join(dir, 'storage') }), leases };
    });
    const storage = createFsStorage({ root: path.join(dir, 'storage') });
    const leases = createFsLeaseStore({ path: leaseFile });
    opened.push(leases);
    const entry = await leases.get(IDENTITY_LEASE_KEY);
    expect(decoded(entry?.value)).toEqual(
      expect.objectContaining({
        cluster: decoded(await storage.get(identityObjectKey(''))).cluster,
        bound: true,
      }),
    );
  });
  it("agree when one node's storage read is overtaken by another node's whole binding", async () => {
    // As a slow S3 beside a fast lease store: b asks both stores, hears "none" from the lease
    // store at once, and its storage read lands only after a has bound both stores.
    const dir = freshDir('overtaken');
    const storage = new MemoryStorage();
    const leases = new MemoryLeaseStore();
    let aBound: () => void = () => {};
    const aDone = new Promise<void>((resolve) => {
      aBound = resolve;
    });
    let bAsked: () => void = () => {};
    const bAsking = new Promise<void>((resolve) => {
      bAsked = resolve;
    });
    const slowFirstRead = new Proxy(storage.forNode('b'), {
      get(target, property, receiver) {
        if (property !== 'get') return Reflect.get(target, property, receiver);
        let first = true;
        return async (key: string) => {
          if (key === identityObjectKey('') && first) {
            first = false;
            bAsked();
            await aDone;
          }
          return target.get(key);
        };
      },
    });
    const start = (id: string, stores: { storage: StorageBackend; leases: LeaseStore }) =>
      createNode({
        id,
        secret: SECRET,
        dataDir: path.join(dir, id),
        timing: FAST_TIMING,
        listen: false,
        ...stores,
      });
    const b = start('b', { storage: slowFirstRead, leases: leases.forNode('b') });
    await bAsking;
    // Let b's lease read answer (nothing yet) before a starts.
    await delay(20);
    const a = await start('a', { storage: storage.forNode('a'), leases: leases.forNode('a') });
    started.push(a);
    aBound();
    started.push(await b);
    expect(decoded(leases.peek(IDENTITY_LEASE_KEY)?.value)).toEqual(
      expect.objectContaining({
        cluster: decoded(await storage.get(identityObjectKey(''))).cluster,
        bound: true,
      }),
    );
  });
});
