import { describe, expect, it } from 'vitest';
import { RequestPacer, urgently } from '../../src/adapters/pacing.ts';
import type { Clock } from '../../src/clock.ts';

/** Time stands still unless the test moves it: only the token bucket could let requests go. */
const frozenClock: Clock = {
  now: () => 0,
  setTimeout: () => 0,
  clearTimeout: () => {},
};

/** A pacer with one token and a clock that never moves: after one request, only urgent ones start. */
function oneTokenPacer(): RequestPacer {
  return new RequestPacer({ ratePerSecond: 10, burst: 1, maxConcurrent: 100, clock: frozenClock });
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

describe('urgent requests (a takeover waits on them)', () => {
  it('skip the rate limit once the burst is spent, while ordinary ones keep waiting for tokens', async () => {
    const pacer = oneTokenPacer();
    const started: string[] = [];
    const ordinary = ['o1', 'o2', 'o3'].map((name) => pacer.run(async () => started.push(name)));
    await settle();
    expect(started).toEqual(['o1']);
    const urgent = ['u1', 'u2', 'u3'].map((name) =>
      urgently(() => pacer.run(async () => started.push(name))),
    );
    await Promise.all(urgent);
    expect(started).toEqual(['o1', 'u1', 'u2', 'u3']);
    // The clock never moved: the ordinary ones still wait for their tokens.
    expect(pacer.queued).toBe(2);
    expect(started).not.toContain('o2');
    void ordinary;
  });

  it('respect the cap on requests in flight, and go before ordinary ones waiting for a slot', async () => {
    const pacer = new RequestPacer({ maxConcurrent: 2, ratePerSecond: Infinity });
    const releases: (() => void)[] = [];
    const order: string[] = [];
    const hold = (name: string) => () =>
      new Promise<void>((resolve) => {
        order.push(name);
        releases.push(resolve);
      });
    const running = [pacer.run(hold('o1')), pacer.run(hold('o2'))];
    const waitingOrdinary = pacer.run(hold('o3'));
    const waitingUrgent = urgently(() => pacer.run(hold('u1')));
    await settle();
    expect(order).toEqual(['o1', 'o2']);
    expect(pacer.inFlight).toBe(2);
    expect(pacer.queued).toBe(2);
    releases[0]?.();
    await settle();
    // The freed slot goes to the urgent request, though the ordinary one came first.
    expect(order).toEqual(['o1', 'o2', 'u1']);
    expect(pacer.inFlight).toBe(2);
    for (const release of releases.slice(1)) release();
    await settle();
    expect(order).toEqual(['o1', 'o2', 'u1', 'o3']);
    for (const release of releases) release();
    await Promise.all([...running, waitingOrdinary, waitingUrgent]);
    expect(pacer.inFlight).toBe(0);
  });

  it('counts only requests started synchronously inside urgently()', async () => {
    const pacer = oneTokenPacer();
    const started: string[] = [];
    await pacer.run(async () => started.push('first'));
    // Started after an await inside urgently(): an ordinary request, which waits for a token.
    const late = urgently(async () => {
      await Promise.resolve();
      return pacer.run(async () => started.push('late'));
    });
    await settle();
    expect(started).toEqual(['first']);
    expect(pacer.queued).toBe(1);
    void late;
  });
});
