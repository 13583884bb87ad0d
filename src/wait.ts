import type { Clock, TimerId } from './clock.ts';

/**
 * Something callers wait for (a role change, a shipped change, a free writer): {@link wake} ends
 * every wait in progress at once, and each wait also ends at its own timeout on the injected clock
 * (simulated in tests) or when one of its abort signals fires. Waits never reject: the caller looks
 * again at what it waits for.
 */
export class Wakeup {
  readonly #waiters = new Set<() => void>();

  /** Ends every wait in progress; a wait that starts later waits for the next call. */
  wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }

  /** Waits in progress. */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** Resolves on the next {@link wake}, after `timeoutMs` of `clock`, or on an abort. */
  wait(clock: Clock, timeoutMs: number, ...aborts: AbortSignal[]): Promise<void> {
    return waitOrTimeout(clock, timeoutMs, aborts, this.#waiters);
  }
}

/** Resolves after `ms` of `clock`, or at once when one of `aborts` fires (or already has). */
export function sleepUnlessAborted(
  clock: Clock,
  ms: number,
  ...aborts: AbortSignal[]
): Promise<void> {
  return waitOrTimeout(clock, ms, aborts, undefined);
}

function waitOrTimeout(
  clock: Clock,
  timeoutMs: number,
  aborts: AbortSignal[],
  waiters: Set<() => void> | undefined,
): Promise<void> {
  if (aborts.some((signal) => signal.aborted)) return Promise.resolve();
  return new Promise((resolve) => {
    let timer: TimerId | undefined;
    // Whatever ends the wait removes the timer, the listeners and the waiter: none is left behind.
    const done = () => {
      if (timer !== undefined) clock.clearTimeout(timer);
      waiters?.delete(done);
      for (const signal of aborts) signal.removeEventListener('abort', done);
      resolve();
    };
    timer = clock.setTimeout(done, timeoutMs);
    waiters?.add(done);
    for (const signal of aborts) signal.addEventListener('abort', done, { once: true });
  });
}
