import { type Clock, sleep, systemClock } from '../clock.ts';
import { BreakerOpenError, InvalidArgumentError } from '../errors.ts';

export { BreakerOpenError };

/**
 * Retries with exponential backoff and full jitter, behind a circuit breaker, for calls to a
 * remote service. Generic: the caller says which errors are transient (an outage, throttling)
 * and maps what comes out to its own error classes.
 */

export interface RetryOptions {
  /** Attempts in all, the first one included (default 4). */
  maxAttempts?: number;
  /** The backoff cap before the first retry; it doubles on each retry (default 50 ms). */
  baseDelayMs?: number;
  /** The backoff cap never grows past this (default 2000 ms). */
  maxDelayMs?: number;
}

export interface BreakerOptions {
  /** Consecutive transient failures that open the breaker (default 5). */
  failureThreshold?: number;
  /** How long an open breaker fails calls fast before it lets one probe through (default 5000 ms). */
  coolDownMs?: number;
  clock?: Clock;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * Counts consecutive transient failures. At the threshold it opens: calls fail fast for the
 * cool-down, so an outage is not met by a storm of retries. Then it lets exactly one probe
 * through (half-open): success closes it, failure opens it for another cool-down.
 */
export class CircuitBreaker {
  readonly #threshold: number;
  readonly #coolDownMs: number;
  readonly #clock: Clock;
  #failures = 0;
  #openedAt: number | undefined;
  #probeInFlight = false;

  constructor(options: BreakerOptions = {}) {
    this.#threshold = positiveInteger('failureThreshold', options.failureThreshold ?? 5);
    this.#coolDownMs = nonNegative('coolDownMs', options.coolDownMs ?? 5000);
    this.#clock = options.clock ?? systemClock;
  }

  get state(): BreakerState {
    if (this.#openedAt === undefined) return 'closed';
    return this.#probeInFlight || this.#remainingCoolDown() <= 0 ? 'half-open' : 'open';
  }

  /**
   * Asks to make one call: returns when it may go ahead, throws {@link BreakerOpenError} when it
   * must fail fast. A call let through must be followed by {@link succeeded} or {@link failed}.
   */
  admit(cause?: unknown): void {
    if (this.#openedAt === undefined) return;
    const remaining = this.#remainingCoolDown();
    if (remaining > 0 || this.#probeInFlight) {
      throw new BreakerOpenError(Math.max(0, remaining), cause === undefined ? {} : { cause });
    }
    this.#probeInFlight = true;
  }

  /** The service answered (even with an error that is not an outage). */
  succeeded(): void {
    this.#failures = 0;
    this.#openedAt = undefined;
    this.#probeInFlight = false;
  }

  /** A transient failure: the service did not answer, was overloaded or failed. */
  failed(): void {
    this.#failures++;
    if (this.#probeInFlight || this.#failures >= this.#threshold) {
      this.#openedAt = this.#clock.now();
    }
    this.#probeInFlight = false;
  }

  #remainingCoolDown(): number {
    return this.#openedAt === undefined ? 0 : this.#openedAt + this.#coolDownMs - this.#clock.now();
  }
}

export interface RetryCallOptions extends RetryOptions {
  /** True for failures worth retrying; anything else is returned to the caller at once. */
  isTransient: (error: unknown) => boolean;
  breaker: CircuitBreaker;
  clock?: Clock;
  /** In [0, 1): the jitter. */
  random?: () => number;
  /** Called before each retry, with the failure that caused it. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
}

/**
 * Calls `call` until it succeeds, fails with an error that is not transient, runs out of
 * attempts or meets an open breaker. Rejects with the last error of `call`, or with
 * {@link BreakerOpenError} (whose `cause` is the last error, if any) when the breaker refused.
 */
export async function retryCall<T>(
  call: (attempt: number) => Promise<T>,
  options: RetryCallOptions,
): Promise<T> {
  const maxAttempts = positiveInteger('maxAttempts', options.maxAttempts ?? 4);
  const baseDelayMs = nonNegative('baseDelayMs', options.baseDelayMs ?? 50);
  const maxDelayMs = nonNegative('maxDelayMs', options.maxDelayMs ?? 2000);
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const { breaker, isTransient } = options;

  let lastError: unknown;
  for (let attempt = 1; ; attempt++) {
    breaker.admit(lastError);
    try {
      const result = await call(attempt);
      breaker.succeeded();
      return result;
    } catch (error) {
      if (!isTransient(error)) {
        breaker.succeeded();
        throw error;
      }
      breaker.failed();
      if (attempt >= maxAttempts) throw error;
      lastError = error;
      const delayMs = backoffDelay(attempt, baseDelayMs, maxDelayMs, random);
      options.onRetry?.(error, attempt, delayMs);
      await sleep(clock, delayMs);
    }
  }
}

/** Full jitter: uniform in [0, min(max, base · 2^(attempt-1))), which spreads retrying clients. */
export function backoffDelay(
  attempt: number,
  baseDelayMs: number,
  maxDelayMs: number,
  random: () => number,
): number {
  return random() * doublingDelay(attempt, baseDelayMs, maxDelayMs);
}

/**
 * The wait before retry `attempt` (1-based) without jitter: `base` doubled on each retry, never
 * past `max`. The same sequence as `delay = Math.min(delay * 2, max)` starting at `base`.
 */
export function doublingDelay(attempt: number, baseDelayMs: number, maxDelayMs: number): number {
  return Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`${name} must be a positive integer, got ${value}`);
  }
  return value;
}

function nonNegative(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(`${name} must be a non-negative number, got ${value}`);
  }
  return value;
}
