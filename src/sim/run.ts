import { defaultLeaseTiming, type LeaseTiming } from '../machines/role.ts';
import { SimCluster } from './cluster.ts';

/** Options of `runSimulation`. */
export interface SimulationOptions {
  nodes: number;
  dbs: number;
  /** Simulated seconds of random faults before the final recovery check. */
  seconds: number;
  seed: number;
  timing?: LeaseTiming;
  maxDrift?: number;
  /** Called with the share of simulated time done, in [0, 1]. */
  onProgress?: (done: number) => void;
}

/** What a simulation did and found: faults, failovers, leaderless time, violations. */
export interface SimulationSummary {
  nodes: number;
  dbs: number;
  seed: number;
  simulatedSeconds: number;
  wallMs: number;
  faults: Record<FaultKind, number>;
  /** Claims of a new epoch after a database's first leader. */
  failovers: number;
  maxEpoch: number;
  /** Longest stretch any database had no leader, sampled every step, while the store was healthy. */
  longestLeaderlessMsWhileHealthy: number;
  livenessBoundMs: number;
  /** After healing everything and restarting every node: databases with exactly one leader. */
  recoveredDatabases: number;
  violations: string[];
  ok: boolean;
}

type FaultKind = 'crash' | 'restart' | 'partition' | 'heal' | 'drift' | 'slowStore';

const STEP_MS = 50;

/** Chance per step of each fault, tuned so a minute of simulated time sees a few of each. */
const FAULT_RATES: Record<FaultKind, number> = {
  crash: 0.002,
  restart: 0.006,
  partition: 0.0015,
  heal: 0.004,
  drift: 0.002,
  slowStore: 0.001,
};

/** A small seeded PRNG (mulberry32), so every simulation can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs the real role machines of `nodes` × `dbs` on simulated time while injecting random
 * crashes, restarts, partitions, clock drift and a slow store, checking I1 and I2 at every
 * instant; then heals everything and checks every database gets exactly one leader.
 */
export async function runSimulation(options: SimulationOptions): Promise<SimulationSummary> {
  const started = performance.now();
  const random = seededRandom(options.seed);
  const maxDrift = options.maxDrift ?? 0.05;
  const cluster = new SimCluster({
    nodes: options.nodes,
    dbs: options.dbs,
    timing: options.timing ?? defaultLeaseTiming,
    maxDrift,
    random,
    drain: () => new Promise((resolve) => setImmediate(resolve)),
  });
  const faults: Record<FaultKind, number> = {
    crash: 0,
    restart: 0,
    partition: 0,
    heal: 0,
    drift: 0,
    slowStore: 0,
  };
  const pick = (n: number) => Math.floor(random() * n);
  const leaderlessSince = new Map<string, number>();
  let longestLeaderless = 0;
  const totalMs = options.seconds * 1000;
  try {
    for (let elapsed = 0; elapsed < totalMs; elapsed += STEP_MS) {
      for (const kind of Object.keys(FAULT_RATES) as FaultKind[]) {
        if (random() >= FAULT_RATES[kind]) continue;
        faults[kind] += 1;
        const node = pick(options.nodes);
        if (kind === 'crash') cluster.crash(node);
        else if (kind === 'restart') cluster.restart(node);
        else if (kind === 'partition') cluster.partition(node, random() < 0.5 ? 'fail' : 'drop');
        else if (kind === 'heal') cluster.heal();
        else if (kind === 'drift') cluster.drift(node, 1 + (2 * random() - 1) * maxDrift);
        else cluster.setLatency({ minMs: 0, maxMs: 50 + pick(400) });
      }
      await cluster.advance(STEP_MS);
      const healthy =
        cluster.storeHealthy && cluster.nodes.some((n, i) => cluster.isUp(i) && !n.partitioned);
      for (const db of cluster.dbs) {
        if (cluster.committers(db).length > 0 || !healthy) {
          leaderlessSince.delete(db);
          continue;
        }
        const since = leaderlessSince.get(db) ?? cluster.now;
        leaderlessSince.set(db, since);
        longestLeaderless = Math.max(longestLeaderless, cluster.now - since);
      }
      if (elapsed % 5000 === 0) options.onProgress?.(elapsed / totalMs);
    }
    cluster.heal();
    cluster.nodes.forEach((_, i) => {
      cluster.restart(i);
    });
    await cluster.advance(cluster.livenessBoundMs());
    options.onProgress?.(1);
    const recovered = cluster.dbs.filter((db) => cluster.committers(db).length === 1).length;
    const firstGrants = new Set(cluster.grants.map((g) => g.db)).size;
    const violations = [...cluster.violations];
    if (recovered !== cluster.dbs.length) {
      violations.push(
        `liveness: only ${recovered} of ${cluster.dbs.length} databases have one leader after recovery`,
      );
    }
    return {
      nodes: options.nodes,
      dbs: options.dbs,
      seed: options.seed,
      simulatedSeconds: cluster.now / 1000,
      wallMs: Math.round(performance.now() - started),
      faults,
      failovers: cluster.grants.length - firstGrants,
      maxEpoch: Math.max(0, ...cluster.grants.map((g) => g.epoch)),
      longestLeaderlessMsWhileHealthy: longestLeaderless,
      livenessBoundMs: cluster.livenessBoundMs(),
      recoveredDatabases: recovered,
      violations,
      ok: violations.length === 0,
    };
  } finally {
    await cluster.stop();
  }
}
