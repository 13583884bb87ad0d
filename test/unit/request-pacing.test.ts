import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import {
  backendKindOfUrl,
  MeteredLeaseStore,
  MeteredStorage,
  meterLeaseStore,
  meterStorage,
  type RequestCount,
  requestCounts,
  sharedLeasePacer,
  totalRequests,
} from '../../src/adapters/metered.ts';
import { RequestPacer, sharedStoragePacer } from '../../src/adapters/pacing.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import type { Clock } from '../../src/clock.ts';
import {
  InvalidArgumentError,
  InvalidKeyError,
  LeaseStoreUnavailableError,
  StorageNotFoundError,
  StorageUnavailableError,
} from '../../src/errors.ts';
import { createNode } from '../../src/runtime/node.ts';

const bytes = (text: string) => new TextEncoder().encode(text);

/** Time moves only when the test says so; due timers then fire in order. */
class ManualClock implements Clock {
  time = 0;
  #timers: { at: number; fn: () => void }[] = [];
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const timer = { at: this.time + ms, fn };
    this.#timers.push(timer);
    return timer;
  }
  clearTimeout(id: unknown): void {
    this.#timers = this.#timers.filter((timer) => timer !== id);
  }
  async advance(ms: number): Promise<void> {
    const until = this.time + ms;
    for (;;) {
      this.#timers.sort((a, b) => a.at - b.at);
      const next = this.#timers[0];
      if (!next || next.at > until) break;
      this.#timers.shift();
      this.time = Math.max(this.time, next.at);
      next.fn();
      await settle();
    }
    this.time = until;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

interface Deferred {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** A storage whose puts hang until the test lets them go, and which counts them in flight. */
class HangingStorage implements StorageBackend {
  inFlight = 0;
  maxInFlight = 0;
  readonly started: string[] = [];
  readonly pending: Deferred[] = [];

  put(key: string): Promise<void> {
    this.started.push(key);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ resolve, reject });
    }).finally(() => {
      this.inFlight--;
    });
  }
  async putIfAbsent(): Promise<boolean> {
    return true;
  }
  async get(): Promise<Uint8Array | null> {
    return null;
  }
  async list() {
    return { objects: [] };
  }
  async delete(): Promise<void> {}

  releaseAll(): void {
    for (const deferred of this.pending.splice(0)) deferred.resolve();
  }
}

function count(counts: readonly RequestCount[], op: string, outcome: string): number {
  return counts.find((entry) => entry.op === op && entry.outcome === outcome)?.count ?? 0;
}

describe('metered storage', () => {
  it('counts every request by backend kind, operation and outcome', async () => {
    const storage = meterStorage(new MemoryStorage());
    const before = totalRequests(requestCounts().storage, { backend: 'memory' });
    await storage.put('a/1', bytes('one'));
    expect(await storage.putIfAbsent('a/2', bytes('two'))).toBe(true);
    expect(await storage.putIfAbsent('a/2', bytes('again'))).toBe(false);
    expect(await storage.get('a/1')).toEqual(bytes('one'));
    expect(await storage.get('a/missing')).toBeNull();
    expect((await storage.list('a/')).objects.map((object) => object.key)).toEqual(['a/1', 'a/2']);
    await storage.delete(['a/1']);

    const counts = storage.requestCounts();
    expect(new Set(counts.map((entry) => entry.backend))).toEqual(new Set(['memory']));
    expect(count(counts, 'put', 'ok')).toBe(1);
    expect(count(counts, 'putIfAbsent', 'ok')).toBe(1);
    expect(count(counts, 'putIfAbsent', 'conflict')).toBe(1);
    expect(count(counts, 'get', 'ok')).toBe(1);
    expect(count(counts, 'get', 'not-found')).toBe(1);
    expect(count(counts, 'list', 'ok')).toBe(1);
    expect(count(counts, 'delete', 'ok')).toBe(1);
    expect(totalRequests(counts)).toBe(7);
    // The process-wide snapshot saw them too.
    expect(totalRequests(requestCounts().storage, { backend: 'memory' }) - before).toBe(7);
  });

  it('passes errors through unchanged and counts them', async () => {
    const unavailable = new StorageUnavailableError('down');
    const notFound = new StorageNotFoundError('a/gone');
    const failing: StorageBackend = {
      put: () => Promise.reject(unavailable),
      putIfAbsent: () => Promise.reject(notFound),
      // Thrown synchronously, as a validating backend may.
      get: (key) => {
        throw new InvalidKeyError(key, 'bad');
      },
      list: async () => ({ objects: [] }),
      delete: async () => {},
    };
    const storage = meterStorage(failing, { kind: 'test', pacer: new RequestPacer() });
    await expect(storage.put('a', bytes('x'))).rejects.toBe(unavailable);
    const rejected = await storage.putIfAbsent('a', bytes('x')).catch((error: unknown) => error);
    expect(rejected).toBe(notFound);
    expect(rejected).toBeInstanceOf(StorageNotFoundError);
    expect((rejected as StorageNotFoundError).code).toBe('STORAGE_NOT_FOUND');
    const invalid = await storage.get('..').catch((error: unknown) => error);
    expect(invalid).toBeInstanceOf(InvalidKeyError);
    expect((invalid as InvalidKeyError).code).toBe('INVALID_KEY');

    const counts = storage.requestCounts();
    expect(counts.every((entry) => entry.backend === 'test')).toBe(true);
    expect(count(counts, 'put', 'error')).toBe(1);
    expect(count(counts, 'putIfAbsent', 'not-found')).toBe(1);
    expect(count(counts, 'get', 'error')).toBe(1);
  });

  it('is not wrapped twice', () => {
    const storage = meterStorage(new MemoryStorage(), { kind: 'memory' });
    expect(meterStorage(storage, { kind: 'other' })).toBe(storage);
    const leases = meterLeaseStore(new MemoryLeaseStore());
    expect(meterLeaseStore(leases)).toBe(leases);
    expect(new MeteredStorage({} as StorageBackend).kind).toBe('custom');
  });

  it('names the backend of a store URL', () => {
    expect(backendKindOfUrl('file:///mnt/shared/hadb')).toBe('fs');
    expect(backendKindOfUrl('s3://bucket/prefix?endpoint=http://x')).toBe('s3');
    expect(backendKindOfUrl('nats://127.0.0.1:4222/leases')).toBe('nats');
    expect(backendKindOfUrl('memory:')).toBe('memory');
    expect(backendKindOfUrl('gopher://x')).toBe('custom');
  });
});

describe('metered lease store', () => {
  it('counts gets, creates and updates by outcome', async () => {
    const leases = meterLeaseStore(new MemoryLeaseStore());
    expect(await leases.get('db')).toBeNull();
    const created = await leases.create('db', bytes('v1'));
    expect(created.ok).toBe(true);
    expect((await leases.create('db', bytes('v1'))).ok).toBe(false);
    const entry = await leases.get('db');
    if (!created.ok || !entry) throw new Error('expected a lease entry');
    expect((await leases.update('db', bytes('v2'), created.revision)).ok).toBe(true);
    expect((await leases.update('db', bytes('v3'), created.revision)).ok).toBe(false);

    const counts = leases.requestCounts();
    expect(counts.every((entry) => entry.backend === 'memory')).toBe(true);
    expect(count(counts, 'get', 'not-found')).toBe(1);
    expect(count(counts, 'get', 'ok')).toBe(1);
    expect(count(counts, 'create', 'ok')).toBe(1);
    expect(count(counts, 'create', 'conflict')).toBe(1);
    expect(count(counts, 'update', 'ok')).toBe(1);
    expect(count(counts, 'update', 'conflict')).toBe(1);
  });

  it('passes errors through unchanged', async () => {
    const down = new LeaseStoreUnavailableError('no quorum');
    const store: LeaseStore = {
      get: () => Promise.reject(down),
      create: () => Promise.reject(down),
      update: () => Promise.reject(down),
    };
    const leases = meterLeaseStore(store, { kind: 'nats' });
    const error = await leases.get('db').catch((caught: unknown) => caught);
    expect(error).toBe(down);
    expect((error as LeaseStoreUnavailableError).code).toBe('LEASE_STORE_UNAVAILABLE');
    await expect(leases.update('db', bytes('x'), '1')).rejects.toBeInstanceOf(
      LeaseStoreUnavailableError,
    );
    expect(count(leases.requestCounts(), 'get', 'error')).toBe(1);
    expect(count(leases.requestCounts(), 'update', 'error')).toBe(1);
  });

  it('passes watch through, and has none when the store has none', async () => {
    const inner = new MemoryLeaseStore();
    const leases = meterLeaseStore(inner);
    const changed: string[] = [];
    const unwatch = leases.watch?.('db', (key) => changed.push(key));
    expect(unwatch).toBeTypeOf('function');
    await leases.create('db', bytes('v1'));
    await inner.create('db-other', bytes('v1'));
    await settle();
    expect(changed).toEqual(['db', 'db-other']);
    unwatch?.();
    await leases.create('db-late', bytes('v1'));
    await settle();
    expect(changed).toEqual(['db', 'db-other']);
    expect(count(leases.requestCounts(), 'watch', 'ok')).toBe(1);

    const unwatchable = new MeteredLeaseStore({
      get: async () => null,
      create: async () => ({ ok: true, revision: '1' }),
      update: async () => ({ ok: true, revision: '2' }),
    });
    expect(unwatchable.watch).toBeUndefined();
  });

  it('is not paced behind storage requests', async () => {
    expect(sharedLeasePacer()).not.toBe(sharedStoragePacer());
    const hanging = new HangingStorage();
    const storage = meterStorage(hanging, { pacer: new RequestPacer({ maxConcurrent: 1 }) });
    const uploads = [storage.put('big/1', bytes('x')), storage.put('big/2', bytes('x'))];
    await settle();
    expect(hanging.started).toEqual(['big/1']);
    const leases = meterLeaseStore(new MemoryLeaseStore(), { pacer: sharedLeasePacer() });
    expect((await leases.create('db', bytes('v1'))).ok).toBe(true);
    hanging.releaseAll();
    await settle();
    hanging.releaseAll();
    await Promise.all(uploads);
  });
});

describe('request pacer', () => {
  it('caps the requests in flight, and runs every queued one in the end', async () => {
    const hanging = new HangingStorage();
    const storage = meterStorage(hanging, { pacer: new RequestPacer({ maxConcurrent: 3 }) });
    const puts = Array.from({ length: 10 }, (_, i) => storage.put(`k/${i}`, bytes('x')));
    await settle();
    expect(hanging.inFlight).toBe(3);
    expect(storage.pacer?.queued).toBe(7);
    while (hanging.started.length < 10 || hanging.inFlight > 0) {
      hanging.pending.shift()?.resolve();
      await settle();
      expect(hanging.inFlight).toBeLessThanOrEqual(3);
    }
    await Promise.all(puts);
    expect(hanging.maxInFlight).toBe(3);
    expect(count(storage.requestCounts(), 'put', 'ok')).toBe(10);
    expect(storage.pacer?.inFlight).toBe(0);
  });

  it('frees the slot of a request that failed', async () => {
    const hanging = new HangingStorage();
    const storage = meterStorage(hanging, { pacer: new RequestPacer({ maxConcurrent: 1 }) });
    const first = storage.put('k/1', bytes('x'));
    const second = storage.put('k/2', bytes('x'));
    await settle();
    const failure = new StorageUnavailableError('throttled');
    hanging.pending.shift()?.reject(failure);
    await expect(first).rejects.toBe(failure);
    await settle();
    expect(hanging.started).toEqual(['k/1', 'k/2']);
    hanging.releaseAll();
    await second;
  });

  it('starts queued requests in arrival order', async () => {
    const pacer = new RequestPacer({ maxConcurrent: 1 });
    const order: number[] = [];
    let release: () => void = () => {};
    const blocker = pacer.run(() => new Promise<void>((resolve) => (release = resolve)));
    const runs = Array.from({ length: 20 }, (_, i) =>
      pacer.run(async () => {
        order.push(i);
        await settle();
      }),
    );
    await settle();
    expect(order).toEqual([]);
    release();
    await Promise.all([blocker, ...runs]);
    expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('spaces requests to the rate once the burst is spent, in arrival order', async () => {
    const clock = new ManualClock();
    const pacer = new RequestPacer({ ratePerSecond: 10, burst: 2, maxConcurrent: 100, clock });
    const startedAt: [number, number][] = [];
    const runs = Array.from({ length: 5 }, (_, i) =>
      pacer.run(async () => {
        startedAt.push([i, clock.now()]);
      }),
    );
    await settle();
    // The burst goes at once; then one every 100 ms.
    expect(startedAt).toEqual([
      [0, 0],
      [1, 0],
    ]);
    await clock.advance(99);
    expect(startedAt).toHaveLength(2);
    await clock.advance(1);
    expect(startedAt).toHaveLength(3);
    await clock.advance(200);
    await Promise.all(runs);
    expect(startedAt).toEqual([
      [0, 0],
      [1, 0],
      [2, 100],
      [3, 200],
      [4, 300],
    ]);
    // A late arrival waits behind nobody but still needs a token: the bucket refilled meanwhile.
    await clock.advance(1000);
    await pacer.run(async () => startedAt.push([5, clock.now()]));
    expect(startedAt.at(-1)).toEqual([5, 1300]);
  });

  it('lets no newcomer jump the queue when a token came due before the queue was woken', async () => {
    const clock = new ManualClock();
    const pacer = new RequestPacer({ ratePerSecond: 10, burst: 1, clock });
    const order: string[] = [];
    const runs = [pacer.run(async () => order.push('a')), pacer.run(async () => order.push('b'))];
    await settle();
    expect(order).toEqual(['a']);
    // A token is due, but the timer that wakes the queue has not fired yet.
    clock.time = 150;
    runs.push(pacer.run(async () => order.push('c')));
    await settle();
    expect(order).toEqual(['a']);
    await clock.advance(200);
    await Promise.all(runs);
    expect(order).toEqual(['a', 'b', 'c']);
  });

  it('rejects nonsense limits', () => {
    expect(() => new RequestPacer({ maxConcurrent: 0 })).toThrow(InvalidArgumentError);
    expect(() => new RequestPacer({ ratePerSecond: -1 })).toThrow(InvalidArgumentError);
    expect(() => new RequestPacer({ burst: 1.5 })).toThrow(InvalidArgumentError);
  });
});

describe('a node', () => {
  const dirs: string[] = [];
  const tempDir = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-metered-'));
    dirs.push(dir);
    return dir;
  };
  afterAll(() => {
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('counts its requests on /metrics and in requestCounts(), without database names', async () => {
    const storage = new MemoryStorage();
    const node = await createNode({
      id: 'metered',
      secret: 'a-secret-of-at-least-16-chars',
      dataDir: tempDir(),
      storage,
      leases: new MemoryLeaseStore(),
    });
    try {
      const db = await node.open('orders', { schema: 'create table if not exists t(x)' });
      await db.execute('insert into t values (1)');
      const counts = node.requestCounts();
      expect(totalRequests(counts.storage, { backend: 'memory', outcome: 'ok' })).toBeGreaterThan(
        0,
      );
      expect(totalRequests(counts.lease, { backend: 'memory', op: 'create' })).toBeGreaterThan(0);
      const metrics = await (await fetch(`${node.address}/metrics`)).text();
      expect(metrics).toMatch(
        /^hadb_storage_requests_total\{backend="memory",op="put\w*",outcome="ok"\} \d+$/m,
      );
      expect(metrics).toMatch(
        /^hadb_lease_requests_total\{backend="memory",op="create",outcome="ok"\} \d+$/m,
      );
      expect(metrics).not.toContain('orders');
    } finally {
      await node.close();
    }
  });

  it('uses a store that is metered already as it is, and its pacer', async () => {
    const pacer = new RequestPacer({ maxConcurrent: 2 });
    const storage = meterStorage(new MemoryStorage(), { kind: 'mine', pacer });
    const node = await createNode({
      id: 'premetered',
      secret: 'a-secret-of-at-least-16-chars',
      dataDir: tempDir(),
      storage,
      leases: new MemoryLeaseStore(),
      listen: false,
      pacing: { storage: { maxConcurrent: 1 } },
    });
    try {
      await node.open('orders');
      const counts = node.requestCounts();
      expect(totalRequests(counts.storage)).toBeGreaterThan(0);
      expect(counts.storage.every((entry) => entry.backend === 'mine')).toBe(true);
      expect(totalRequests(storage.requestCounts())).toBeGreaterThanOrEqual(
        totalRequests(counts.storage),
      );
    } finally {
      await node.close();
    }
  });
});
