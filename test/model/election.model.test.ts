import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LeaseTiming } from '../../src/machines/role.ts';
import { clusterCommands, coverage, driftHuntCommands } from './commands.ts';
import { modelRunParameters } from './parameters.ts';
import { runModel, SAFE_DRIFT as safeDrift, MODEL_TIMING as timing } from './run.ts';

const maxNodes = 5;

const scenario = (lease: LeaseTiming, maxDrift = safeDrift, commands = clusterCommands) =>
  fc.asyncProperty(
    fc.scheduler(),
    fc.integer({ min: 2, max: maxNodes }),
    fc.integer({ min: 1, max: 5 }),
    fc.commands(commands(maxNodes, lease.ttlMs), { maxCommands: 60, size: 'large' }),
    (s, nodes, dbs, commands) => runModel(s, nodes, dbs, commands, lease, maxDrift),
  );

describe('leader election model (I1, I2, I5 and liveness)', () => {
  it('never lets two nodes commit, keeps epochs monotonic, and recovers a leader', async () => {
    await fc.assert(scenario(timing), modelRunParameters());
    console.log(`model coverage: ${JSON.stringify(coverage)}`);
    expect(coverage.crashTakeovers).toBeGreaterThan(0);
    expect(coverage.healRecoveries).toBeGreaterThan(0);
  }, 600_000);

  it('holds under the same targeted drift-and-partition hunt when drift stays within the margin', async () => {
    await fc.assert(scenario(timing, safeDrift, driftHuntCommands), {
      ...modelRunParameters(),
      numRuns: 20,
    });
  }, 600_000);

  it('finds the split brain when clocks drift more than the margin allows (the model has teeth)', async () => {
    // 20% drift against a 1 ms margin: a slow leader outlives its lease on a fast follower's clock.
    const unsafe = { ...timing, marginMs: 1 };
    const drift = 0.2;
    const result = await fc.check(scenario(unsafe, drift, driftHuntCommands), {
      numRuns: 2000,
      seed: 42,
      endOnFailure: true,
    });
    expect(result.failed, 'a margin of 0 under clock drift must be caught').toBe(true);
    const message = (result.errorInstance as Error).message;
    expect(message).toMatch(/I1 violated/);
    // The printed seed and path replay the same failure exactly.
    const replay = await fc.check(scenario(unsafe, drift, driftHuntCommands), {
      seed: result.seed,
      path: result.counterexamplePath ?? '',
      endOnFailure: true,
    });
    expect(replay.failed).toBe(true);
    expect((replay.errorInstance as Error).message).toBe(message);
  }, 600_000);
});
