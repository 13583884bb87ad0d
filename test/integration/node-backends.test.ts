/**
 * Nodes over the networked backends: S3 storage (moto) with S3 leases, and with NATS leases.
 * Three in-process nodes write in 'replicated' mode, the leader closes gracefully, the others keep
 * writing: no acknowledged write is lost and every copy, the restarted one included, converges.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { openNatsLeaseStore } from '../../src/adapters/lease/nats.ts';
import { openS3LeaseStore } from '../../src/adapters/lease/s3.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import { createS3Storage } from '../../src/adapters/storage/s3.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import type { HadbDatabase } from '../../src/api-types.ts';
import { ClosedError, NotDurableError } from '../../src/errors.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import { createTestBucket, emulatorClientOptions, type TestBucket } from '../support/s3.ts';
import { describeWithService, findService, type ServiceName } from '../support/services.ts';
import { FAST_TIMING, SECRET, waitFor, writeLoop } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

// No uniqueness: a write applied twice shows up as a duplicate row instead of an SQL error.
const SCHEMA = 'create table if not exists t(k text not null)';
const freshDir = tempDirs('hadb-node-backends-');

interface Backends {
  storage(): StorageBackend;
  leases(): Promise<LeaseStore>;
}

/** Like describeWithService, for a suite that needs several services. */
async function describeWithServices(
  names: ServiceName[],
  title: string,
  body: (urls: Record<ServiceName, string>) => void,
): Promise<void> {
  const found = await Promise.all(
    names.map(async (name) => [name, await findService(name)] as const),
  );
  // The first missing one decides: describeWithService skips, or fails in CI, naming it.
  const missing = found.find(([, url]) => url === undefined)?.[0] ?? (names[0] as ServiceName);
  const urls = Object.fromEntries(found) as Record<ServiceName, string>;
  await describeWithService(missing, title, () => body(urls));
}

async function keys(db: HadbDatabase): Promise<string[]> {
  return (await db.all('select k from t order by k')).map((row) => String(row.k));
}

/** Epoch → node for every leadership entered: two nodes must never lead the same epoch. */
function leaderships() {
  const byEpoch = new Map<number, string>();
  const clashes: string[] = [];
  return {
    byEpoch,
    clashes,
    watch(node: string, db: HadbDatabase) {
      db.on('role', ({ role, epoch }) => {
        if (role !== 'leader' || epoch === null) return;
        const earlier = byEpoch.get(epoch);
        if (earlier !== undefined && earlier !== node) {
          clashes.push(`epoch ${epoch}: ${earlier} and ${node}`);
        }
        byEpoch.set(epoch, node);
      });
    },
  };
}

async function gracefulFailover(backends: Backends): Promise<void> {
  const dir = freshDir('cluster');
  const leaders = leaderships();
  const opened: { node: HadbNode; leases: LeaseStore }[] = [];

  async function start(id: string): Promise<{ node: HadbNode; db: HadbDatabase }> {
    const leases = await backends.leases();
    const node = await createNode({
      id,
      secret: SECRET,
      dataDir: path.join(dir, id),
      storage: backends.storage(),
      leases,
      timing: FAST_TIMING,
    });
    opened.push({ node, leases });
    const opening = node.open('db', { schema: SCHEMA });
    // Registered before open resolves, so the first leadership is seen too.
    const [db] = node.databases();
    if (db === undefined) throw new Error('the database is not registered while opening');
    leaders.watch(id, db);
    return { node, db: await opening };
  }

  try {
    const ids = ['a', 'b', 'c'];
    const started = new Map<string, { node: HadbNode; db: HadbDatabase }>();
    for (const id of ids) started.set(id, await start(id));
    const loops = new Map(ids.map((id) => [id, writeLoop(at(started, id).db, id)]));
    await waitFor(
      () => [...loops.values()].every((loop) => loop.acked.length >= 5),
      10_000,
      'writes acknowledged on every node',
    );

    const leaderId = ids.find((id) => at(started, id).db.role === 'leader');
    if (leaderId === undefined) throw new Error('no node leads');
    const survivors = ids.filter((id) => id !== leaderId);
    const firstEpoch = at(started, leaderId).db.position.epoch;
    // The leader's own loop keeps writing into the close: those writes are acked or fail.
    await at(started, leaderId).node.close();
    await at(loops, leaderId).stop();

    const survivorDbs = survivors.map((id) => at(started, id).db);
    await waitFor(
      () => survivorDbs.some((db) => db.role === 'leader'),
      5000,
      'a survivor to take over',
    );
    const ackedAtClose = new Map(survivors.map((id) => [id, at(loops, id).acked.length]));
    await waitFor(
      () => survivors.every((id) => at(loops, id).acked.length >= (ackedAtClose.get(id) ?? 0) + 10),
      10_000,
      'writes acknowledged on every survivor after the close',
    );
    await Promise.all(survivors.map((id) => at(loops, id).stop()));

    // Survivors never saw a write fail: followers retry across the handover.
    for (const id of survivors) expect(at(loops, id).failed, id).toEqual([]);
    // On the closed node a write ends closed, or committed with its upload unconfirmed.
    for (const { key, error } of at(loops, leaderId).failed) {
      const expected = error instanceof ClosedError || error instanceof NotDurableError;
      expect(expected, `${key} failed with ${String(error)}`).toBe(true);
    }

    const leader = survivorDbs.find((db) => db.role === 'leader') as HadbDatabase;
    expect(leader.position.epoch).toBeGreaterThan(firstEpoch);
    const final = await keys(leader);
    const acked = [...loops.values()].flatMap((loop) => loop.acked);
    const unknown = new Set([...loops.values()].flatMap((loop) => loop.failed.map((f) => f.key)));
    expect(new Set(final).size, 'a write applied twice').toBe(final.length);
    expect(
      acked.filter((key) => !final.includes(key)),
      'acked writes lost',
    ).toEqual([]);
    const acknowledged = new Set(acked);
    expect(final.filter((key) => !acknowledged.has(key) && !unknown.has(key))).toEqual([]);

    // The closed node comes back on its old copy and follows the new leader.
    const back = await start(leaderId);
    const copies = [...survivorDbs, back.db];
    await waitFor(
      async () => {
        for (const db of copies) if ((await keys(db)).join() !== final.join()) return false;
        return true;
      },
      10_000,
      'every copy to hold the leader content',
    );
    expect(back.db.role).toBe('follower');
    for (const db of copies) {
      expect(await db.get('pragma integrity_check')).toEqual({ integrity_check: 'ok' });
    }
    expect(leaders.clashes).toEqual([]);
    expect(leaders.byEpoch.size).toBeGreaterThanOrEqual(2);
  } finally {
    await Promise.allSettled(opened.map(({ node }) => node.close()));
    await Promise.allSettled(opened.map(({ leases }) => leases.close?.()));
  }
}

function at<K, V>(map: Map<K, V>, key: K): V {
  const value = map.get(key);
  if (value === undefined) throw new Error(`nothing at ${String(key)}`);
  return value;
}

await describeWithService('s3', 'nodes on S3 storage and S3 leases', (endpoint) => {
  let bucket: TestBucket;
  beforeAll(async () => {
    bucket = await createTestBucket(endpoint);
  });
  afterAll(async () => {
    await bucket.remove();
  });

  test('a graceful leader close loses no acknowledged write; every copy converges', async () => {
    const prefix = `t-${randomBytes(6).toString('hex')}`;
    const clientOptions = emulatorClientOptions(endpoint);
    await gracefulFailover({
      storage: () =>
        createS3Storage({ bucket: bucket.name, prefix: `${prefix}/data`, clientOptions }),
      leases: () =>
        openS3LeaseStore({ bucket: bucket.name, prefix: `${prefix}/leases`, clientOptions }),
    });
  });
});

await describeWithServices(['s3', 'nats'], 'nodes on S3 storage and NATS leases', (urls) => {
  let bucket: TestBucket;
  const kvBuckets: string[] = [];
  beforeAll(async () => {
    bucket = await createTestBucket(urls.s3);
  });
  afterAll(async () => {
    await bucket.remove();
    const nc = await connect({ servers: urls.nats });
    const jsm = await jetstreamManager(nc);
    for (const kv of kvBuckets.splice(0)) await jsm.streams.delete(`KV_${kv}`);
    await nc.close();
  });

  test('a graceful leader close loses no acknowledged write; every copy converges', async () => {
    const prefix = `t-${randomBytes(6).toString('hex')}`;
    const kvBucket = `hadb-test-${randomBytes(5).toString('hex')}`;
    kvBuckets.push(kvBucket);
    const clientOptions = emulatorClientOptions(urls.s3);
    await gracefulFailover({
      storage: () => createS3Storage({ bucket: bucket.name, prefix, clientOptions }),
      // One connection per node, as separate processes would have.
      leases: () => openNatsLeaseStore({ servers: urls.nats, bucket: kvBucket }),
    });
  });
});
