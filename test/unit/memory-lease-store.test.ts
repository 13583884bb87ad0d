import { describe, expect, it } from 'vitest';
import { type LeaseWrite, MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { CONFLICT } from '../../src/adapters/lease/types.ts';
import { LeaseStoreUnavailableError } from '../../src/errors.ts';
import { SimClock } from '../../src/sim/clock.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const drain = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Resolves to 'pending' if `promise` has not settled within `ms` of real time. */
function settledWithin<T>(promise: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([
    promise,
    new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), ms)),
  ]);
}

/** Tracks whether a promise has settled, and how. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => {
      state.settled = true;
      state.value = value;
    },
    (error: unknown) => {
      state.settled = true;
      state.error = error;
    },
  );
  return state;
}

describe('memory lease store: compare-and-swap', () => {
  it('returns null for a key never written', async () => {
    expect(await new MemoryLeaseStore().get('missing')).toBeNull();
  });

  it('creates a key once', async () => {
    const store = new MemoryLeaseStore();
    expect(await store.create('db', bytes('a'))).toEqual({ ok: true, revision: '1' });
    expect(await store.create('db', bytes('b'))).toEqual(CONFLICT);
    expect(await store.get('db')).toEqual({ value: bytes('a'), revision: '1' });
  });

  it('updates only at the current revision', async () => {
    const store = new MemoryLeaseStore();
    await store.create('db', bytes('a'));
    expect(await store.update('db', bytes('b'), '1')).toEqual({ ok: true, revision: '2' });
    expect(await store.update('db', bytes('stale'), '1')).toEqual(CONFLICT);
    expect(await store.update('db', bytes('future'), '3')).toEqual(CONFLICT);
    expect(await store.update('db', bytes('c'), '2')).toEqual({ ok: true, revision: '3' });
    expect(await store.get('db')).toEqual({ value: bytes('c'), revision: '3' });
  });

  it('does not update a key that was never created', async () => {
    const store = new MemoryLeaseStore();
    expect(await store.update('db', bytes('x'), '0')).toEqual(CONFLICT);
    expect(await store.update('db', bytes('x'), '1')).toEqual(CONFLICT);
    expect(await store.get('db')).toBeNull();
  });

  it('keeps keys independent', async () => {
    const store = new MemoryLeaseStore();
    await store.create('a', bytes('1'));
    expect(await store.create('b', bytes('2'))).toEqual({ ok: true, revision: '1' });
    await store.update('a', bytes('3'), '1');
    expect(await store.get('a')).toEqual({ value: bytes('3'), revision: '2' });
    expect(await store.get('b')).toEqual({ value: bytes('2'), revision: '1' });
  });

  it('copies values in and out', async () => {
    const store = new MemoryLeaseStore();
    const written = bytes('abc');
    await store.create('db', written);
    written[0] = 0x7a;
    const read = await store.get('db');
    expect(read?.value).toEqual(bytes('abc'));
    if (read) read.value[1] = 0x7a;
    expect((await store.get('db'))?.value).toEqual(bytes('abc'));
    const peeked = store.peek('db');
    if (peeked) peeked.value[2] = 0x7a;
    expect(store.peek('db')).toEqual({ value: bytes('abc'), revision: '1' });
  });

  it('lets node views share one set of keys', async () => {
    const store = new MemoryLeaseStore();
    const a = store.forNode('a');
    const b = store.forNode('b');
    expect(await a.create('db', bytes('from a'))).toEqual({ ok: true, revision: '1' });
    expect(await b.create('db', bytes('from b'))).toEqual(CONFLICT);
    expect(await b.update('db', bytes('from b'), '1')).toEqual({ ok: true, revision: '2' });
    expect(await a.get('db')).toEqual({ value: bytes('from b'), revision: '2' });
    expect(store.peek('db')?.revision).toBe('2');
    expect(b.faults).toBe(store.faults);
  });
});

describe('memory lease store: watch', () => {
  it('reports changed keys under the prefix after a microtask', async () => {
    const store = new MemoryLeaseStore();
    const changed: string[] = [];
    store.watch('leases/', (key) => changed.push(key));
    await store.create('leases/db1', bytes('1'));
    await store.create('other/db2', bytes('2'));
    await store.update('leases/db1', bytes('3'), '1');
    await store.update('leases/db1', bytes('4'), '1'); // conflict: no change
    await store.create('leases/db3', bytes('5'));
    await drain();
    expect(changed).toEqual(['leases/db1', 'leases/db1', 'leases/db3']);
  });

  it('calls the watcher asynchronously, not inside the write', async () => {
    const heard: string[] = [];
    const heardAtWrite: number[] = [];
    const store = new MemoryLeaseStore({ onWrite: () => heardAtWrite.push(heard.length) });
    store.watch('', (key) => heard.push(key));
    const writing = store.create('db', bytes('x'));
    expect(heard).toEqual([]);
    await writing;
    await drain();
    expect(heardAtWrite).toEqual([0]);
    expect(heard).toEqual(['db']);
  });

  it('hears writes made through any node view', async () => {
    const store = new MemoryLeaseStore();
    const heard: string[] = [];
    store.forNode('a').watch('db', (key) => heard.push(key));
    await store.forNode('b').create('db', bytes('x'));
    await drain();
    expect(heard).toEqual(['db']);
  });

  it('stops after unsubscribe', async () => {
    const store = new MemoryLeaseStore();
    const heard: string[] = [];
    const unsubscribe = store.watch('', (key) => heard.push(key));
    await store.create('one', bytes('1'));
    await drain();
    unsubscribe();
    await store.create('two', bytes('2'));
    await drain();
    expect(heard).toEqual(['one']);
  });

  it('does not notify a watcher whose node is cut off', async () => {
    const store = new MemoryLeaseStore();
    const heardByA: string[] = [];
    const heardByB: string[] = [];
    store.forNode('a').watch('', (key) => heardByA.push(key));
    store.forNode('b').watch('', (key) => heardByB.push(key));
    store.faults.cutOff('a', 'fail');
    await store.forNode('b').create('db', bytes('x'));
    await drain();
    expect(heardByA).toEqual([]);
    expect(heardByB).toEqual(['db']);
  });
});

describe('memory lease store: fault injection', () => {
  it('failNext(2) fails exactly the next two calls', async () => {
    const store = new MemoryLeaseStore();
    await store.create('db', bytes('a'));
    store.faults.failNext(2);
    expect(store.faults.healthy).toBe(false);
    await expect(store.get('db')).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
    const failedUpdate = store.update('db', bytes('b'), '1');
    await expect(failedUpdate).rejects.toThrow(
      /LEASE_STORE_UNAVAILABLE: injected failure of update db/,
    );
    expect(store.peek('db')).toEqual({ value: bytes('a'), revision: '1' });
    expect(store.faults.healthy).toBe(true);
    expect(await store.update('db', bytes('b'), '1')).toEqual({ ok: true, revision: '2' });
    expect(await store.get('db')).toEqual({ value: bytes('b'), revision: '2' });
  });

  it('failNext(1, node) fails only that node', async () => {
    const store = new MemoryLeaseStore();
    const a = store.forNode('a');
    const b = store.forNode('b');
    store.faults.failNext(1, 'a');
    expect(await b.create('db', bytes('b'))).toEqual({ ok: true, revision: '1' });
    expect(await store.get('db')).toEqual({ value: bytes('b'), revision: '1' });
    await expect(a.get('db')).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
    expect(await a.get('db')).toEqual({ value: bytes('b'), revision: '1' });
  });

  it("cutOff(node, 'fail') rejects that node's calls at once; heal restores them", async () => {
    const store = new MemoryLeaseStore();
    const a = store.forNode('a');
    const b = store.forNode('b');
    store.faults.cutOff('a', 'fail');
    expect(store.faults.isCutOff('a')).toBe(true);
    expect(store.faults.isCutOff('b')).toBe(false);
    const error = await a.create('db', bytes('a')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseStoreUnavailableError);
    expect((error as Error).message).toMatch(/a is cut off from the store/);
    await expect(a.get('db')).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
    expect(store.peek('db')).toBeNull();
    expect(await b.create('db', bytes('b'))).toEqual({ ok: true, revision: '1' });
    store.faults.heal('a');
    expect(store.faults.healthy).toBe(true);
    expect(await a.get('db')).toEqual({ value: bytes('b'), revision: '1' });
    expect(await a.update('db', bytes('a'), '1')).toEqual({ ok: true, revision: '2' });
  });

  it("cutOff(node, 'drop') leaves calls unsettled and drops the request before it lands", async () => {
    const store = new MemoryLeaseStore();
    await store.create('db', bytes('v1'));
    const a = store.forNode('a');
    store.faults.cutOff('a', 'drop');
    expect(await settledWithin(a.update('db', bytes('v2'), '1'), 30)).toBe('pending');
    expect(await settledWithin(a.get('db'), 10)).toBe('pending');
    expect(store.peek('db')).toEqual({ value: bytes('v1'), revision: '1' });
    expect(await store.forNode('b').get('db')).toEqual({ value: bytes('v1'), revision: '1' });
    store.faults.heal('a');
    expect(await a.update('db', bytes('v3'), '1')).toEqual({ ok: true, revision: '2' });
  });

  it('a cut made while a call is in flight drops the answer but the write may land', async () => {
    const clock = new SimClock();
    const store = new MemoryLeaseStore({ clock });
    await store.create('db', bytes('v1'));
    store.faults.setLatency(100);
    const a = store.forNode('a');
    const call = track(a.update('db', bytes('v2'), '1'));
    await clock.runUntil(100, drain); // the request reaches the store and is applied
    expect(store.peek('db')).toEqual({ value: bytes('v2'), revision: '2' });
    store.faults.cutOff('a', 'drop');
    await clock.runUntil(1000, drain);
    expect(call.settled).toBe(false);
  });

  it('latency delays each call by the latency each way, on the given clock', async () => {
    const clock = new SimClock();
    const store = new MemoryLeaseStore({ clock, random: () => 0.5 });
    store.faults.setLatency(100);
    expect(store.faults.healthy).toBe(false);
    const created = track(store.create('db', bytes('x')));
    await clock.runUntil(99, drain);
    expect(store.peek('db')).toBeNull();
    await clock.runUntil(100, drain);
    expect(store.peek('db')?.revision).toBe('1');
    expect(created.settled).toBe(false);
    await clock.runUntil(199, drain);
    expect(created.settled).toBe(false);
    await clock.runUntil(200, drain);
    expect(created).toEqual({ settled: true, value: { ok: true, revision: '1' } });
  });

  it('draws latency between min and max with the given random source', async () => {
    const clock = new SimClock();
    const draws = [0, 0.999];
    const store = new MemoryLeaseStore({ clock, random: () => draws.shift() ?? 0 });
    store.faults.setLatency({ minMs: 10, maxMs: 50 });
    const read = track(store.get('db'));
    await clock.runUntil(59, drain);
    expect(read.settled).toBe(false);
    await clock.runUntil(60, drain); // 10 ms there, 50 ms back
    expect(read).toEqual({ settled: true, value: null });
  });

  it('onWrite sees each successful write with the node and revision', async () => {
    const writes: LeaseWrite[] = [];
    const store = new MemoryLeaseStore({ onWrite: (write) => writes.push(write) });
    await store.forNode('a').create('db', bytes('a1'));
    await store.forNode('b').create('db', bytes('b1')); // conflict
    await store.forNode('b').update('db', bytes('b2'), '1');
    await store.forNode('a').update('db', bytes('a2'), '1'); // stale
    await store.create('other', bytes('anon'));
    store.faults.failNext(1);
    await expect(store.forNode('a').update('db', bytes('a3'), '2')).rejects.toBeInstanceOf(
      LeaseStoreUnavailableError,
    );
    expect(writes).toEqual([
      { key: 'db', value: bytes('a1'), revision: '1', node: 'a' },
      { key: 'db', value: bytes('b2'), revision: '2', node: 'b' },
      { key: 'other', value: bytes('anon'), revision: '1', node: undefined },
    ]);
  });

  it('healthy reflects every kind of fault, and heal() clears them all', () => {
    const store = new MemoryLeaseStore();
    const { faults } = store;
    expect(faults.healthy).toBe(true);
    faults.failNext(1);
    expect(faults.healthy).toBe(false);
    faults.heal();
    expect(faults.healthy).toBe(true);
    faults.setLatency({ minMs: 0, maxMs: 5 });
    expect(faults.healthy).toBe(false);
    faults.heal();
    expect(faults.healthy).toBe(true);
    faults.cutOff('a', 'drop');
    faults.cutOff('b');
    expect(faults.healthy).toBe(false);
    expect(faults.isCutOff('a')).toBe(true);
    expect(faults.isCutOff(undefined)).toBe(false);
    faults.heal('a');
    expect(faults.healthy).toBe(false);
    faults.heal('b');
    expect(faults.healthy).toBe(true);
  });
});
