import fc from 'fast-check';
import { expect } from 'vitest';
import type { LeaseTiming } from '../../src/machines/role.ts';
import { SimCluster } from '../../src/sim/cluster.ts';
import { coverage, type Model } from './commands.ts';

/** Short leases so a run covers many of them; the margin tolerates ±5% clock-rate error. */
export const MODEL_TIMING: LeaseTiming = {
  ttlMs: 1000,
  renewIntervalMs: 250,
  retryIntervalMs: 100,
  pollIntervalMs: 200,
  marginMs: 100,
};
export const SAFE_DRIFT = 0.05;

function schedulerDrain(s: fc.Scheduler): () => Promise<void> {
  return async () => {
    do {
      await s.waitIdle();
      await new Promise((resolve) => setImmediate(resolve));
    } while (s.count() > 0);
  };
}

export async function runModel(
  s: fc.Scheduler,
  nodes: number,
  dbs: number,
  commands: Iterable<fc.AsyncCommand<Model, SimCluster>>,
  lease: LeaseTiming,
  maxDrift: number,
  leaseScope: 'node' | 'database' = 'database',
) {
  const cluster = new SimCluster({
    nodes,
    dbs,
    timing: lease,
    maxDrift,
    leaseScope,
    random: () => 0.5,
    gate: (label) => s.schedule(Promise.resolve(), label),
    drain: schedulerDrain(s),
  });
  try {
    await fc.asyncModelRun(() => ({ model: { nodes, maxDrift }, real: cluster }), commands);
    // Whatever happened, once faults end and every node is back, each database has one leader again.
    cluster.heal();
    cluster.nodes.forEach((_, i) => {
      cluster.restart(i);
    });
    await cluster.advance(cluster.livenessBoundMs());
    expect(cluster.violations).toEqual([]);
    for (const db of cluster.dbs) expect(cluster.committers(db)).toHaveLength(1);
    coverage.runs += 1;
    coverage.simulatedMs += cluster.now;
    coverage.epochGrants += cluster.grants.length;
  } finally {
    await cluster.stop();
  }
}
