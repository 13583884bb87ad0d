/** What both contract suites expect of a client whose backend is down (a support module). */
import { expect } from 'vitest';

/** A call on a down backend must reject, with the backend's "unavailable" error, within this. */
export const DOWN_BOUND_MS = 10_000;

export async function expectUnavailable(
  call: Promise<unknown>,
  unavailable: abstract new (...args: never[]) => Error,
  what: string,
): Promise<void> {
  const outcome = await bounded(
    call.then(
      (value) => ({ settled: 'resolved' as const, value }),
      (error: unknown) => ({ settled: 'rejected' as const, error }),
    ),
    what,
  );
  expect(outcome.settled).toBe('rejected');
  if (outcome.settled === 'rejected') expect(outcome.error).toBeInstanceOf(unavailable);
}

/** Rejects when `promise` has not settled within the down bound. */
export async function bounded<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not settle within ${DOWN_BOUND_MS} ms`)),
      DOWN_BOUND_MS,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
