/** Several hadb nodes in one process, over filesystem storage and leases (a support module). */
import fs from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { afterEach, expect } from 'vitest';
import { createFsLeaseStore } from '../../../src/adapters/lease/fs.ts';
import { MemoryLeaseStore } from '../../../src/adapters/lease/memory.ts';
import type { LeaseStore } from '../../../src/adapters/lease/types.ts';
import { createFsStorage } from '../../../src/adapters/storage/fs.ts';
import { MemoryStorage } from '../../../src/adapters/storage/memory.ts';
import type { HadbDatabase, Transition } from '../../../src/api-types.ts';
import { ClosedError } from '../../../src/errors.ts';
import {
  type HranaServer,
  type HranaServerOptions,
  startHranaServer,
} from '../../../src/hrana/server.ts';
import type { LeaseTiming } from '../../../src/machines/role.ts';
import { restoreDatabase } from '../../../src/replication/restore.ts';
import { createNode, type HadbNode, type NodeOptions } from '../../../src/runtime/node.ts';
import { RELAY_PATH } from '../../../src/wire/node-protocol.ts';
import { tempDirs } from './replication.ts';

export const SECRET = 'test-cluster-secret-0123456789';

/** Short enough for quick failovers, long enough for a loaded CI machine. */
export const FAST_TIMING: LeaseTiming = {
  ttlMs: 1500,
  renewIntervalMs: 300,
  retryIntervalMs: 100,
  pollIntervalMs: 250,
  marginMs: 200,
};

export interface TestCluster {
  dir: string;
  start(id: string, extra?: Partial<NodeOptions>): Promise<HadbNode>;
  /** Node `id` with database `db` served over Hrana, wired as `hadb serve` wires it. */
  serveOverHrana(id: string, options: HranaNodeOptions): Promise<HranaNode>;
}

export interface HranaNodeOptions {
  schema: string;
  node?: Partial<NodeOptions>;
  hrana?: Partial<HranaServerOptions>;
}

export interface HranaNode {
  node: HadbNode;
  db: HadbDatabase;
  hrana: HranaServer;
}

/** Returns `cluster()`: a fresh shared storage + lease store; every node started is closed after each test. */
export function testClusters(prefix: string): () => TestCluster {
  const freshDir = tempDirs(prefix);
  const started: HadbNode[] = [];
  const servers: HranaServer[] = [];
  afterEach(async () => {
    await Promise.allSettled(servers.splice(0).map((server) => server.close()));
    await Promise.allSettled(started.splice(0).map((node) => node.close()));
  });
  return () => {
    const dir = freshDir('cluster');
    const cluster: TestCluster = {
      dir,
      async start(id, extra = {}) {
        const node = await createNode({
          id,
          secret: SECRET,
          dataDir: path.join(dir, 'nodes', id),
          storage: createFsStorage({ root: path.join(dir, 'storage') }),
          leases: createFsLeaseStore({ path: path.join(dir, 'leases.sqlite') }),
          timing: FAST_TIMING,
          ...extra,
        });
        started.push(node);
        return node;
      },
      async serveOverHrana(id, options) {
        let hrana: HranaServer | undefined;
        const node = await cluster.start(id, {
          ...options.node,
          routes: {
            [RELAY_PATH]: {
              method: 'POST',
              authenticated: true,
              handle: async (request) => (hrana ? hrana.relay(request) : { status: 503, body: '' }),
            },
          },
        });
        const db = await node.open('db', { schema: options.schema });
        hrana = await startHranaServer({
          host: '127.0.0.1',
          port: 0,
          databases: new Map<string, HadbDatabase>([['db', db]]),
          authToken: null,
          secret: SECRET,
          self: node.address ?? '',
          leaderAddress: (name) =>
            node.status().databases.find((status) => status.name === name)?.leaderAddress ?? null,
          ...options.hrana,
        });
        servers.push(hrana);
        return { node, db, hrana };
      },
    };
    return cluster;
  };
}

export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface WriteLoop {
  acked: string[];
  /** Writes that failed: their outcome is unknown, so they may or may not be in the end state. */
  failed: { key: string; error: unknown }[];
  stop(): Promise<void>;
}

/** Writes unique keys until stopped; a ClosedError (its node closed) ends the loop. */
export function writeLoop(db: HadbDatabase, label: string): WriteLoop {
  const acked: string[] = [];
  const failed: { key: string; error: unknown }[] = [];
  let running = true;
  const done = (async () => {
    for (let i = 0; running; i++) {
      const key = `${label}-${String(i).padStart(5, '0')}`;
      try {
        await db.execute('insert into t(k) values (?)', [key], { durability: 'replicated' });
        acked.push(key);
      } catch (error) {
        failed.push({ key, error });
        // Its node closed: every further call would fail at once, starving the event loop.
        if (error instanceof ClosedError) return;
      }
    }
  })();
  return {
    acked,
    failed,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/** Nodes in this process over one in-memory storage and lease store, so faults can aim at one. */
export function memoryNodes(
  dir: string,
  defaults: Partial<NodeOptions> = {},
  wrapLeases: (store: LeaseStore) => LeaseStore = (store) => store,
) {
  const storage = new MemoryStorage();
  const leases = new MemoryLeaseStore();
  const nodes: HadbNode[] = [];
  const transitions: Transition[] = [];
  return {
    storage,
    leases,
    transitions,
    async start(id: string, extra: Partial<NodeOptions> = {}) {
      const node = await createNode({
        id,
        secret: SECRET,
        dataDir: path.join(dir, id),
        storage: storage.forNode(id),
        leases: wrapLeases(leases.forNode(id)),
        timing: FAST_TIMING,
        transitions: { onTransition: (transition) => transitions.push(transition) },
        ...defaults,
        ...extra,
      });
      nodes.push(node);
      return node;
    },
    async closeAll() {
      await Promise.allSettled(nodes.map((node) => node.close()));
    },
  };
}

/** Opens `db0`…`db<count-1>` on `node`, each with `schema`. */
export function openAll(node: HadbNode, count: number, schema: string): Promise<HadbDatabase[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => node.open(`db${i}`, { schema })));
}

/** Node a leads `db` and node b follows it, both opened with `schema`. */
export async function leaderAndFollower(c: TestCluster, schema: string) {
  const a = await c.start('a');
  const leader = await a.open('db', { schema });
  const b = await c.start('b');
  const follower = await b.open('db', { schema });
  expect(leader.role).toBe('leader');
  expect(follower.role).toBe('follower');
  return { a, b, leader, follower };
}

/** The rows `sql` reads from `name` restored from the cluster's storage, after an integrity check. */
export async function rowsInStorage(
  c: TestCluster,
  name: string,
  sql = 'select id, v from t order by id',
): Promise<unknown[]> {
  const target = path.join(fs.mkdtempSync(path.join(c.dir, 'restored-')), `${name}.db`);
  await restoreDatabase({
    storage: createFsStorage({ root: path.join(c.dir, 'storage') }),
    prefix: '',
    db: name,
    destPath: target,
  });
  const copy = new Database(target, { readonly: true });
  try {
    expect(copy.pragma('integrity_check', { simple: true })).toBe('ok');
    return copy.prepare(sql).all();
  } finally {
    copy.close();
  }
}

/** The longest the event loop stayed blocked while `work` ran, in ms. */
export async function longestStall<T>(
  work: () => Promise<T>,
): Promise<{ result: T; stallMs: number }> {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  try {
    const result = await work();
    return { result, stallMs: delay.max / 1e6 };
  } finally {
    delay.disable();
  }
}

/**
 * While `attempt` runs (a long client statement): 200 ms in, another database of the node commits
 * and ships. The error `attempt` ended with (null if none), how long the other write took, when
 * `attempt` ended, and the node's longest event-loop stall meanwhile.
 */
export function duringOtherWrite(other: HadbDatabase, attempt: () => Promise<unknown>) {
  const started = Date.now();
  return longestStall(async () => {
    const outcome = attempt().then(
      () => null,
      (error: unknown) => error,
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const otherStarted = Date.now();
    await other.execute('insert into t(v) values (?)', ['during'], { durability: 'replicated' });
    const otherWriteMs = Date.now() - otherStarted;
    return { error: await outcome, otherWriteMs, endedAfterMs: Date.now() - started };
  });
}

/**
 * {@link TestCluster.serveOverHrana} with a statement time limit of `timeoutMs`, plus a second
 * database `other` on the same node (to show the node keeps working).
 */
export async function servedWithOther(
  c: TestCluster,
  id: string,
  schema: string,
  statements: { timeoutMs: number; processes?: number },
) {
  const served = await c.serveOverHrana(id, { schema, node: { statements } });
  return { ...served, other: await served.node.open('other', { schema }) };
}
