/**
 * The LeaseStore contract (src/adapters/lease/types.ts), written once and run against every
 * backend. Call `leaseStoreContract(open)` inside a `describe`; `open` runs before each test and
 * `cleanup` after it. Every test writes only under its own random key prefix, so a harness may
 * hand out the same backend (bucket, KV bucket, file) to every test.
 *
 * Keys used here stay within what every backend accepts: letters, digits and `_ = . - /`, never
 * starting or ending with `.` or `/`, and without empty segments.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, expect, it, type TestContext } from 'vitest';
import type { CasResult, LeaseStore } from '../../src/adapters/lease/types.ts';
import { LeaseStoreUnavailableError } from '../../src/errors.ts';
import { bounded, DOWN_BOUND_MS, expectUnavailable } from './down.ts';

export interface LeaseStoreHarness {
  store: LeaseStore;
  /** An independent client of the same backend (another connection, as another process has). */
  openAnother?: () => Promise<LeaseStore>;
  /** A client whose backend is unreachable or down. It must open; its calls must fail. */
  openDown?: () => Promise<LeaseStore>;
  /** Closes `store` and whatever the harness made; clients from `open*` are closed by the tests. */
  cleanup(): Promise<void>;
}

/** How long a call to a down backend may take to reject. */
/** How long a watcher may take to hear a change. */
const WATCH_BOUND_MS = 10_000;
/** After a later change was heard, how much longer to listen for notifications that must not come. */
const WATCH_GRACE_MS = 250;
const RACERS = 16;

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array) => new TextDecoder().decode(value);

export function leaseStoreContract(open: () => Promise<LeaseStoreHarness>): void {
  let harness: LeaseStoreHarness;
  let base: string;
  const extra: LeaseStore[] = [];

  async function another(): Promise<LeaseStore> {
    if (!harness.openAnother) return harness.store;
    const store = await harness.openAnother();
    extra.push(store);
    return store;
  }

  beforeEach(async () => {
    harness = await open();
    base = `lc/${randomBytes(6).toString('hex')}`;
  });

  afterEach(async () => {
    for (const store of extra.splice(0)) await store.close?.();
    await harness.cleanup();
  });

  it('reads a key never written as null', async () => {
    expect(await harness.store.get(`${base}/missing`)).toBeNull();
  });

  it('creates a key once; a second create conflicts and changes nothing', async () => {
    const key = `${base}/db`;
    const created = expectOk(await harness.store.create(key, bytes('first')));
    expect(await harness.store.create(key, bytes('second'))).toEqual({
      ok: false,
      reason: 'conflict',
    });
    const other = await another();
    expect(await other.create(key, bytes('third'))).toEqual({ ok: false, reason: 'conflict' });
    const entry = await harness.store.get(key);
    expect(entry?.revision).toBe(created);
    expect(text(entry?.value ?? bytes('<missing>'))).toBe('first');
  });

  it('updates at the current revision, to a new revision that get reports', async () => {
    const key = `${base}/db`;
    const first = expectOk(await harness.store.create(key, bytes('a')));
    const second = expectOk(await harness.store.update(key, bytes('b'), first));
    expect(second).not.toBe(first);
    const entry = await (await another()).get(key);
    expect(entry?.revision).toBe(second);
    expect(text(entry?.value ?? bytes('<missing>'))).toBe('b');
  });

  it('refuses an update at a stale revision and keeps the current value', async () => {
    const key = `${base}/db`;
    const first = expectOk(await harness.store.create(key, bytes('a')));
    const second = expectOk(await harness.store.update(key, bytes('b'), first));
    expect(await harness.store.update(key, bytes('stale'), first)).toEqual({
      ok: false,
      reason: 'conflict',
    });
    const entry = await harness.store.get(key);
    expect(entry?.revision).toBe(second);
    expect(text(entry?.value ?? bytes('<missing>'))).toBe('b');
  });

  it('refuses an update of a key never created, and does not create it', async () => {
    const key = `${base}/never`;
    const elsewhere = expectOk(await harness.store.create(`${base}/elsewhere`, bytes('x')));
    // A revision that is current for another key must not count for this one.
    expect(await harness.store.update(key, bytes('x'), elsewhere)).toEqual({
      ok: false,
      reason: 'conflict',
    });
    expect(await harness.store.update(key, bytes('x'), '1')).toEqual({
      ok: false,
      reason: 'conflict',
    });
    expect(await harness.store.get(key)).toBeNull();
  });

  it('treats a revision it never handed out as a conflict, not an error', async () => {
    const key = `${base}/db`;
    const current = expectOk(await harness.store.create(key, bytes('a')));
    // '' matters: an HTTP client that drops an empty If-Match header would write unconditionally.
    for (const revision of ['', 'no-such-revision', `${current}0`, `"${current}"`, ' ']) {
      if (revision === current) continue;
      expect(await harness.store.update(key, bytes('x'), revision), revision).toEqual({
        ok: false,
        reason: 'conflict',
      });
    }
    const entry = await harness.store.get(key);
    expect(entry?.revision).toBe(current);
    expect(text(entry?.value ?? bytes('<missing>'))).toBe('a');
  });

  it('gives every write a revision never seen before, even when the bytes repeat', async () => {
    // A leader renews by writing the very same record; followers judge expiry by the revision
    // staying unchanged, so a renewal that kept its revision (an ETag of equal bytes) would let
    // them take a live lease. And A-B-A must not bring an old revision back to life.
    const key = `${base}/db`;
    const record = bytes('{"holder":"n1","epoch":3}');
    const revisions = [expectOk(await harness.store.create(key, record))];
    for (const value of [record, record, bytes('other'), record]) {
      const previous = revisions[revisions.length - 1] ?? '';
      revisions.push(expectOk(await harness.store.update(key, value, previous)));
    }
    expect(new Set(revisions).size).toBe(revisions.length);
    for (const old of revisions.slice(0, -1)) {
      expect(await harness.store.update(key, bytes('late'), old), old).toEqual({
        ok: false,
        reason: 'conflict',
      });
    }
    expect((await harness.store.get(key))?.revision).toBe(revisions[revisions.length - 1]);
  });

  it('round trips values byte for byte: empty, all byte values, 4 KiB, 64 KiB, a view', async () => {
    const allBytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const backing = randomBytes(100);
    const values: [string, Uint8Array][] = [
      ['empty', new Uint8Array()],
      ['one', new Uint8Array([0])],
      ['all', allBytes],
      ['4k', new Uint8Array(randomBytes(4096))],
      ['64k', new Uint8Array(randomBytes(64 * 1024))],
      // Only the viewed bytes, not the whole backing buffer.
      ['view', new Uint8Array(backing.buffer, backing.byteOffset + 7, 33)],
    ];
    const other = await another();
    for (const [name, value] of values) {
      const key = `${base}/${name}`;
      const revision = expectOk(await harness.store.create(key, value));
      expectBytes((await other.get(key))?.value, value, `create ${name}`);
      // Updating to other sizes exercises a backend that reuses the old record's space.
      const swapped = name === 'empty' ? allBytes : new Uint8Array();
      const next = expectOk(await harness.store.update(key, swapped, revision));
      expectBytes((await other.get(key))?.value, swapped, `update ${name}`);
      expectOk(await harness.store.update(key, value, next));
      expectBytes((await other.get(key))?.value, value, `update back ${name}`);
    }
  });

  it('does not keep or hand out the caller’s buffers', async () => {
    const key = `${base}/db`;
    const value = bytes('original');
    expectOk(await harness.store.create(key, value));
    value.fill(0x7a);
    const read = await harness.store.get(key);
    expect(text(read?.value ?? bytes('<missing>'))).toBe('original');
    read?.value.fill(0x79);
    expect(text((await harness.store.get(key))?.value ?? bytes('<missing>'))).toBe('original');
  });

  it('keeps keys independent, whatever their characters or prefixes', async () => {
    const names = [
      'k',
      'K',
      'k/x',
      'k/x/y',
      'k.x',
      'k_x',
      'k-x',
      'k=x',
      'kx',
      'k/X',
      'a.b/c',
      'a/b.c',
      '0',
      'x'.repeat(100),
    ];
    const keys = names.map((name) => `${base}/${name}`);
    const other = await another();
    const revisions = new Map<string, string>();
    for (const [index, key] of keys.entries()) {
      const client = index % 2 === 0 ? harness.store : other;
      revisions.set(key, expectOk(await client.create(key, bytes(`v0 ${key}`))));
    }
    // Update every other key; the rest must keep their first value and revision.
    for (const [index, key] of keys.entries()) {
      if (index % 2 === 1) continue;
      const revision = revisions.get(key) ?? '';
      revisions.set(key, expectOk(await other.update(key, bytes(`v1 ${key}`), revision)));
    }
    for (const [index, key] of keys.entries()) {
      const entry = await harness.store.get(key);
      expect(entry?.revision, key).toBe(revisions.get(key));
      expect(text(entry?.value ?? bytes('<missing>')), key).toBe(
        `${index % 2 === 0 ? 'v1' : 'v0'} ${key}`,
      );
    }
    for (const near of ['k/x/y/z', 'ky', 'k.y', 'k/Y', 'KX']) {
      expect(await harness.store.get(`${base}/${near}`), near).toBeNull();
    }
  });

  it('lets exactly one of many concurrent creators across clients win', async () => {
    const key = `${base}/db`;
    const clients = [harness.store, await another()];
    const results = await Promise.all(
      Array.from({ length: RACERS }, (_, i) =>
        clients[i % clients.length]?.create(key, bytes(`creator ${i}`)),
      ),
    );
    const winners = results.flatMap((result, i) => (result?.ok ? [{ i, result }] : []));
    expect(winners).toHaveLength(1);
    for (const result of results) {
      if (!result?.ok) expect(result).toEqual({ ok: false, reason: 'conflict' });
    }
    const [winner] = winners;
    const entry = await harness.store.get(key);
    expect(text(entry?.value ?? bytes('<missing>'))).toBe(`creator ${winner?.i}`);
    expect(entry?.revision).toBe(winner?.result.ok ? winner.result.revision : undefined);
  });

  it('lets exactly one of many concurrent updaters at the same revision win', async () => {
    const key = `${base}/db`;
    const clients = [harness.store, await another()];
    let revision = expectOk(await harness.store.create(key, bytes('start')));
    for (let round = 0; round < 3; round++) {
      const from = revision;
      const results = await Promise.all(
        Array.from({ length: RACERS }, (_, i) =>
          clients[i % clients.length]?.update(key, bytes(`round ${round} updater ${i}`), from),
        ),
      );
      const winners = results.flatMap((result, i) => (result?.ok ? [{ i, result }] : []));
      expect(winners, `round ${round}`).toHaveLength(1);
      for (const result of results) {
        if (!result?.ok) expect(result).toEqual({ ok: false, reason: 'conflict' });
      }
      const [winner] = winners;
      const entry = await clients[1]?.get(key);
      expect(text(entry?.value ?? bytes('<missing>'))).toBe(`round ${round} updater ${winner?.i}`);
      revision = winner?.result.ok ? winner.result.revision : '';
      expect(entry?.revision).toBe(revision);
      expect(revision).not.toBe(from);
    }
  });

  it('watch: hears changed keys under the prefix, from any client, and no others', async (ctx) => {
    const watch = watchOf(harness.store, ctx);
    const prefix = `${base}/w/`;
    const heard: string[] = [];
    const stop = watch(prefix, (key) => heard.push(key));
    try {
      await primeWatch(harness.store, `${prefix}primer`, heard);
      const writer = await another();
      const inside = `${prefix}a`;
      const nested = `${prefix}b/c`;
      const first = expectOk(await writer.create(inside, bytes('1')));
      await waitFor(() => heard.includes(inside), `the watcher to hear ${inside} created`);
      const heardInside = count(heard, inside);
      // Outside the prefix, also keys that share its characters without the final '/'.
      for (const outside of [`${base}/w`, `${base}/wX`, `${base}/w.a`, `${base}/other/a`]) {
        expectOk(await writer.create(outside, bytes('outside')));
      }
      expectOk(await writer.update(inside, bytes('2'), first));
      expectOk(await writer.create(nested, bytes('nested')));
      await waitFor(
        () => heard.includes(nested) && count(heard, inside) > heardInside,
        `the watcher to hear ${inside} updated and ${nested} created`,
      );
      await sleep(WATCH_GRACE_MS);
      expect(heard.filter((key) => !key.startsWith(prefix))).toEqual([]);
      expect(new Set(heard)).toEqual(new Set([`${prefix}primer`, inside, nested]));
    } finally {
      stop();
    }
  });

  it('watch: stops calling after unsubscribe', async (ctx) => {
    const watch = watchOf(harness.store, ctx);
    const prefix = `${base}/w/`;
    const stopped: string[] = [];
    const live: string[] = [];
    const stop = watch(prefix, (key) => stopped.push(key));
    const stopLive = watch(prefix, (key) => live.push(key));
    try {
      await primeWatch(harness.store, `${prefix}primer`, stopped);
      await waitFor(() => live.includes(`${prefix}primer`), 'the second watcher to start');
      stop();
      const heardBefore = stopped.length;
      const writer = await another();
      const key = `${prefix}after`;
      const revision = expectOk(await writer.create(key, bytes('1')));
      expectOk(await writer.update(key, bytes('2'), revision));
      // The live watcher is the barrier: once it heard the write, the stopped one would have too.
      await waitFor(() => count(live, key) >= 1, 'the live watcher to hear the write');
      await sleep(WATCH_GRACE_MS);
      expect(stopped.slice(heardBefore)).toEqual([]);
    } finally {
      stop();
      stopLive();
    }
  });

  for (const method of ['get', 'create', 'update'] as const) {
    const title = `down: ${method} rejects with LeaseStoreUnavailableError within ${DOWN_BOUND_MS / 1000} s`;
    it(title, { timeout: DOWN_BOUND_MS * 2 }, async (ctx) => {
      if (!harness.openDown) {
        ctx.skip('this backend has no down client');
        return;
      }
      const down = await bounded(harness.openDown(), 'opening a client of a down backend');
      try {
        const key = `${base}/down`;
        const call =
          method === 'get'
            ? down.get(key)
            : method === 'create'
              ? down.create(key, bytes('x'))
              : down.update(key, bytes('x'), '1');
        await expectUnavailable(call, LeaseStoreUnavailableError, `${method} on a down backend`);
      } finally {
        // A client of a down backend may fail to close as well; that is not under test here.
        await down.close?.().catch(() => undefined);
      }
    });
  }
}

function expectOk(result: CasResult): string {
  expect(result.ok, JSON.stringify(result)).toBe(true);
  if (!result.ok) throw new Error('unreachable');
  expect(typeof result.revision).toBe('string');
  expect(result.revision.length).toBeGreaterThan(0);
  return result.revision;
}

function expectBytes(actual: Uint8Array | undefined, expected: Uint8Array, what: string): void {
  expect(actual, what).toBeInstanceOf(Uint8Array);
  if (actual === undefined) return;
  expect(actual.byteLength, `${what}: length`).toBe(expected.byteLength);
  const differs = expected.findIndex((byte, i) => actual[i] !== byte);
  expect(differs, `${what}: first differing byte`).toBe(-1);
}

function watchOf(store: LeaseStore, ctx: TestContext): NonNullable<LeaseStore['watch']> {
  const { watch } = store;
  if (watch === undefined) ctx.skip('this backend has no watch');
  return watch.bind(store);
}

/**
 * A watch may take a moment to start on a remote backend, and the contract promises nothing
 * about writes made before it did: write `key` until the watcher hears it.
 */
async function primeWatch(store: LeaseStore, key: string, heard: string[]): Promise<void> {
  let revision = expectOk(await store.create(key, bytes('0')));
  const deadline = performance.now() + WATCH_BOUND_MS;
  for (let round = 1; !heard.includes(key); round++) {
    if (performance.now() > deadline) throw new Error(`the watcher never heard ${key}`);
    await sleep(50);
    if (heard.includes(key)) break;
    revision = expectOk(await store.update(key, bytes(String(round)), revision));
  }
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + WATCH_BOUND_MS;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function count(keys: readonly string[], key: string): number {
  return keys.filter((heard) => heard === key).length;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
