import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LeaseTiming } from '../../src/machines/role.ts';
import type { SimCluster } from '../../src/sim/cluster.ts';
import {
  Crash,
  clusterCommands,
  coverage,
  driftHuntCommands,
  type Model,
  Tick,
} from './commands.ts';
import { modelRunParameters } from './parameters.ts';
import { runModel, SAFE_DRIFT as safeDrift, MODEL_TIMING as timing } from './run.ts';

const maxNodes = 4;

/** Node-level leases: every node holds up to a few hundred leaderships behind one record. */
const scenario = (lease: LeaseTiming, maxDrift = safeDrift, commands = clusterCommands) =>
  fc.asyncProperty(
    fc.scheduler(),
    fc.integer({ min: 2, max: maxNodes }),
    fc.constantFrom(1, 3, 40, 300),
    fc.commands(commands(maxNodes, lease.ttlMs), { maxCommands: 30, size: 'large' }),
    (s, nodes, dbs, commands) => runModel(s, nodes, dbs, commands, lease, maxDrift, 'node'),
  );

describe('node-level leases model (I1, I2, I5 and liveness)', () => {
  it('never lets two nodes commit a database, and every database led by a crashed node moves', async () => {
    const takeoversBefore = coverage.crashTakeovers;
    const runs = Number(process.env.HADB_MODEL_RUNS ?? 200);
    await fc.assert(scenario(timing), {
      ...modelRunParameters(),
      numRuns: Math.max(1, Math.round(runs / 5)),
    });
    console.log(`node-lease model coverage: ${JSON.stringify(coverage)}`);
    // Random runs pick 1 to 300 databases; the many-database crash is pinned down below.
    expect(coverage.crashTakeovers - takeoversBefore).toBeGreaterThan(0);
  }, 600_000);

  it('moves every database of the busiest node when it crashes, each to exactly one new leader', async () => {
    const dbs = 300;
    const takeoversBefore = coverage.crashTakeovers;
    const crashBusiest: fc.AsyncCommand<Model, SimCluster> = {
      check: () => true,
      run: (model, cluster) => {
        const led = cluster.nodes.map(
          (_, i) => cluster.dbs.filter((db) => cluster.committers(db).includes(`n${i}`)).length,
        );
        return new Crash(led.indexOf(Math.max(...led))).run(model, cluster);
      },
      toString: () => 'CrashBusiest',
    };
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), (s) =>
        runModel(s, 3, dbs, [new Tick(3 * timing.ttlMs), crashBusiest], timing, safeDrift, 'node'),
      ),
      { numRuns: 1, seed: 1 },
    );
    // The busiest of three nodes leads at least a third; Crash checked each of them moved.
    expect(coverage.crashTakeovers - takeoversBefore).toBeGreaterThanOrEqual(dbs / 3);
  }, 120_000);

  it('finds the split brain when clocks drift more than the margin allows (the model has teeth)', async () => {
    const unsafe = { ...timing, marginMs: 1 };
    const result = await fc.check(scenario(unsafe, 0.2, driftHuntCommands), {
      numRuns: 1000,
      seed: 42,
      endOnFailure: true,
    });
    expect(result.failed, 'a margin of 0 under clock drift must be caught').toBe(true);
    expect((result.errorInstance as Error).message).toMatch(/I1 violated/);
  }, 600_000);
});
