import { describe, expect, it } from 'vitest';
import { createDatabaseActor } from '../../src/actors/database.ts';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { InvalidArgumentError } from '../../src/errors.ts';
import { roleOf } from '../../src/machines/role.ts';
import { SimClock } from '../../src/sim/clock.ts';
import { decodeLeaseRecord } from '../../src/wire/lease-record.ts';
import { unitTiming } from '../support/role-timing.ts';

const drain = () => new Promise<void>((resolve) => setImmediate(resolve));
const timing = unitTiming;

function world() {
  const clock = new SimClock();
  const store = new MemoryLeaseStore({ clock });
  const start = (node: string, hooks = {}) => {
    const actor = createDatabaseActor({
      db: 'db',
      node,
      session: `${node}-s`,
      clock,
      leases: store.forNode(node),
      timing,
      hooks,
    });
    actor.start();
    return actor;
  };
  const holder = () => {
    const entry = store.peek('db');
    return entry ? decodeLeaseRecord(entry.value) : null;
  };
  return { clock, store, start, holder };
}

describe('handing leadership over', () => {
  it('a handoff lets another node take over instead of reclaiming at once', async () => {
    const { clock, start, holder } = world();
    const a = start('a');
    await clock.runUntil(10, drain);
    const b = start('b');
    await clock.runUntil(600, drain);
    a.send({ type: 'handoff' });
    await clock.runUntil(600 + timing.pollIntervalMs + 1, drain);
    expect(holder()).toMatchObject({ holder: 'b', epoch: 2, released: false });
    expect(roleOf(b.getSnapshot())).toBe('leader');
    expect(roleOf(a.getSnapshot())).toBe('follower');
  });

  it('a node that handed off alone takes the lease back only after ttl + margin', async () => {
    const { clock, start, holder } = world();
    const a = start('a');
    await clock.runUntil(300, drain);
    a.send({ type: 'handoff' });
    await clock.runUntil(300 + timing.ttlMs, drain);
    expect(roleOf(a.getSnapshot())).toBe('follower');
    await clock.runUntil(300 + timing.ttlMs + timing.marginMs + timing.pollIntervalMs + 1, drain);
    expect(roleOf(a.getSnapshot())).toBe('leader');
    expect(holder()).toMatchObject({ holder: 'a', epoch: 2 });
  });

  it('a graceful stop during an in-flight renewal still releases the lease', async () => {
    const { clock, store, start, holder } = world();
    store.faults.setLatency(20);
    const a = start('a');
    await clock.runUntil(340, drain);
    a.send({ type: 'stop' });
    await clock.runUntil(1000, drain);
    expect(a.getSnapshot().status).toBe('done');
    expect(holder()).toMatchObject({ holder: 'a', released: true });
  });

  it('a failing catch-up is retried a poll later, not in a hot loop', async () => {
    const { clock, start } = world();
    let calls = 0;
    const a = start('a', {
      catchUp: async () => {
        calls += 1;
        if (calls > 50) await new Promise<never>(() => {});
        throw new Error('catch-up failed');
      },
    });
    await clock.runUntil(1000, drain);
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(calls).toBeLessThanOrEqual(1000 / timing.pollIntervalMs + 1);
    expect(roleOf(a.getSnapshot())).not.toBe('leader');
  });

  it('refuses a timing under which the lease could never be renewed or read', () => {
    const { clock, store } = world();
    const make = (overrides: object) => () =>
      createDatabaseActor({
        db: 'db',
        node: 'a',
        session: 's',
        clock,
        leases: store,
        timing: { ...timing, ...overrides },
      });
    expect(make({ ttlMs: 600_001 })).toThrow(InvalidArgumentError);
    expect(make({ marginMs: 500 })).toThrow(/marginMs/);
    expect(make({ renewIntervalMs: 900 })).toThrow(/renewIntervalMs/);
    expect(make({ pollIntervalMs: 0 })).toThrow(/pollIntervalMs/);
  });
});
