import type fc from 'fast-check';

/**
 * Runs: HADB_MODEL_RUNS (default 200), within HADB_MODEL_TIME_LIMIT_MS of search per property
 * (default 25 s, 0 for none): a scenario's cost varies tenfold with its seed, and the suite must
 * stay bounded on a 2-core CI; runs already done still count, and a failure still fails. A
 * failure prints its seed and path; replay it exactly with
 * HADB_MODEL_SEED=<seed> HADB_MODEL_PATH=<path> npm run test:model
 */
export function modelRunParameters<T>(): fc.Parameters<T> {
  const seed = process.env.HADB_MODEL_SEED;
  const path = process.env.HADB_MODEL_PATH;
  const numRuns = Number(process.env.HADB_MODEL_RUNS ?? 200);
  const base: fc.Parameters<T> = { numRuns, verbose: 1 };
  if (seed !== undefined) {
    return { ...base, seed: Number(seed), ...(path ? { path } : {}), endOnFailure: true };
  }
  const timeLimitMs = Number(process.env.HADB_MODEL_TIME_LIMIT_MS ?? 25_000);
  if (timeLimitMs <= 0) return base;
  return { ...base, interruptAfterTimeLimit: timeLimitMs, markInterruptAsFailure: false };
}
