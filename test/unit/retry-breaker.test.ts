import { describe, expect, it } from 'vitest';
import {
  BreakerOpenError,
  backoffDelay,
  CircuitBreaker,
  type RetryCallOptions,
  retryCall,
} from '../../src/adapters/retry.ts';
import type { Clock } from '../../src/clock.ts';
import { InvalidArgumentError } from '../../src/errors.ts';

class Transient extends Error {}
class Answered extends Error {}

/** A clock whose timers fire at once, moving time forward by their delay, and remember it. */
class SkippingClock implements Clock {
  time = 0;
  readonly sleeps: number[] = [];
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    this.sleeps.push(ms);
    this.time += ms;
    queueMicrotask(fn);
    return undefined;
  }
  clearTimeout(): void {}
}

/** A call that fails with the given errors in turn, then returns its attempt number. */
function scripted(failures: Error[]) {
  const calls: number[] = [];
  const call = async (attempt: number) => {
    calls.push(attempt);
    const failure = failures[calls.length - 1];
    if (failure) throw failure;
    return attempt;
  };
  return { call, calls };
}

function options(
  clock: SkippingClock,
  overrides: Partial<RetryCallOptions> = {},
): RetryCallOptions {
  return {
    isTransient: (error) => error instanceof Transient,
    breaker: new CircuitBreaker({ clock, failureThreshold: 100 }),
    clock,
    random: () => 0.5,
    maxAttempts: 4,
    baseDelayMs: 100,
    maxDelayMs: 1000,
    ...overrides,
  };
}

describe('backoffDelay', () => {
  it('is uniform below a cap that doubles per attempt up to the maximum (full jitter)', () => {
    const caps = [1, 2, 3, 4, 5, 6].map((attempt) => backoffDelay(attempt, 100, 1000, () => 1));
    expect(caps).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(3, 100, 1000, () => 0)).toBe(0);
    expect(backoffDelay(3, 100, 1000, () => 0.25)).toBe(100);
  });
});

describe('retryCall', () => {
  it('retries transient failures with jittered backoff until the call succeeds', async () => {
    const clock = new SkippingClock();
    const { call, calls } = scripted([new Transient(), new Transient()]);
    const retried: number[] = [];
    const result = await retryCall(
      call,
      options(clock, { onRetry: (_error, attempt) => retried.push(attempt) }),
    );
    expect(result).toBe(3);
    expect(calls).toEqual([1, 2, 3]);
    expect(retried).toEqual([1, 2]);
    // random() = 0.5 of caps 100 and 200.
    expect(clock.sleeps).toEqual([50, 100]);
  });

  it('returns an error that is not transient at once, without retrying', async () => {
    const clock = new SkippingClock();
    const answered = new Answered('412');
    const { call, calls } = scripted([answered]);
    await expect(retryCall(call, options(clock))).rejects.toBe(answered);
    expect(calls).toEqual([1]);
    expect(clock.sleeps).toEqual([]);
  });

  it('gives up after maxAttempts with the last failure', async () => {
    const clock = new SkippingClock();
    const failures = [new Transient('1'), new Transient('2'), new Transient('3')];
    const { call, calls } = scripted(failures);
    await expect(retryCall(call, options(clock, { maxAttempts: 3 }))).rejects.toBe(failures[2]);
    expect(calls).toEqual([1, 2, 3]);
    expect(clock.sleeps).toHaveLength(2);
  });

  it('stops retrying once the breaker opens, chaining the last failure', async () => {
    const clock = new SkippingClock();
    const breaker = new CircuitBreaker({ clock, failureThreshold: 2, coolDownMs: 10_000 });
    const failures = [new Transient('1'), new Transient('2'), new Transient('3')];
    const { call, calls } = scripted(failures);
    const error = await retryCall(call, options(clock, { breaker, maxAttempts: 5 })).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(BreakerOpenError);
    expect((error as BreakerOpenError).cause).toBe(failures[1]);
    expect(calls).toEqual([1, 2]);
  });

  it('rejects nonsensical options', async () => {
    const clock = new SkippingClock();
    const { call } = scripted([]);
    await expect(retryCall(call, options(clock, { maxAttempts: 0 }))).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    expect(() => new CircuitBreaker({ coolDownMs: -1 })).toThrow(InvalidArgumentError);
  });
});

describe('CircuitBreaker', () => {
  function breakerAt(clock: SkippingClock) {
    return new CircuitBreaker({ clock, failureThreshold: 3, coolDownMs: 1000 });
  }

  it('opens after the threshold of consecutive failures and fails calls fast', async () => {
    const clock = new SkippingClock();
    const breaker = breakerAt(clock);
    for (let i = 0; i < 2; i++) {
      breaker.admit();
      breaker.failed();
    }
    expect(breaker.state).toBe('closed');
    breaker.admit();
    breaker.failed();
    expect(breaker.state).toBe('open');
    const { call, calls } = scripted([]);
    const error = await retryCall(call, options(clock, { breaker })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BreakerOpenError);
    expect((error as BreakerOpenError).retryInMs).toBe(1000);
    expect(calls).toEqual([]);
  });

  it('counts only consecutive failures: an answer in between resets the count', () => {
    const clock = new SkippingClock();
    const breaker = breakerAt(clock);
    for (const outcome of ['failed', 'failed', 'succeeded', 'failed', 'failed'] as const) {
      breaker.admit();
      breaker[outcome]();
    }
    expect(breaker.state).toBe('closed');
  });

  it('after the cool-down lets exactly one probe through; success closes it', () => {
    const clock = new SkippingClock();
    const breaker = breakerAt(clock);
    for (let i = 0; i < 3; i++) breaker.failed();
    clock.time += 999;
    expect(() => breaker.admit()).toThrow(BreakerOpenError);
    clock.time += 1;
    expect(breaker.state).toBe('half-open');
    breaker.admit();
    // The probe is in flight: everyone else still fails fast.
    expect(() => breaker.admit()).toThrow(BreakerOpenError);
    breaker.succeeded();
    expect(breaker.state).toBe('closed');
    breaker.admit();
    breaker.admit();
  });

  it('a failed probe opens it for another whole cool-down', () => {
    const clock = new SkippingClock();
    const breaker = breakerAt(clock);
    for (let i = 0; i < 3; i++) breaker.failed();
    clock.time += 1000;
    breaker.admit();
    breaker.failed();
    expect(breaker.state).toBe('open');
    clock.time += 999;
    expect(() => breaker.admit()).toThrow(BreakerOpenError);
    clock.time += 1;
    breaker.admit();
    expect(breaker.state).toBe('half-open');
  });

  it('turns an outage into a bounded number of calls, not a retry storm', async () => {
    const clock = new SkippingClock();
    const breaker = new CircuitBreaker({ clock, failureThreshold: 5, coolDownMs: 5000 });
    let attempts = 0;
    const down = async () => {
      attempts++;
      throw new Transient('connection refused');
    };
    // 100 callers, one after another, for 2 s of simulated time: only the first ones reach it.
    for (let caller = 0; caller < 100; caller++) {
      await retryCall(down, options(clock, { breaker })).catch(() => undefined);
      clock.time += 20;
    }
    expect(attempts).toBe(5);
  });
});
