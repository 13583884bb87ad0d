import type { LeaseTiming } from '../../src/machines/role.ts';

/** Lease timing of the role machine's unit tests: short, round numbers that are easy to step through. */
export const unitTiming: LeaseTiming = {
  ttlMs: 1000,
  renewIntervalMs: 250,
  retryIntervalMs: 100,
  pollIntervalMs: 200,
  marginMs: 100,
};
