import { describe, expect, it } from 'vitest';
import { createDatabaseActor, type DatabaseActorOptions } from '../../src/actors/database.ts';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import type { Role } from '../../src/api-types.ts';
import type { Clock } from '../../src/clock.ts';
import { canCommit, roleOf } from '../../src/machines/role.ts';
import { DriftingClock, SimClock } from '../../src/sim/clock.ts';
import {
  decodeLeaseRecord,
  encodeLeaseRecord,
  type LeaseRecord,
} from '../../src/wire/lease-record.ts';
import { unitTiming } from '../support/role-timing.ts';

const timing = unitTiming;
const { ttlMs, marginMs, pollIntervalMs, renewIntervalMs } = timing;

const drain = () => new Promise<void>((resolve) => setImmediate(resolve));
const bytes = (text: string) => new TextEncoder().encode(text);

interface Write {
  at: number;
  node: string | undefined;
  revision: string;
  record: LeaseRecord;
}

function setUp(storeOptions: { latencyMs?: number } = {}) {
  const clock = new SimClock();
  const writes: Write[] = [];
  const store = new MemoryLeaseStore({
    clock,
    random: () => 0,
    onWrite: (write) => {
      if (write.node === undefined) return; // written by the test itself
      writes.push({
        at: clock.now(),
        node: write.node,
        revision: write.revision,
        record: decodeLeaseRecord(write.value),
      });
    },
  });
  if (storeOptions.latencyMs) store.faults.setLatency(storeOptions.latencyMs);

  const advance = (ms: number) => clock.runUntil(clock.now() + ms, drain);

  function stored(): { record: LeaseRecord; revision: string } {
    const entry = store.peek('db');
    if (!entry) throw new Error('no lease record stored');
    return { record: decodeLeaseRecord(entry.value), revision: entry.revision };
  }

  function startNode(
    node: string,
    options: Partial<DatabaseActorOptions> & { leases?: LeaseStore } = {},
  ) {
    const actor = createDatabaseActor({
      db: 'db',
      node,
      session: `${node}-session`,
      clock,
      leases: store.forNode(node),
      timing,
      ...options,
    });
    const roles: { at: number; role: Role }[] = [];
    actor.subscribe({
      next: (snapshot) => {
        const role = roleOf(snapshot);
        if (roles.at(-1)?.role !== role) roles.push({ at: clock.now(), role });
      },
      error: (error) => {
        throw error;
      },
    });
    actor.start();
    return {
      actor,
      roles,
      role: () => roleOf(actor.getSnapshot()),
      rolesSince: (at: number) => roles.filter((entry) => entry.at >= at).map((e) => e.role),
    };
  }

  return { clock, store, writes, advance, stored, startNode };
}

describe('role machine: a single node', () => {
  it('bootstraps, claims an absent lease with epoch 1 and becomes leader', async () => {
    const { store, writes, advance, stored, startNode, clock } = setUp();
    const bootstrapped: string[] = [];
    const a = startNode('a', {
      hooks: {
        bootstrap: async (db) => {
          bootstrapped.push(db);
        },
      },
    });
    expect(a.role()).toBe('bootstrapping');
    await advance(0);
    expect(bootstrapped).toEqual(['db']);
    expect(a.role()).toBe('leader');
    expect(a.roles.map((entry) => entry.role)).toEqual([
      'bootstrapping',
      'follower',
      'catching-up',
      'candidate',
      'leader',
    ]);
    expect(stored()).toEqual({
      record: { holder: 'a', session: 'a-session', epoch: 1, ttlMs, released: false },
      revision: '1',
    });
    expect(writes).toHaveLength(1);
    const snapshot = a.actor.getSnapshot();
    expect(snapshot.context.lease).toEqual({
      revision: '1',
      epoch: 1,
      validUntil: ttlMs - marginMs,
      delegated: false,
    });
    expect(canCommit(snapshot, clock.now())).toBe(true);
    expect(store.faults.healthy).toBe(true);
  });

  it('renews: the revision increases, the epoch stays 1, commits stay allowed', async () => {
    const { writes, advance, stored, startNode, clock } = setUp();
    const a = startNode('a');
    await advance(0);
    for (let step = 0; step < 40; step++) {
      await advance(50);
      expect(canCommit(a.actor.getSnapshot(), clock.now()), `at ${clock.now()}`).toBe(true);
    }
    expect(a.role()).toBe('leader');
    expect(writes.map((w) => w.at)).toEqual([0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000]);
    expect(writes.map((w) => w.revision)).toEqual(['1', '2', '3', '4', '5', '6', '7', '8', '9']);
    expect(new Set(writes.map((w) => w.record.epoch))).toEqual(new Set([1]));
    expect(writes.every((w) => w.node === 'a' && !w.record.released)).toBe(true);
    expect(stored().revision).toBe('9');
    const lease = a.actor.getSnapshot().context.lease;
    expect(lease).toEqual({
      revision: '9',
      epoch: 1,
      validUntil: 2000 + ttlMs - marginMs,
      delegated: false,
    });
  });

  it('writes its address into the record', async () => {
    const { advance, stored, startNode } = setUp();
    startNode('a', { address: 'http://a:7000' });
    await advance(0);
    expect(stored().record.address).toBe('http://a:7000');
  });
});

describe('role machine: a lease record it cannot read', () => {
  const unreadable: [string, Uint8Array, RegExp][] = [
    ['garbage bytes', new Uint8Array([0xff, 0xfe, 0x00, 0x9c, 0x42]), /not UTF-8 JSON/],
    [
      'a future format version',
      bytes(
        JSON.stringify({
          format: 'hadb-lease',
          v: 2,
          holder: 'future-node',
          session: 'future-session',
          epoch: 5,
          ttlMs: 1000,
          released: true,
        }),
      ),
      /format version 2 is not supported/,
    ],
  ];

  it.each(unreadable)(
    '%s: stays follower, reports it, never overwrites it',
    async (_, value, problem) => {
      const { store, writes, advance, stored, startNode, clock } = setUp();
      expect(await store.create('db', value)).toEqual({ ok: true, revision: '1' });
      const a = startNode('a');
      for (let step = 0; step < 50; step++) {
        await advance(100);
        expect(a.role()).toBe('follower');
        expect(a.actor.getSnapshot().context.leaseProblem).toMatch(problem);
      }
      expect(clock.now()).toBe(5 * ttlMs);
      expect(a.roles.map((entry) => entry.role)).toEqual(['bootstrapping', 'follower']);
      expect(a.actor.getSnapshot().context.leaseProblem).toMatch(/^LEASE_RECORD_INVALID: /);
      expect(writes).toEqual([]);
      expect(store.peek('db')).toEqual({ value, revision: '1' });

      // an operator replaces it with a readable, released record
      const released = encodeLeaseRecord({
        holder: 'old',
        session: 'old-session',
        epoch: 7,
        ttlMs,
        released: true,
      });
      expect(await store.update('db', released, '1')).toEqual({ ok: true, revision: '2' });
      await advance(pollIntervalMs);
      expect(a.role()).toBe('leader');
      expect(stored()).toEqual({
        record: { holder: 'a', session: 'a-session', epoch: 8, ttlMs, released: false },
        revision: '3',
      });
      expect(writes.map((w) => w.record.epoch)).toEqual([8]);
      expect(a.actor.getSnapshot().context.leaseProblem).toBeNull();
    },
  );
});

describe('role machine: two nodes', () => {
  // b polls every 200 ms from its start, a renews every 250 ms from 0: with b starting at 1 ms,
  // b sees a's last renewal 1 ms after it was written, which leaves no slack for an early claim.
  it.each([1, 70, 140])(
    'a follower does not claim a live lease, and takes over once it stops being renewed (b starts at %i ms)',
    async (offset) => {
      const { writes, advance, startNode, clock } = setUp();
      const a = startNode('a');
      await advance(offset);
      const b = startNode('b');
      for (let step = 0; step < 50; step++) {
        await advance(100);
        expect(a.role()).toBe('leader');
        expect(b.role()).toBe('follower');
      }
      expect(b.roles.map((entry) => entry.role)).toEqual(['bootstrapping', 'follower']);
      expect(writes.every((w) => w.node === 'a' && w.record.epoch === 1)).toBe(true);

      a.actor.stop(); // abruptly: no release
      const lastRenewal = writes.at(-1);
      if (!lastRenewal) throw new Error('no renewal');
      expect(lastRenewal.record.released).toBe(false);
      await advance(3 * ttlMs);

      const claims = writes.filter((w) => w.node === 'b');
      expect(claims.length).toBeGreaterThan(1); // the claim, then renewals
      const [claim] = claims;
      if (!claim) throw new Error('b never claimed');
      expect(claim.record).toEqual({
        holder: 'b',
        session: 'b-session',
        epoch: lastRenewal.record.epoch + 1,
        ttlMs,
        released: false,
      });
      expect(claim.at - lastRenewal.at).toBeGreaterThanOrEqual(ttlMs + marginMs);
      expect(claim.at - lastRenewal.at).toBeLessThanOrEqual(ttlMs + marginMs + 2 * pollIntervalMs);
      expect(b.role()).toBe('leader');
      expect(b.roles.find((entry) => entry.role === 'leader')?.at).toBe(claim.at);
      expect(canCommit(b.actor.getSnapshot(), clock.now())).toBe(true);
    },
  );

  it('a graceful stop releases the lease and another node claims it at once', async () => {
    const { writes, advance, stored, startNode, clock } = setUp();
    const a = startNode('a');
    await advance(10);
    const b = startNode('b');
    await advance(600);
    expect(a.role()).toBe('leader');
    expect(b.role()).toBe('follower');
    const epoch = stored().record.epoch;

    a.actor.send({ type: 'stop' });
    expect(canCommit(a.actor.getSnapshot(), clock.now())).toBe(false);
    await advance(0);
    expect(a.actor.getSnapshot().status).toBe('done');
    expect(a.role()).toBe('stopped');
    expect(a.actor.getSnapshot().context.lease).toBeNull();
    const release = writes.at(-1);
    expect(release).toMatchObject({
      node: 'a',
      record: { holder: 'a', session: 'a-session', epoch, released: true },
    });

    await advance(pollIntervalMs);
    expect(b.role()).toBe('leader');
    const claim = writes.find((w) => w.node === 'b');
    expect(claim?.record.epoch).toBe(epoch + 1);
    expect(claim?.revision).toBe(String(Number(release?.revision) + 1));
    expect((claim?.at ?? Number.POSITIVE_INFINITY) - (release?.at ?? 0)).toBeLessThanOrEqual(
      pollIntervalMs,
    );
  });

  it('handoff: the leader releases its lease and becomes follower', async () => {
    const { writes, advance, stored, startNode, clock } = setUp();
    const a = startNode('a');
    await advance(600);
    expect(a.role()).toBe('leader');
    const epoch = stored().record.epoch;
    const before = writes.length;

    const handedOffAt = clock.now();
    a.actor.send({ type: 'handoff' });
    expect(a.role()).toBe('demoting');
    expect(canCommit(a.actor.getSnapshot(), clock.now())).toBe(false);
    await drain();
    expect(writes[before]).toMatchObject({
      node: 'a',
      at: handedOffAt,
      record: { holder: 'a', epoch, released: true },
    });
    expect(a.rolesSince(handedOffAt).slice(0, 2)).toEqual(['demoting', 'follower']);
    expect(a.actor.getSnapshot().status).toBe('active');
  });
});

describe('role machine: the commit gate (I5)', () => {
  /** Records, on the node's clock, when each lease write was sent and whether it was answered. */
  function recording(store: LeaseStore, clock: Clock) {
    const answered: { sentAt: number; ok: boolean }[] = [];
    const leases: LeaseStore = {
      get: (key) => store.get(key),
      create: async (key, value) => {
        const sentAt = clock.now();
        const result = await store.create(key, value);
        answered.push({ sentAt, ok: result.ok });
        return result;
      },
      update: async (key, value, revision) => {
        const sentAt = clock.now();
        const result = await store.update(key, value, revision);
        answered.push({ sentAt, ok: result.ok });
        return result;
      },
    };
    return { leases, answered };
  }

  it.each([1, 0.9, 1.1])(
    'a leader cut off from the store stops committing by ttl - margin after its last renewal was sent (clock rate %s)',
    async (rate) => {
      const { store, advance, startNode, clock } = setUp({ latencyMs: 20 });
      const nodeClock = new DriftingClock(clock);
      nodeClock.setRate(rate);
      const { leases, answered } = recording(store.forNode('a'), nodeClock);
      const a = startNode('a', { clock: nodeClock, leases });
      await advance(1000);
      expect(a.role()).toBe('leader');
      expect(answered.length).toBeGreaterThan(2);

      store.faults.cutOff('a', 'drop');
      const cutAt = nodeClock.now();
      const last = answered.filter((call) => call.ok).at(-1);
      if (!last) throw new Error('no successful renewal');
      const deadline = last.sentAt + ttlMs - marginMs;
      // with 40 ms round trips, counting from the answer instead of the send would pass the deadline
      expect(a.actor.getSnapshot().context.lease?.validUntil).toBe(deadline);

      let committedAfterCut = false;
      let firstRefusal: number | undefined;
      for (let step = 0; step < 2000; step++) {
        await advance(1);
        const now = nodeClock.now();
        const snapshot = a.actor.getSnapshot();
        const allowed = canCommit(snapshot, now);
        if (allowed) committedAfterCut = true;
        else firstRefusal ??= now;
        if (now >= deadline) expect(allowed, `at ${now}, deadline ${deadline}`).toBe(false);
        if (now >= deadline + 1) expect(roleOf(snapshot), `at ${now}`).not.toBe('leader');
      }
      expect(committedAfterCut).toBe(true);
      expect(firstRefusal).toBeGreaterThan(cutAt);
      expect(firstRefusal).toBeLessThanOrEqual(deadline + rate);
      expect(answered.filter((call) => call.sentAt > cutAt)).toEqual([]);
      expect(a.role()).toBe('follower');
      expect(a.roles.map((entry) => entry.role)).toContain('demoting');
      expect(a.actor.getSnapshot().context.demoteReason).toBeNull();
    },
  );
});

describe('role machine: catch-up', () => {
  it('claims above the epoch floor reported by catchUp', async () => {
    const { advance, stored, startNode } = setUp();
    const calls: [string, string][] = [];
    const a = startNode('a', {
      hooks: {
        catchUp: async (db, intent) => {
          calls.push([db, intent]);
          return { epochFloor: 41 };
        },
      },
    });
    await advance(0);
    expect(calls).toEqual([['db', 'claim']]);
    expect(a.role()).toBe('leader');
    expect(stored().record.epoch).toBe(42);
    expect(a.actor.getSnapshot().context.lease?.epoch).toBe(42);
  });

  it('keeps the higher of the floor and the stored epoch', async () => {
    const { store, advance, stored, startNode } = setUp();
    await store.create(
      'db',
      encodeLeaseRecord({ holder: 'x', session: 'x', epoch: 50, ttlMs, released: true }),
    );
    startNode('a', { hooks: { catchUp: async () => ({ epochFloor: 41 }) } });
    await advance(0);
    expect(stored().record.epoch).toBe(51);
  });

  it('stays follower while catchUp fails, then claims once it succeeds', async () => {
    const { writes, advance, stored, startNode } = setUp();
    let calls = 0;
    const writesAtCall: number[] = [];
    const a = startNode('a', {
      hooks: {
        catchUp: async () => {
          calls += 1;
          writesAtCall.push(writes.length);
          if (calls <= 3) throw new Error(`catch-up failure ${calls}`);
          return {};
        },
      },
    });
    await advance(5 * pollIntervalMs);
    expect(calls).toBe(4);
    expect(writesAtCall).toEqual([0, 0, 0, 0]);
    const roles = a.roles.map((entry) => entry.role);
    const firstLeader = roles.indexOf('leader');
    expect(roles.slice(0, firstLeader).filter((role) => role === 'catching-up')).toHaveLength(4);
    for (let i = 0; i < firstLeader; i++) {
      if (roles[i] === 'catching-up' && i + 1 < firstLeader) {
        expect(['follower', 'candidate']).toContain(roles[i + 1]);
      }
    }
    expect(roles.slice(0, firstLeader).filter((role) => role === 'candidate')).toHaveLength(1);
    expect(a.role()).toBe('leader');
    expect(stored().record.epoch).toBe(1);
  });
});

describe('role machine: store unavailable', () => {
  it('a follower stays follower while the store fails, and claims once it is back', async () => {
    const { store, writes, advance, stored, startNode } = setUp();
    store.faults.failNext(1_000_000, 'a');
    const a = startNode('a');
    for (let step = 0; step < 25; step++) {
      await advance(200);
      expect(a.role()).toBe('follower');
    }
    expect(a.roles.map((entry) => entry.role)).toEqual(['bootstrapping', 'follower']);
    expect(a.actor.getSnapshot().context.leaseProblem).toMatch(
      /LEASE_STORE_UNAVAILABLE: injected failure of get db/,
    );
    expect(writes).toEqual([]);
    expect(store.peek('db')).toBeNull();

    store.faults.heal();
    await advance(pollIntervalMs);
    expect(a.role()).toBe('leader');
    expect(stored().record).toMatchObject({ holder: 'a', epoch: 1 });
    expect(a.actor.getSnapshot().context.leaseProblem).toBeNull();
  });

  it('a follower whose reads hang times them out, stays follower, and claims after healing', async () => {
    const { store, writes, advance, stored, startNode } = setUp();
    store.faults.cutOff('a', 'drop');
    const a = startNode('a');
    await advance(5 * ttlMs);
    expect(a.roles.map((entry) => entry.role)).toEqual(['bootstrapping', 'follower']);
    expect(a.actor.getSnapshot().context.leaseProblem).toMatch(
      new RegExp(`TIMEOUT: reading lease db did not finish within ${renewIntervalMs} ms`),
    );
    expect(writes).toEqual([]);

    store.faults.heal('a');
    await advance(renewIntervalMs + pollIntervalMs);
    expect(a.role()).toBe('leader');
    expect(stored().record.epoch).toBe(1);
  });
});
