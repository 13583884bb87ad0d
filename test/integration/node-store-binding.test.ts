import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import { LeaseStoreUnavailableError, StoreMismatchError } from '../../src/errors.ts';
import { IDENTITY_LEASE_KEY, identityObjectKey } from '../../src/runtime/cluster-identity.ts';
import { createNode, type HadbNode, type NodeOptions } from '../../src/runtime/node.ts';
import { FAST_TIMING, SECRET, waitFor } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-store-binding-');
const started: HadbNode[] = [];
const opened: { close(): Promise<void> }[] = [];

afterEach(async () => {
  await Promise.allSettled(started.splice(0).map((node) => node.close()));
  await Promise.allSettled(opened.splice(0).map((store) => store.close()));
});

function fsLeases(file: string): LeaseStore {
  const store = createFsLeaseStore({ path: file });
  opened.push(store);
  return store;
}

async function start(
  id: string,
  dir: string,
  stores: { storage: StorageBackend; leases: LeaseStore },
  extra: Partial<NodeOptions> = {},
): Promise<HadbNode> {
  const node = await createNode({
    id,
    secret: SECRET,
    dataDir: path.join(dir, 'nodes', id),
    timing: FAST_TIMING,
    listen: false,
    // The binding of a new store is logged as a warning: expected here.
    logger: pino({ level: 'silent' }),
    ...stores,
    ...extra,
  });
  started.push(node);
  return node;
}

async function refusal(promise: Promise<unknown>): Promise<StoreMismatchError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(StoreMismatchError);
  return error as StoreMismatchError;
}

async function clusterOf(storage: StorageBackend, prefix = ''): Promise<string> {
  const body = await storage.get(identityObjectKey(prefix));
  if (!body) throw new Error('no identity in storage');
  return (JSON.parse(new TextDecoder().decode(body)) as { cluster: string }).cluster;
}

/** A cluster folder with one database written and its node closed. */
async function clusterWithData(label: string) {
  const dir = freshDir(label);
  const storageRoot = path.join(dir, 'storage');
  const leaseFile = path.join(dir, 'leases.sqlite');
  const node = await start('first', dir, {
    storage: createFsStorage({ root: storageRoot }),
    leases: fsLeases(leaseFile),
  });
  const db = await node.open('orders', {
    schema: 'create table if not exists o(id integer primary key, total)',
  });
  await waitFor(() => db.role === 'leader', 10_000, 'leadership');
  await db.execute('insert into o values (1, 9.5)');
  await node.close();
  const storage = createFsStorage({ root: storageRoot });
  return { dir, storageRoot, leaseFile, storage, cluster: await clusterOf(storage) };
}

describe('a node binds its storage and lease store by one cluster identity', () => {
  it('creates the identity on a fresh folder without being asked, and starts again on it', async () => {
    const dir = freshDir('fresh');
    const stores = () => ({
      storage: createFsStorage({ root: path.join(dir, 'storage') }),
      leases: fsLeases(path.join(dir, 'leases.sqlite')),
    });
    const first = await start('a', dir, stores());
    await first.close();
    const storage = createFsStorage({ root: path.join(dir, 'storage') });
    const cluster = await clusterOf(storage);
    const leaseEntry = await fsLeases(path.join(dir, 'leases.sqlite')).get(IDENTITY_LEASE_KEY);
    expect(JSON.parse(new TextDecoder().decode(leaseEntry?.value))).toMatchObject({
      cluster,
      bound: true,
    });
    await start('a', dir, stores());
    expect(await clusterOf(storage)).toBe(cluster);
  });

  it('refuses a lease store without the identity (a mistyped path), naming both stores', async () => {
    const { dir, storage, cluster } = await clusterWithData('typo');
    const typo = path.join(dir, 'leases-typo.sqlite');
    const error = await refusal(start('second', dir, { storage, leases: fsLeases(typo) }));
    expect(error.code).toBe('STORE_MISMATCH');
    expect(error.message).toContain(`file://${path.join(dir, 'storage')}`);
    expect(error.message).toContain(`file://${typo}`);
    expect(error.message).toContain(cluster);
    expect(error.message).toContain('--init');
    expect({ storage: error.storageCluster, leases: error.leaseCluster }).toEqual({
      storage: cluster,
      leases: null,
    });
    // Nothing bound, no lease taken: the mistyped store is as empty as before.
    const leases = fsLeases(typo);
    expect(await leases.get(IDENTITY_LEASE_KEY)).toBeNull();
    expect(await leases.get('orders')).toBeNull();
  });

  it('binds a new lease store when asked with init, and serves the data from it', async () => {
    const { dir, storage, cluster } = await clusterWithData('init');
    const moved = path.join(dir, 'leases-moved.sqlite');
    const node = await start('second', dir, { storage, leases: fsLeases(moved) }, { init: true });
    const db = await node.open('orders');
    await waitFor(() => db.role === 'leader', 10_000, 'leadership');
    expect(await db.get('select total from o where id = 1')).toEqual({ total: 9.5 });
    const entry = await fsLeases(moved).get(IDENTITY_LEASE_KEY);
    expect(JSON.parse(new TextDecoder().decode(entry?.value)).cluster).toBe(cluster);
  });

  it('refuses a storage without the identity (a mistyped folder or prefix)', async () => {
    const { dir, leaseFile, cluster } = await clusterWithData('storage-typo');
    const wrong = createFsStorage({ root: path.join(dir, 'storag') });
    const error = await refusal(
      start('second', dir, { storage: wrong, leases: fsLeases(leaseFile) }),
    );
    expect(error.message).toContain(`file://${path.join(dir, 'storag')}`);
    expect(error.message).toContain(`file://${leaseFile}`);
    expect({ storage: error.storageCluster, leases: error.leaseCluster }).toEqual({
      storage: null,
      leases: cluster,
    });
    const prefixed = refusal(
      start(
        'third',
        dir,
        {
          storage: createFsStorage({ root: path.join(dir, 'storage') }),
          leases: fsLeases(leaseFile),
        },
        { prefix: 'prod' },
      ),
    );
    expect((await prefixed).message).toContain('prefix "prod"');
    expect(fs.existsSync(path.join(dir, 'storag'))).toBe(false);
  });

  it('refuses the storage of one cluster with the lease store of another, even with init', async () => {
    const one = await clusterWithData('one');
    const two = await clusterWithData('two');
    for (const init of [false, true]) {
      const error = await refusal(
        start(
          'mixed',
          one.dir,
          { storage: one.storage, leases: fsLeases(two.leaseFile) },
          { init },
        ),
      );
      expect({ storage: error.storageCluster, leases: error.leaseCluster }).toEqual({
        storage: one.cluster,
        leases: two.cluster,
      });
      expect(error.message).toContain(one.cluster);
      expect(error.message).toContain(two.cluster);
    }
  });

  it('adopts a deployment from before identities whose lease store knows its databases', async () => {
    const { dir, storage, storageRoot, leaseFile, cluster } = await clusterWithData('legacy');
    fs.rmSync(path.join(storageRoot, identityObjectKey('')));
    // Written by this version too; a deployment from before has only the databases' leases.
    const legacy = new MemoryLeaseStore();
    const entry = await fsLeases(leaseFile).get('orders');
    await legacy.create('orders', entry?.value ?? new Uint8Array());

    const refused = await refusal(
      start('upgraded', dir, { storage, leases: new MemoryLeaseStore() }),
    );
    expect(refused.message).toContain('orders');

    await start('upgraded', dir, { storage, leases: legacy });
    const adopted = await clusterOf(storage);
    expect(adopted).not.toBe(cluster);
    expect(legacy.peek(IDENTITY_LEASE_KEY)).not.toBeNull();
  });

  it('fails on a lease store that is down at start, writing nothing', async () => {
    const dir = freshDir('down');
    const storage = createFsStorage({ root: path.join(dir, 'storage') });
    const leases = new MemoryLeaseStore();
    leases.faults.cutOff('a');
    await expect(start('a', dir, { storage, leases: leases.forNode('a') })).rejects.toBeInstanceOf(
      LeaseStoreUnavailableError,
    );
    expect((await storage.list('')).objects).toEqual([]);
    expect(leases.peek(IDENTITY_LEASE_KEY)).toBeNull();
  });
});
