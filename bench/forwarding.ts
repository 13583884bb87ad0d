/**
 * Write forwarding: the latency of a write sent from a follower (forwarded over loopback HTTP to
 * the leader, applied there, answered) against the same write made on the leader itself, same
 * statement, same durability.
 *
 * Two nodes, each in its own process (bench/support/node-process.ts), sharing fs storage and an
 * fs lease store in a temp folder. Separate processes because that is what a forwarded write
 * crosses: in one process the leader's HTTP handler and the follower's client would share one
 * event loop (no scheduling between processes, no second loop's wake-up), which flatters the
 * forwarded side. Each latency is measured in the process that makes the call, on its own clock.
 *
 * Rounds alternate the side that goes first (local, forwarded / forwarded, local); each side makes
 * OPS writes one after the other. 'async' is the headline (the write returns at the leader's local
 * commit, so the difference is the forwarding itself); 'replicated' (the write returns once it is
 * durable in storage) is reported too. The floor of a node-to-node round trip, GET /health over a
 * keep-alive connection, is measured the same way. If leadership moves during a run (a leader
 * whose event loop stalls past its lease loses it), the batch is redone with the roles as they now
 * are, and `failovers` / `discardedBatches` say so.
 *
 *   npx tsx bench/forwarding.ts [--quick]
 */
import path from 'node:path';
import type { Durability } from '../src/api-types.ts';
import {
  emit,
  latencySummary,
  log,
  machineLoad,
  makeTempDir,
  median,
  percentile,
  quick,
  removeDir,
  round,
  sidesForRound,
} from './lib.ts';
import { clusterConfig, type NodeProcess, startCluster, stopAll } from './support/cluster.ts';

const ROUNDS = quick ? 6 : 20;
const OPS = { async: quick ? 300 : 1000, replicated: quick ? 60 : 100 } as const;
const WARMUP_OPS = { async: quick ? 200 : 500, replicated: quick ? 20 : 30 } as const;
const PINGS = quick ? 500 : 2000;
const VALUE_CHARS = 100;

const SCHEMA =
  'create table if not exists fwd (id integer primary key, k integer not null, v text not null)';

type Side = 'local' | 'forwarded';

let nextKey = 1;
/** Leadership moved between the two processes during the run (see the report: a stalled leader). */
let failovers = 0;
/** Batches thrown away because the node's role changed while it wrote. */
let discardedBatches = 0;

interface Roles {
  leader: NodeProcess;
  follower: NodeProcess;
}

/** Which process leads now; waits (up to 30 s) until one leads and the other follows. */
async function currentRoles(nodes: readonly NodeProcess[], previous: Roles | null): Promise<Roles> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const statuses = await Promise.all(nodes.map((node) => node.call('status', {})));
    const leader = nodes[statuses.findIndex((s) => s.role === 'leader')];
    const follower = nodes[statuses.findIndex((s) => s.role === 'follower')];
    if (leader && follower) {
      if (previous && previous.leader !== leader) {
        failovers += 1;
        log(`leadership moved to ${leader.id}`);
      }
      return { leader, follower };
    }
    if (Date.now() > deadline) {
      throw new Error(`no leader/follower pair: ${JSON.stringify(statuses.map((s) => s.role))}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * One batch of writes from the side's node; the batch is redone (and counted) when the node's
 * role changed while it wrote, so every sample is a local write on the leader or a forwarded one.
 */
async function writes(
  nodes: readonly NodeProcess[],
  roles: Roles,
  side: Side,
  count: number,
  durability: Durability,
): Promise<{ ms: number[]; roles: Roles }> {
  for (;;) {
    const node = side === 'local' ? roles.leader : roles.follower;
    const expected = side === 'local' ? 'leader' : 'follower';
    const keyBase = nextKey;
    nextKey += count;
    const { ms, role } = await node.call('latency', {
      count,
      durability,
      valueChars: VALUE_CHARS,
      keyBase,
    });
    const now = await currentRoles(nodes, roles);
    if (role === expected && now.leader === roles.leader) return { ms, roles: now };
    discardedBatches += 1;
    roles = now;
  }
}

async function measure(nodes: readonly NodeProcess[], durability: Durability) {
  let roles = await currentRoles(nodes, null);
  roles = (await writes(nodes, roles, 'local', WARMUP_OPS[durability], durability)).roles;
  roles = (await writes(nodes, roles, 'forwarded', WARMUP_OPS[durability], durability)).roles;
  const all: Record<Side, number[]> = { local: [], forwarded: [] };
  const addedP50PerRound: number[] = [];
  for (const node of nodes) await node.call('loopDelay', { reset: true });
  for (let r = 0; r < ROUNDS; r++) {
    const round: Record<Side, number[]> = { local: [], forwarded: [] };
    for (const side of sidesForRound(r, 'local' as Side, 'forwarded' as Side)) {
      const batch = await writes(nodes, roles, side, OPS[durability], durability);
      roles = batch.roles;
      round[side] = batch.ms;
      all[side].push(...round[side]);
    }
    addedP50PerRound.push(median(round.forwarded) - median(round.local));
    log(
      `${durability} round ${r + 1}/${ROUNDS}: local p50 ${round3(median(round.local))} ms, ` +
        `forwarded p50 ${round3(median(round.forwarded))} ms`,
    );
  }
  // Over all rounds of this durability, per process: a stall of either loop delays a forwarded
  // write. Processes are named by the role they started with.
  const eventLoopDelayMs: Record<string, ReturnType<typeof roundDelay>> = {};
  for (const node of nodes) {
    eventLoopDelayMs[node.id] = roundDelay(await node.call('loopDelay', { reset: true }));
  }
  const local = latencySummary(all.local);
  const forwarded = latencySummary(all.forwarded);
  return {
    localMsP50: local.p50,
    localMsP99: local.p99,
    forwardedMsP50: forwarded.p50,
    forwardedMsP99: forwarded.p99,
    addedMsP50: round(percentile(all.forwarded, 50) - percentile(all.local, 50)),
    addedMsP99: round(percentile(all.forwarded, 99) - percentile(all.local, 99)),
    /** The median over rounds of (forwarded p50 − local p50) within each round. */
    addedMsP50MedianOfRounds: round(median(addedP50PerRound)),
    local,
    forwarded,
    eventLoopDelayMs,
  };
}

function roundDelay(delay: { p50Ms: number; p99Ms: number; maxMs: number }) {
  return {
    p50Ms: round(delay.p50Ms, 2),
    p99Ms: round(delay.p99Ms, 2),
    maxMs: round(delay.maxMs, 2),
  };
}

function round3(value: number): number {
  return round(value, 3);
}

async function main(): Promise<void> {
  const dir = makeTempDir('forwarding');
  const loadBefore = machineLoad();
  log(
    `forwarding: ${quick ? 'quick' : 'full'}, ${ROUNDS} rounds x ${OPS.async} async / ${OPS.replicated} replicated writes per side, load ${JSON.stringify(loadBefore)}, dir ${dir}`,
  );
  const config = clusterConfig(path.join(dir));
  const { followers, all, leaderAddress } = await startCluster(
    config,
    ['leader', 'follower'],
    SCHEMA,
  );
  const follower = followers[0] as NodeProcess;
  try {
    if (!leaderAddress) throw new Error('the leader has no listener address');
    const ping = (await follower.call('httpPing', { address: leaderAddress, count: PINGS })).ms;
    const pingSummary = latencySummary(ping);
    log(`http round trip follower → leader: ${JSON.stringify(pingSummary)}`);

    const async = await measure(all, 'async');
    log(`async: ${JSON.stringify(async)}`);
    const replicated = await measure(all, 'replicated');
    log(`replicated: ${JSON.stringify(replicated)}`);

    emit({
      bench: 'forwarding',
      quick,
      durability: 'async',
      addedMsP50: async.addedMsP50,
      addedMsP99: async.addedMsP99,
      localMsP50: async.localMsP50,
      localMsP99: async.localMsP99,
      forwardedMsP50: async.forwardedMsP50,
      forwardedMsP99: async.forwardedMsP99,
      targets: { addedMsP50: 1 },
      addedMsP50MedianOfRounds: async.addedMsP50MedianOfRounds,
      httpRoundTripMs: pingSummary,
      async: {
        local: async.local,
        forwarded: async.forwarded,
        eventLoopDelayMs: async.eventLoopDelayMs,
      },
      replicated,
      failovers,
      discardedBatches,
      rounds: ROUNDS,
      opsPerSidePerRound: OPS,
      valueChars: VALUE_CHARS,
      processes: 'leader and follower in separate processes, loopback HTTP',
      load: { before: loadBefore, after: machineLoad() },
    });
  } finally {
    await stopAll(all);
    removeDir(dir);
  }
}

await main();
