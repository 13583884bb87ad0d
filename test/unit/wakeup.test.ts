import { describe, expect, it } from 'vitest';
import { SimClock } from '../../src/sim/clock.ts';
import { sleepUnlessAborted, Wakeup } from '../../src/wait.ts';

const drain = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Marks when `promise` settles, in simulated time. */
function settledAt(clock: SimClock, promise: Promise<void>): { at: number | undefined } {
  const seen: { at: number | undefined } = { at: undefined };
  void promise.then(() => {
    seen.at = clock.now();
  });
  return seen;
}

describe('Wakeup', () => {
  it('ends every wait in progress at wake, and leaves no timer or waiter behind', async () => {
    const clock = new SimClock();
    const wakeup = new Wakeup();
    const first = settledAt(clock, wakeup.wait(clock, 1000));
    const second = settledAt(clock, wakeup.wait(clock, 5000));
    await clock.runUntil(100, drain);
    expect(first.at).toBeUndefined();
    wakeup.wake();
    await drain();
    expect(first.at).toBe(100);
    expect(second.at).toBe(100);
    expect(wakeup.waiting).toBe(0);
    expect(clock.pendingTimers).toBe(0);
  });

  it('ends a wait at its timeout on the injected clock, removing the waiter', async () => {
    const clock = new SimClock();
    const wakeup = new Wakeup();
    const waited = settledAt(clock, wakeup.wait(clock, 250));
    await clock.runUntil(249, drain);
    expect(waited.at).toBeUndefined();
    await clock.runUntil(1000, drain);
    expect(waited.at).toBe(250);
    expect(wakeup.waiting).toBe(0);
  });

  it('a wait started after a wake waits for the next one', async () => {
    const clock = new SimClock();
    const wakeup = new Wakeup();
    wakeup.wake();
    const waited = settledAt(clock, wakeup.wait(clock, 300));
    await clock.runUntil(299, drain);
    expect(waited.at).toBeUndefined();
    wakeup.wake();
    await drain();
    expect(waited.at).toBe(299);
  });

  it('ends a wait when one of its abort signals fires, and at once for one already aborted', async () => {
    const clock = new SimClock();
    const wakeup = new Wakeup();
    const stop = new AbortController();
    const other = new AbortController();
    const waited = settledAt(clock, wakeup.wait(clock, 1000, other.signal, stop.signal));
    await clock.runUntil(40, drain);
    stop.abort();
    await drain();
    expect(waited.at).toBe(40);
    expect(wakeup.waiting).toBe(0);
    expect(clock.pendingTimers).toBe(0);

    const late = settledAt(clock, wakeup.wait(clock, 1000, stop.signal));
    await drain();
    expect(late.at).toBe(40);
    expect(wakeup.waiting).toBe(0);
  });
});

describe('sleepUnlessAborted', () => {
  it('sleeps for its time on the injected clock, or until aborted', async () => {
    const clock = new SimClock();
    const slept = settledAt(clock, sleepUnlessAborted(clock, 500));
    await clock.runUntil(499, drain);
    expect(slept.at).toBeUndefined();
    await clock.runUntil(600, drain);
    expect(slept.at).toBe(500);

    const stop = new AbortController();
    const stopped = settledAt(clock, sleepUnlessAborted(clock, 500, stop.signal));
    await clock.runUntil(650, drain);
    stop.abort();
    await drain();
    expect(stopped.at).toBe(650);
    expect(clock.pendingTimers).toBe(0);
  });
});
