import fc from 'fast-check';
import { expect } from 'vitest';
import type { CutOffMode } from '../../src/adapters/faults.ts';
import type { SimCluster } from '../../src/sim/cluster.ts';

export interface Model {
  nodes: number;
  maxDrift: number;
}

type ClusterCommand = fc.AsyncCommand<Model, SimCluster>;

/** What the runs exercised, so a passing suite shows it did real work. */
export const coverage = {
  runs: 0,
  simulatedMs: 0,
  epochGrants: 0,
  crashTakeovers: 0,
  healRecoveries: 0,
};

function expectSafe(cluster: SimCluster): void {
  expect(cluster.violations, `${cluster.violations.join('\n')}\n${cluster.describe()}`).toEqual([]);
}

function expectOneLeaderPerDatabase(cluster: SimCluster, why: string): void {
  const anyNodeUp = cluster.nodes.some((_, i) => cluster.isUp(i));
  for (const db of cluster.dbs) {
    const committers = cluster.committers(db);
    expect(
      committers.length,
      `${why}: ${db} has leaders [${committers}] at t=${cluster.now}\n${cluster.describe()}`,
    ).toBe(anyNodeUp ? 1 : 0);
  }
}

/** Whether a healthy node could take over: the store answers promptly and someone is up and connected. */
function healthyFollowerExists(cluster: SimCluster): boolean {
  return (
    cluster.storeHealthy &&
    cluster.nodes.some((node, i) => cluster.isUp(i) && node.partitioned === null)
  );
}

export class Tick implements ClusterCommand {
  constructor(readonly ms: number) {}
  check = () => true;
  async run(_: Model, cluster: SimCluster) {
    await cluster.advance(this.ms);
    expectSafe(cluster);
  }
  toString = () => `Tick(${this.ms})`;
}

export class Crash implements ClusterCommand {
  constructor(readonly node: number) {}
  check = (m: Model) => this.node < m.nodes;
  async run(_: Model, cluster: SimCluster) {
    const led = cluster.dbs.filter((db) => cluster.committers(db).includes(`n${this.node}`));
    cluster.crash(this.node);
    expectSafe(cluster);
    if (led.length === 0 || !healthyFollowerExists(cluster)) return;
    // Liveness: a healthy follower takes over every database the crashed node led.
    await cluster.advance(cluster.livenessBoundMs());
    expectSafe(cluster);
    for (const db of led) {
      expect(
        cluster.committers(db).length,
        `no leader for ${db} after its leader crashed\n${cluster.describe()}`,
      ).toBe(1);
    }
    coverage.crashTakeovers += led.length;
  }
  toString = () => `Crash(n${this.node})`;
}

class Restart implements ClusterCommand {
  constructor(readonly node: number) {}
  check = (m: Model) => this.node < m.nodes;
  async run(_: Model, cluster: SimCluster) {
    cluster.restart(this.node);
    await cluster.advance(1);
    expectSafe(cluster);
  }
  toString = () => `Restart(n${this.node})`;
}

class Partition implements ClusterCommand {
  constructor(
    readonly node: number,
    readonly mode: CutOffMode,
  ) {}
  check = (m: Model) => this.node < m.nodes;
  async run(_: Model, cluster: SimCluster) {
    cluster.partition(this.node, this.mode);
    await cluster.advance(1);
    expectSafe(cluster);
  }
  toString = () => `Partition(n${this.node}, ${this.mode})`;
}

class Heal implements ClusterCommand {
  check = () => true;
  async run(_: Model, cluster: SimCluster) {
    cluster.heal();
    await cluster.advance(cluster.livenessBoundMs());
    expectSafe(cluster);
    expectOneLeaderPerDatabase(cluster, 'after Heal');
    coverage.healRecoveries += 1;
  }
  toString = () => 'Heal';
}

class ClockDrift implements ClusterCommand {
  constructor(
    readonly node: number,
    /** In [-1, 1]: the share of the allowed drift bound. */
    readonly share: number,
  ) {}
  check = (m: Model) => this.node < m.nodes;
  async run(m: Model, cluster: SimCluster) {
    cluster.drift(this.node, 1 + this.share * m.maxDrift);
    await cluster.advance(1);
    expectSafe(cluster);
  }
  toString = () => `ClockDrift(n${this.node}, ${this.share.toFixed(2)})`;
}

class SlowStore implements ClusterCommand {
  constructor(
    readonly minMs: number,
    readonly maxMs: number,
  ) {}
  check = () => true;
  async run(_: Model, cluster: SimCluster) {
    cluster.setLatency({ minMs: this.minMs, maxMs: this.maxMs });
    await cluster.advance(1);
    expectSafe(cluster);
  }
  toString = () => `SlowStore(${this.minMs}..${this.maxMs})`;
}

class FailStoreCalls implements ClusterCommand {
  constructor(readonly count: number) {}
  check = () => true;
  async run(_: Model, cluster: SimCluster) {
    cluster.failNextStoreCalls(this.count);
    await cluster.advance(1);
    expectSafe(cluster);
  }
  toString = () => `FailStoreCalls(${this.count})`;
}

export function clusterCommands(maxNodes: number, ttlMs: number) {
  const node = fc.nat({ max: maxNodes - 1 });
  return [
    fc.integer({ min: 1, max: 2 * ttlMs }).map((ms) => new Tick(ms)),
    fc.integer({ min: 1, max: 2 * ttlMs }).map((ms) => new Tick(ms)),
    node.map((n) => new Crash(n)),
    node.map((n) => new Restart(n)),
    fc
      .tuple(node, fc.constantFrom<CutOffMode>('fail', 'drop'))
      .map(([n, mode]) => new Partition(n, mode)),
    fc.constant(new Heal()),
    fc
      .tuple(node, fc.double({ min: -1, max: 1, noNaN: true }))
      .map(([n, share]) => new ClockDrift(n, share)),
    fc
      .tuple(fc.nat({ max: ttlMs / 5 }), fc.nat({ max: ttlMs / 5 }))
      .map(([a, b]) => new SlowStore(Math.min(a, b), Math.max(a, b))),
    fc.integer({ min: 1, max: 10 }).map((n) => new FailStoreCalls(n)),
  ];
}

/** Only what a clock-drift split brain needs: extreme drift, a cut-off leader, time passing. */
export function driftHuntCommands(maxNodes: number, ttlMs: number) {
  const node = fc.nat({ max: maxNodes - 1 });
  return [
    fc.integer({ min: 1, max: 2 * ttlMs }).map((ms) => new Tick(ms)),
    fc.tuple(node, fc.constantFrom(-1, 1)).map(([n, share]) => new ClockDrift(n, share)),
    node.map((n) => new Partition(n, 'fail')),
  ];
}
