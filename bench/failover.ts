/**
 * Failover time with real processes: three `hadb worker` nodes on fs storage and fs leases in a
 * temporary folder, every node writing (`durability: 'replicated'`), lease ttl 1500 ms.
 *
 * - SIGKILL of the leader, 20 times (5 with --quick), each killed node restarted to rejoin as a
 *   follower: kill → first write acknowledged under a later epoch. Bounded below by the lease:
 *   a follower may claim only after the record stayed unchanged for ttl + margin.
 * - Graceful handoff (`db.handoff()` on the leader), as often: command sent → first write
 *   acknowledged under a later epoch. The lease is released by CAS, so nobody waits for a ttl.
 *
 * Times are wall-clock readings of one host (the driver's and the nodes' clocks are the same
 * clock). At the end the load stops and every copy is checked against every acknowledged write.
 *
 *   npx tsx bench/failover.ts [--quick]
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ClusterDriver, DEMO_TIMING, percentile } from '../src/cli/cluster-driver.ts';
import { emit, log, makeTempDir, median, quick, removeDir } from './lib.ts';

const KILLS = quick ? 5 : 20;
const HANDOFFS = quick ? 5 : 20;
const DB = 'kv';
/**
 * Writes per second per node. Low on purpose: a killed leader rebuilds its copy from storage when
 * it restarts, replaying the log since the last snapshot, and with a failover every few seconds
 * no leadership ships the 1000 changesets that trigger one, so every restart replays the whole
 * log. At this rate the 20th restart still takes seconds, not minutes.
 */
const RATE = 3;

const dir = makeTempDir('failover');
const cluster = new ClusterDriver({ dir, nodes: 3, dbs: [DB], rate: RATE, timing: DEMO_TIMING });

function measured(values: (number | null)[], what: string): number[] {
  const missing = values.filter((value) => value === null).length;
  if (missing > 0) throw new Error(`${missing} ${what} saw no write acknowledged by a new leader`);
  return values as number[];
}

try {
  log(`cluster in ${dir}; ${KILLS} kills, ${HANDOFFS} handoffs`);
  await cluster.start();
  cluster.startLoad();
  await sleep(1000);

  const killMs: (number | null)[] = [];
  const rejoinMs: number[] = [];
  for (let kill = 1; kill <= KILLS; kill++) {
    const failover = await cluster.failLeader(DB, 'kill');
    killMs.push(failover.ms);
    await sleep(200);
    const restarted = Date.now();
    await cluster.spawn(failover.node, { load: true }, 180_000);
    rejoinMs.push(Date.now() - restarted);
    log(
      `kill ${kill}: ${failover.node} (epoch ${failover.epoch}) → ${failover.ms} ms; back as a follower in ${rejoinMs.at(-1)} ms`,
    );
    // Settle: the restarted node catches up before the next kill.
    await sleep(300);
  }

  const handoffMs: (number | null)[] = [];
  for (let handoff = 1; handoff <= HANDOFFS; handoff++) {
    const failover = await cluster.failLeader(DB, 'handoff');
    handoffMs.push(failover.ms);
    log(`handoff ${handoff}: ${failover.node} (epoch ${failover.epoch}) → ${failover.ms} ms`);
    await sleep(300);
  }

  await cluster.stopLoad();
  const { reports } = await cluster.converge(60_000);
  const verification = cluster.verify(DB, reports);
  if (verification.violations.length > 0) log(`VIOLATIONS: ${verification.violations.join('; ')}`);
  const kills = measured(killMs, 'kills');
  const handoffs = measured(handoffMs, 'handoffs');
  emit({
    bench: 'failover',
    quick,
    failoverMsP50: median(kills),
    failoverMsP99: percentile(kills, 99),
    failoverMsMax: Math.max(...kills),
    handoffMsP50: median(handoffs),
    handoffMsP99: percentile(handoffs, 99),
    leaseTtlMs: DEMO_TIMING.ttlMs,
    /** Restart of a killed leader → ready as a follower (process start, rebuild from storage). */
    rejoinMsP50: median(rejoinMs),
    rejoinMsMax: Math.max(...rejoinMs),
    leaseMarginMs: DEMO_TIMING.marginMs,
    followerPollMs: DEMO_TIMING.pollIntervalMs,
    kills: kills.length,
    handoffs: handoffs.length,
    writesAcked: verification.writesAcked,
    ackedWritesLost: verification.ackedWritesLost,
    converged: verification.converged,
    followerLagMsP50: percentile(cluster.lagSamples, 50),
    followerLagMsP99: percentile(cluster.lagSamples, 99),
    violations: verification.violations,
  });
  if (verification.violations.length > 0) process.exitCode = 1;
} finally {
  await cluster.close();
  removeDir(dir);
}
