import { describe, expect, it } from 'vitest';
import { SimulatedClock } from 'xstate';
import { createDatabaseActor } from '../../src/actors/database.ts';
import { createMemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { type Clock, systemClock, withTimeout } from '../../src/clock.ts';
import { TimeoutError } from '../../src/errors.ts';
import { roleOf } from '../../src/machines/role.ts';
import { DriftingClock, SimClock } from '../../src/sim/clock.ts';

const drain = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('Clock', () => {
  it("is satisfied by XState's SimulatedClock, which can drive a database actor", async () => {
    const clock: Clock = new SimulatedClock();
    const simulated = clock as SimulatedClock;
    const actor = createDatabaseActor({
      db: 'db',
      node: 'n1',
      session: 'n1#1',
      clock,
      leases: createMemoryLeaseStore(),
    });
    actor.start();
    for (let i = 0; i < 5; i++) await drain();
    expect(roleOf(actor.getSnapshot())).toBe('leader');
    const before = actor.getSnapshot().context.lease?.validUntil ?? 0;
    simulated.increment(1000);
    for (let i = 0; i < 5; i++) await drain();
    expect(actor.getSnapshot().context.lease?.validUntil).toBeGreaterThan(before);
    actor.stop();
  });

  it('systemClock is monotonic milliseconds', () => {
    const a = systemClock.now();
    const b = systemClock.now();
    expect(b).toBeGreaterThanOrEqual(a);
  });

  it('withTimeout rejects with TimeoutError after the given time on the given clock', async () => {
    const clock = new SimClock();
    const never = new Promise<never>(() => {});
    const result = withTimeout(clock, never, 100, 'the call').catch((error: unknown) => error);
    await clock.runUntil(99, drain);
    let settled = false;
    void result.then(() => {
      settled = true;
    });
    await drain();
    expect(settled).toBe(false);
    await clock.runUntil(100, drain);
    const error = await result;
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).code).toBe('TIMEOUT');
  });

  it('withTimeout passes through a value that arrives in time and clears its timer', async () => {
    const clock = new SimClock();
    await expect(withTimeout(clock, Promise.resolve(7), 100, 'x')).resolves.toBe(7);
    expect(clock.pendingTimers).toBe(0);
  });
});

describe('SimClock', () => {
  it('fires timers in deadline order, each at its exact deadline', async () => {
    const clock = new SimClock();
    const fired: Array<[string, number]> = [];
    clock.setTimeout(() => fired.push(['b', clock.now()]), 30);
    clock.setTimeout(() => fired.push(['a', clock.now()]), 10);
    clock.setTimeout(() => {
      fired.push(['c', clock.now()]);
      clock.setTimeout(() => fired.push(['d', clock.now()]), 5);
    }, 20);
    const cancelled = clock.setTimeout(() => fired.push(['x', clock.now()]), 15);
    clock.clearTimeout(cancelled);
    await clock.runUntil(100, drain);
    expect(fired).toEqual([
      ['a', 10],
      ['c', 20],
      ['d', 25],
      ['b', 30],
    ]);
    expect(clock.now()).toBe(100);
  });
});

describe('DriftingClock', () => {
  it('runs at its own rate over shared time, and converts timer delays', async () => {
    const base = new SimClock();
    const fast = new DriftingClock(base, 500);
    fast.setRate(1.05);
    await base.runUntil(1000, drain);
    expect(fast.now()).toBeCloseTo(500 + 1050);
    let firedAt = -1;
    fast.setTimeout(() => {
      firedAt = base.now();
    }, 105);
    await base.runUntil(2000, drain);
    expect(firedAt).toBeCloseTo(1100);
  });
});
