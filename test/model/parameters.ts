import type fc from 'fast-check';

/**
 * Runs: HADB_MODEL_RUNS (default 200). A failure prints its seed and path; replay it exactly with
 * HADB_MODEL_SEED=<seed> HADB_MODEL_PATH=<path> npm run test:model
 */
export function modelRunParameters<T>(): fc.Parameters<T> {
  const seed = process.env.HADB_MODEL_SEED;
  const path = process.env.HADB_MODEL_PATH;
  const numRuns = Number(process.env.HADB_MODEL_RUNS ?? 200);
  const base: fc.Parameters<T> = { numRuns, verbose: 1 };
  if (seed === undefined) return base;
  return { ...base, seed: Number(seed), ...(path ? { path } : {}), endOnFailure: true };
}
