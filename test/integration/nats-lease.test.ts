import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection, type RequestOptions } from '@nats-io/transport-node';
import { afterEach, describe, expect, it } from 'vitest';
import {
  decodeNatsKey,
  encodeNatsKey,
  type NatsLeaseStore,
  type NatsLeaseStoreEvent,
  type NatsLeaseStoreOptions,
  openNatsLeaseStore,
  selfTestNatsLeases,
} from '../../src/adapters/lease/nats.ts';
import type { CasResult } from '../../src/adapters/lease/types.ts';
import { LeaseStoreUnavailableError, LeaseStoreUnsafeError } from '../../src/errors.ts';
import { NATS_SERVER, PrivateNatsServer } from '../support/nats.ts';
import { startNatsRelay } from '../support/relay.ts';
import { describeWithService } from '../support/services.ts';

const RACERS = 16;
const CLIENTS = 4;
/** Short enough to keep the outage tests fast, long enough for a loaded CI machine's loopback. */
const TIMEOUT_MS = 600;
/** What a call may take beyond its timeout: timers firing late, the rejection being delivered. */
const TIMER_SLACK_MS = 300;
/** KV's own key rule (kv.ts `validKeyRe`), without `.` since the encoding never emits it. */
const KV_KEY = /^[-/=\w]+$/;
/** The JetStream publish header that makes a KV create or update conditional. */
const EXPECTED_SEQUENCE = 'Nats-Expected-Last-Subject-Sequence';

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => new TextDecoder().decode(value);
const uniqueBucket = () => `hadb-test-${randomBytes(5).toString('hex')}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('NATS KV key encoding', () => {
  const keys = [
    '',
    '_',
    '.',
    'a',
    'prod/leases/app',
    'a.b',
    'a_b',
    'a_002Eb',
    'a/b.c_d',
    '.leading',
    'trailing.',
    'two..dots',
    '*',
    '>',
    'a b',
    'é',
    '😀',
    '\uD800',
    '-/=',
  ];

  it('round trips every key to a valid KV key without `.`', () => {
    for (const key of keys) {
      const encoded = encodeNatsKey(key);
      expect(encoded, JSON.stringify(key)).toMatch(KV_KEY);
      expect(decodeNatsKey(encoded), JSON.stringify(key)).toBe(key);
    }
  });

  it('is injective: different keys never share an encoding', () => {
    const encodings = new Map<string, string>();
    for (const key of keys) {
      const encoded = encodeNatsKey(key);
      expect(encodings.get(encoded), `${JSON.stringify(key)} → ${encoded}`).toBeUndefined();
      encodings.set(encoded, key);
    }
  });

  it('keeps readable characters and escapes `.` and `_`', () => {
    expect(encodeNatsKey('prod/leases/app-1=x')).toBe('prod/leases/app-1=x');
    expect(encodeNatsKey('a.b_c')).toBe('a_002Eb_005Fc');
    expect(encodeNatsKey('')).toBe('_');
  });

  it('decodes only what it encodes', () => {
    for (const foreign of ['a.b', '_002e', '_0061', '__', 'a_', '_12', 'x*']) {
      expect(decodeNatsKey(foreign), foreign).toBeUndefined();
    }
  });
});

await describeWithService('nats', 'NATS lease store', (url) => {
  const opened: NatsLeaseStore[] = [];
  const buckets: string[] = [];

  async function open(
    options: Partial<Omit<NatsLeaseStoreOptions, 'servers' | 'connection'>> = {},
  ): Promise<NatsLeaseStore> {
    const bucket = options.bucket ?? uniqueBucket();
    if (!buckets.includes(bucket)) buckets.push(bucket);
    const store = await openNatsLeaseStore({
      timeoutMs: TIMEOUT_MS,
      ...options,
      bucket,
      servers: url,
    });
    opened.push(store);
    return store;
  }

  afterEach(async () => {
    await Promise.all(opened.splice(0).map((store) => store.close()));
    const nc = await connect({ servers: url });
    const jsm = await jetstreamManager(nc);
    for (const bucket of buckets.splice(0)) await jsm.streams.delete(`KV_${bucket}`);
    await nc.close();
  });

  it('creates once, updates at the current revision only, and reads what it wrote', async () => {
    const store = await open();
    expect(await store.get('db/a')).toBeNull();
    const first = ok(await store.create('db/a', bytes('one')));
    expect(await store.create('db/a', bytes('two'))).toEqual({ ok: false, reason: 'conflict' });
    const second = ok(await store.update('db/a', bytes('three'), first));
    expect(Number(second)).toBeGreaterThan(Number(first));
    expect(await store.update('db/a', bytes('stale'), first)).toEqual({
      ok: false,
      reason: 'conflict',
    });
    // A stream sequence that is current for another key does not count for this one.
    const other = ok(await store.create('db/b', bytes('b')));
    expect(await store.update('db/a', bytes('x'), other)).toEqual({
      ok: false,
      reason: 'conflict',
    });
    for (const revision of ['0', '-1', '', 'NaN', '1e3', ` ${second}`]) {
      expect(await store.update('db/a', bytes('x'), revision), revision).toEqual({
        ok: false,
        reason: 'conflict',
      });
    }
    const entry = await store.get('db/a');
    expect(entry?.revision).toBe(second);
    expect(text(entry?.value)).toBe('three');
  });

  it(`lets exactly one of ${RACERS} concurrent creators on ${CLIENTS} connections win`, async () => {
    const bucket = uniqueBucket();
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => open({ bucket })));
    const results = await Promise.all(
      Array.from({ length: RACERS }, (_, i) =>
        at(clients, i).create('db/race', bytes(`creator ${i}`)),
      ),
    );
    const winners = results.flatMap((result, i) => (result.ok ? [{ i, result }] : []));
    expect(winners).toHaveLength(1);
    expect(results.filter((result) => !result.ok)).toHaveLength(RACERS - 1);
    const entry = await at(clients, 1).get('db/race');
    expect(text(entry?.value)).toBe(`creator ${winners[0]?.i}`);
  });

  it(`lets exactly one of ${RACERS} concurrent updaters at the same revision win`, async () => {
    const bucket = uniqueBucket();
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => open({ bucket })));
    let revision = ok(await at(clients, 0).create('db/race', bytes('start')));
    for (let round = 0; round < 3; round++) {
      const from = revision;
      const results = await Promise.all(
        Array.from({ length: RACERS }, (_, i) =>
          at(clients, i).update('db/race', bytes(`round ${round} by ${i}`), from),
        ),
      );
      const winners = results.flatMap((result, i) =>
        result.ok ? [{ i, revision: result.revision }] : [],
      );
      expect(winners, `round ${round}`).toHaveLength(1);
      revision = winners[0]?.revision ?? '';
      const entry = await at(clients, 3).get('db/race');
      expect(entry?.revision).toBe(revision);
      expect(text(entry?.value)).toBe(`round ${round} by ${winners[0]?.i}`);
    }
  });

  it('stores keys with `/`, `.` and `_` apart, under their encoded KV names', async () => {
    const store = await open();
    // 'a_002Eb' is what 'a.b' would look like without escaping `_`.
    const keys = ['a/b', 'a.b', 'a_b', 'a_002Eb', 'a/b.c_d', 'a'];
    for (const key of keys) ok(await store.create(key, bytes(`value of ${key}`)));
    for (const key of keys)
      expect(text((await store.get(key))?.value), key).toBe(`value of ${key}`);

    const nc = await connect({ servers: url });
    try {
      const kv = await new Kvm(nc).open(store.bucket);
      const stored: string[] = [];
      for await (const key of await kv.keys()) stored.push(key);
      expect(stored.sort()).toEqual(keys.map(encodeNatsKey).sort());
    } finally {
      await nc.close();
    }
  });

  it('treats a deleted key as absent and lets create take it again', async () => {
    const store = await open();
    ok(await store.create('db/gone', bytes('x')));
    const nc = await connect({ servers: url });
    try {
      const kv = await new Kvm(nc).open(store.bucket);
      await kv.delete(encodeNatsKey('db/gone'));
    } finally {
      await nc.close();
    }
    expect(await store.get('db/gone')).toBeNull();
    const again = ok(await store.create('db/gone', bytes('y')));
    expect((await store.get('db/gone'))?.revision).toBe(again);
  });

  it('watch: reports later writes under matching prefixes only, not existing keys', async () => {
    const store = await open();
    const writer = await open({ bucket: store.bucket });
    ok(await writer.create('db1/before', bytes('x')));

    const db1: string[] = [];
    const all: string[] = [];
    const stopDb1 = store.watch('db1/', (key) => db1.push(key));
    const stopAll = store.watch('', (key) => all.push(key));
    await store.watching();

    const revision = ok(await writer.create('db1/lease', bytes('1')));
    ok(await writer.update('db1/lease', bytes('2'), revision));
    ok(await writer.create('db10/lease', bytes('1')));
    ok(await writer.create('db2/lease', bytes('1')));
    await until(() => all.includes('db2/lease'), 'the catch-all subscriber to hear db2/lease');

    expect(db1).toEqual(['db1/lease', 'db1/lease']);
    expect(all).toEqual(['db1/lease', 'db1/lease', 'db10/lease', 'db2/lease']);
    stopDb1();
    stopAll();
  });

  it('watch: 1000 subscribers share one KV watcher, which stops with the last of them', async () => {
    const store = await open();
    const heard = new Map<number, number>();
    const stops = Array.from({ length: 1000 }, (_, i) =>
      store.watch(`db${i}/`, () => heard.set(i, (heard.get(i) ?? 0) + 1)),
    );
    await store.watching();
    expect(store.subscriberCount).toBe(1000);
    expect(store.watcherCount).toBe(1);
    // Count on the server too: one consumer on the bucket's stream, not one per subscriber.
    const nc = await connect({ servers: url });
    try {
      const jsm = await jetstreamManager(nc);
      expect((await jsm.streams.info(`KV_${store.bucket}`)).state.consumer_count).toBe(1);
    } finally {
      await nc.close();
    }

    await Promise.all([7, 999].map((i) => store.create(`db${i}/lease`, bytes('x'))));
    await until(() => heard.size === 2, 'both subscribers to hear their key');
    expect([...heard.entries()].sort()).toEqual([
      [7, 1],
      [999, 1],
    ]);

    for (const stop of stops.slice(0, -1)) stop();
    expect(store.watcherCount).toBe(1);
    stops.at(-1)?.();
    expect(store.subscriberCount).toBe(0);
    expect(store.watcherCount).toBe(0);
  });

  it('watch: started again later, it does not report writes made while nobody watched', async () => {
    const store = await open();
    const first: string[] = [];
    const stopFirst = store.watch('db/', (key) => first.push(key));
    await store.watching();
    ok(await store.create('db/a', bytes('1')));
    await until(() => first.includes('db/a'), 'the first subscriber to hear db/a');
    stopFirst();
    expect(store.watcherCount).toBe(0);

    ok(await store.create('db/unwatched', bytes('1')));
    const second: string[] = [];
    const stopSecond = store.watch('db/', (key) => second.push(key));
    await store.watching();
    ok(await store.create('db/b', bytes('1')));
    await until(() => second.includes('db/b'), 'the second subscriber to hear db/b');
    expect(second).toEqual(['db/b']);
    stopSecond();
  });

  it('watch: a subscriber that throws is reported and does not stop the others', async () => {
    const events: NatsLeaseStoreEvent[] = [];
    const store = await open({ onEvent: (event) => events.push(event) });
    const heard: string[] = [];
    const stopBad = store.watch('db/', () => {
      throw new Error('subscriber bug');
    });
    const stopGood = store.watch('db/', (key) => heard.push(key));
    await store.watching();
    ok(await store.create('db/a', bytes('1')));
    ok(await store.create('db/b', bytes('1')));
    await until(() => heard.length === 2, 'the good subscriber to hear both keys');
    expect(events.filter((event) => event.type === 'listener-failed')).toHaveLength(2);
    stopBad();
    stopGood();
  });

  it('self-test: passes at open on the real server and leaves nothing in the bucket', async () => {
    const store = await open();
    await selfTestNatsLeases(store);
    const nc = await connect({ servers: url });
    try {
      const jsm = await jetstreamManager(nc);
      // Purged from the stream, not deleted: not even a delete marker is left.
      expect((await jsm.streams.info(`KV_${store.bucket}`)).state.messages).toBe(0);
    } finally {
      await nc.close();
    }
    ok(await store.create('db/a', bytes('1')));
  });

  it('self-test: refuses a server that ignores CAS on create, and keeps the caller connection', async () => {
    const nc = await connect({ servers: url });
    try {
      const bucket = uniqueBucket();
      buckets.push(bucket);
      const error = await refusal(
        openNatsLeaseStore({ connection: ignoringCas(nc, () => true), bucket }),
      );
      expect(error.step).toBe('second create');
      expect(error.message).toContain(bucket);
      expect(nc.isClosed()).toBe(false);
      const jsm = await jetstreamManager(nc);
      expect((await jsm.streams.info(`KV_${bucket}`)).state.messages).toBe(0);
    } finally {
      await nc.close();
    }
  });

  it('self-test: refuses a server that accepts an update at a stale revision', async () => {
    const nc = await connect({ servers: url });
    try {
      const bucket = uniqueBucket();
      buckets.push(bucket);
      // Creates (expected sequence 0) stay conditional; updates become unconditional puts.
      const lax = ignoringCas(nc, (expected) => expected !== '0');
      const error = await refusal(openNatsLeaseStore({ connection: lax, bucket }));
      expect(error.step).toBe('stale update');
      // The same check on a store opened without it, through the exported function.
      const store = await openNatsLeaseStore({ connection: lax, bucket, selfTest: false });
      opened.push(store);
      expect((await refusal(selfTestNatsLeases(store))).step).toBe('stale update');
    } finally {
      await nc.close();
    }
  });

  it(`a silent server: calls fail with LeaseStoreUnavailableError after ${TIMEOUT_MS} ms`, async () => {
    const relay = await startNatsRelay(url);
    try {
      const store = await openNatsLeaseStore({
        servers: relay.url,
        bucket: uniqueBucket(),
        timeoutMs: TIMEOUT_MS,
      });
      opened.push(store);
      buckets.push(store.bucket);
      const revision = ok(await store.create('db/a', bytes('1')));
      relay.freeze();
      const outcomes = await Promise.all([
        failure(store.get('db/a')),
        failure(store.create('db/b', bytes('1'))),
        failure(store.update('db/a', bytes('2'), revision)),
      ]);
      for (const { error, elapsed } of outcomes) {
        expect(error).toBeInstanceOf(LeaseStoreUnavailableError);
        // The connection still looks healthy, so only the timeout can end these calls.
        expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT_MS - 50);
        expect(elapsed).toBeLessThan(TIMEOUT_MS + TIMER_SLACK_MS);
      }
    } finally {
      relay.cut();
    }
  });
});

/** A private nats-server for the outage tests: they kill it, which the shared one must not see. */
const haveBinary = fs.existsSync(NATS_SERVER);
const privateServerTitle = 'NATS lease store across server outages';
if (haveBinary) {
  describe(privateServerTitle, () => {
    let server: PrivateNatsServer | undefined;
    let store: NatsLeaseStore | undefined;

    afterEach(async () => {
      await store?.close();
      store = undefined;
      await server?.destroy();
      server = undefined;
    });

    it('a server that is down: calls fail at once with LeaseStoreUnavailableError', async () => {
      server = await PrivateNatsServer.start();
      const events: NatsLeaseStoreEvent[] = [];
      store = await openNatsLeaseStore({
        servers: server.url,
        bucket: uniqueBucket(),
        timeoutMs: TIMEOUT_MS,
        onEvent: (event) => events.push(event),
      });
      const revision = ok(await store.create('db/a', bytes('1')));
      await server.kill();
      await until(() => events.some((event) => event.type === 'disconnected'), 'the disconnect');
      for (const call of [
        () => store?.get('db/a'),
        () => store?.create('db/b', bytes('1')),
        () => store?.update('db/a', bytes('2'), revision),
      ]) {
        const { error, elapsed } = await failure(call());
        expect(error).toBeInstanceOf(LeaseStoreUnavailableError);
        // Not after the timeout: a store that knows it is disconnected does not wait for one.
        expect(elapsed).toBeLessThan(TIMEOUT_MS / 4);
      }
    });

    it('recovers by itself after a restart, and the watcher reports writes again', async () => {
      server = await PrivateNatsServer.start();
      const events: NatsLeaseStoreEvent[] = [];
      store = await openNatsLeaseStore({
        servers: server.url,
        bucket: uniqueBucket(),
        timeoutMs: TIMEOUT_MS,
        // Slow enough that the write below surely lands before this store is back.
        reconnectWaitMs: 1000,
        onEvent: (event) => events.push(event),
      });
      const heard: string[] = [];
      const stop = store.watch('db/', (key) => heard.push(key));
      await store.watching();
      const first = ok(await store.create('db/a', bytes('1')));
      await until(() => heard.includes('db/a'), 'the watcher to hear db/a');

      await server.kill();
      await expect(store.get('db/a')).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
      await server.restart();

      // While this store is away: the server loses the watcher's consumer (nats-server 2.9
      // restores it from disk, a failover or its inactivity limit would not), and another client
      // writes. The watcher must come back on its own and resume where it stopped.
      const nc = await connect({ servers: server.url });
      try {
        const jsm = await jetstreamManager(nc);
        const stream = `KV_${store.bucket}`;
        for await (const consumer of jsm.consumers.list(stream)) {
          await jsm.consumers.delete(stream, consumer.name);
        }
        const other = await openNatsLeaseStore({ connection: nc, bucket: store.bucket });
        ok(await other.create('db/b', bytes('1')));
        await other.close();
        expect(nc.isClosed()).toBe(false);
      } finally {
        await nc.close();
      }
      expect(events.map((event) => event.type)).not.toContain('reconnected');
      const live = store;
      await until(async () => (await live.get('db/a').catch(() => null)) !== null, 'get to work');
      expect((await store.get('db/a'))?.revision).toBe(first);
      ok(await store.update('db/a', bytes('2'), first));
      await until(
        () => heard.includes('db/b') && heard.filter((key) => key === 'db/a').length >= 2,
        'the watcher to hear db/b and the second write of db/a',
      );
      expect(events.map((event) => event.type)).toEqual(
        expect.arrayContaining(['disconnected', 'reconnected']),
      );
      expect(store.watcherCount).toBe(1);
      stop();
    });
  });
} else if (process.env.CI) {
  describe(privateServerTitle, () => {
    it('needs nats-server', () => {
      throw new Error(`nats-server is not at ${NATS_SERVER} (HADB_NATS_SERVER)`);
    });
  });
} else {
  process.emitWarning(
    `suite "${privateServerTitle}" did not run: nats-server is not at ${NATS_SERVER}`,
    'HadbTestServices',
  );
  describe.skip(`${privateServerTitle} [not run: nats-server missing]`, () => {
    it('needs nats-server', () => {});
  });
}

/**
 * `nc` as seen through a server with broken KV compare-and-swap: publishes lose their expected
 * last subject sequence header whenever `drop(value)` says so, making them unconditional.
 */
function ignoringCas(nc: NatsConnection, drop: (expected: string) => boolean): NatsConnection {
  return new Proxy(nc, {
    get(target, property) {
      if (property === 'request') {
        return (subject: string, payload?: Uint8Array, options?: RequestOptions) => {
          const expected = options?.headers?.get(EXPECTED_SEQUENCE);
          if (expected && drop(expected)) options?.headers?.delete(EXPECTED_SEQUENCE);
          return target.request(subject, payload, options);
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

async function refusal(call: Promise<unknown>): Promise<LeaseStoreUnsafeError> {
  try {
    await call;
  } catch (error) {
    expect(error).toBeInstanceOf(LeaseStoreUnsafeError);
    return error as LeaseStoreUnsafeError;
  }
  throw new Error('the self-test passed');
}

function ok(result: CasResult): string {
  expect(result.ok, JSON.stringify(result)).toBe(true);
  if (!result.ok) throw new Error('unreachable');
  return result.revision;
}

function at<T>(items: readonly T[], i: number): T {
  const item = items[i % items.length];
  if (item === undefined) throw new Error('empty list');
  return item;
}

async function failure(
  call: Promise<unknown> | undefined,
): Promise<{ error: unknown; elapsed: number }> {
  const started = performance.now();
  try {
    await call;
  } catch (error) {
    return { error, elapsed: performance.now() - started };
  }
  throw new Error('the call succeeded');
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
