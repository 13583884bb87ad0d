import { describe, expect, it } from 'vitest';
import { createDatabaseActor } from '../../src/actors/database.ts';
import { transitionOf } from '../../src/actors/transitions.ts';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import type { Transition } from '../../src/api-types.ts';
import { CatchUpFailedError, FencedError } from '../../src/errors.ts';
import { canCommit, type RoleSnapshot, roleOf } from '../../src/machines/role.ts';
import { startsLeading } from '../../src/machines/selectors.ts';
import { SimClock } from '../../src/sim/clock.ts';
import { decodeLeaseRecord } from '../../src/wire/lease-record.ts';
import { unitTiming } from '../support/role-timing.ts';

const timing = unitTiming;
const drain = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A node whose `startLeading` is settled by the test. */
function setUp() {
  const clock = new SimClock();
  const released: number[] = [];
  const store = new MemoryLeaseStore({
    clock,
    random: () => 0,
    onWrite: (write) => {
      const record = decodeLeaseRecord(write.value);
      if (record.released) released.push(record.epoch);
    },
  });
  const started: { epoch: number; resolve: () => void; reject: (error: unknown) => void }[] = [];
  const actor = createDatabaseActor({
    db: 'db',
    node: 'a',
    session: 'a-session',
    clock,
    leases: store.forNode('a'),
    timing,
    hooks: {
      startLeading: (_db, epoch) =>
        new Promise<void>((resolve, reject) => started.push({ epoch, resolve, reject })),
    },
  });
  const transitions: Transition[] = [];
  let previous: RoleSnapshot | undefined;
  actor.subscribe((snapshot) => {
    const transition = transitionOf('db', 'a', previous, snapshot, 0);
    if (transition) transitions.push(transition);
    previous = snapshot;
  });
  actor.start();
  const advance = (ms: number) => clock.runUntil(clock.now() + ms, drain);
  const stored = () => {
    const entry = store.peek('db');
    return entry ? decodeLeaseRecord(entry.value) : null;
  };
  return { clock, actor, started, transitions, advance, stored, released };
}

describe('role machine: a new leader commits only once its files are open', () => {
  it('is leader but may not commit until startLeading resolves', async () => {
    const { clock, actor, started, advance } = setUp();
    await advance(0);
    expect(roleOf(actor.getSnapshot())).toBe('leader');
    expect(started.map((start) => start.epoch)).toEqual([1]);
    expect(startsLeading(actor.getSnapshot())).toBe(true);
    expect(canCommit(actor.getSnapshot(), clock.now())).toBe(false);
    // Renewals go on while the files open (many takeovers take turns).
    await advance(600);
    expect(roleOf(actor.getSnapshot())).toBe('leader');
    expect(canCommit(actor.getSnapshot(), clock.now())).toBe(false);

    started[0]?.resolve();
    await advance(0);
    expect(startsLeading(actor.getSnapshot())).toBe(false);
    expect(canCommit(actor.getSnapshot(), clock.now())).toBe(true);
  });

  it('fenced while starting: steps down as on a fenced event, without releasing the lease', async () => {
    const { started, transitions, advance, released } = setUp();
    await advance(0);
    started[0]?.reject(new FencedError(3, 'a newer epoch is in storage'));
    await advance(0);
    const steps = transitions.map((t) => `${t.from}->${t.to} ${t.reason ?? ''}`.trim());
    expect(steps.slice(steps.indexOf('leader->demoting lost'))).toContain(
      'demoting->follower lost',
    );
    expect(released).toEqual([]);
  });

  it('behind storage while starting: hands the lease back', async () => {
    const { actor, started, transitions, advance, stored } = setUp();
    await advance(0);
    const behind = new CatchUpFailedError('db', 4, 'DATABASE_DIVERGED', { cause: new Error('x') });
    started[0]?.reject(behind);
    await advance(0);
    expect(transitions.map((t) => `${t.from}->${t.to} ${t.reason ?? ''}`.trim())).toContain(
      'leader->demoting handoff',
    );
    expect(roleOf(actor.getSnapshot())).not.toBe('leader');
    expect(stored()).toMatchObject({ holder: 'a', epoch: 1, released: true });
  });
});
