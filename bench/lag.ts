/**
 * Follower lag: from a commit on the leader to the row being visible in the follower's local copy
 * (the live tail: the follower long-polls the leader for each newly durable sequence, then pulls
 * it from storage and applies it).
 *
 * Two nodes, each in its own process (bench/support/node-process.ts), sharing fs storage and an
 * fs lease store in a temp folder, talking over loopback HTTP. Separate processes because in one
 * process the follower's apply, its polling and the leader's shipping would share one event loop
 * and queue behind each other, which is not how nodes run. The parent only orchestrates.
 *
 * The leader writes one row per write, with a sequence number n, at a steady rate, durability
 * 'async' (the write returns at the local commit; shipping follows within the node's 2 ms ship
 * delay). It records the commit instant of each row. The follower polls its local copy
 * (consistency 'local') every POLL_MS and records when each n first appears. Both timestamps are
 * CLOCK_MONOTONIC, which every process of the machine shares; the start-up check below verifies
 * that (a child's reading must fall inside the IPC round trip asking for it). lag = visible −
 * committed; the poll interval adds up to POLL_MS (plus timer slack) to each sample, and a poll
 * waits for a pull in progress (the API's own visibility).
 *
 * `breakdown` splits the headline lag, from the storage calls both nodes time: the leader's part
 * (commit → durable in storage) and the follower's (durable → visible), and the stages of rows
 * that were alone in their changeset (see {@link breakdown}).
 * `--rate N` and `--seconds S` change the headline run. Every step on the way is fsync-bound (the
 * leader's local state and upload, the follower's redo record, pages and state): with
 * TMPDIR=/dev/shm (tmpfs, fsync free) the run shows what is left without the disk.
 *
 *   npx tsx bench/lag.ts [--quick]
 */
import path from 'node:path';
import type { Durability } from '../src/api-types.ts';
import { logKey } from '../src/replication/snapshot.ts';
import {
  emit,
  latencySummary,
  log,
  machineLoad,
  makeTempDir,
  percentile,
  quick,
  removeDir,
  round,
} from './lib.ts';
import {
  checkSharedClock,
  clusterConfig,
  type NodeProcess,
  startCluster,
  stopAll,
} from './support/cluster.ts';
import type { StorageCall, Tasks } from './support/protocol.ts';

/** Writes per second of the headline run (`--rate N` to change it, `--seconds S` its length). */
const RATE = numberArg('--rate') ?? 100;
const SECONDS = numberArg('--seconds') ?? (quick ? 15 : 60);
/** Extra runs after the headline one, reported under `byRate`. */
const OTHER_RATES = quick ? [20] : [20, 500];
const OTHER_SECONDS = quick ? 10 : 20;
const WARMUP_WRITES = quick ? 100 : 300;
const POLL_MS = 1;
const VALUE_CHARS = 100;
const DURABILITY: Durability = 'async';

const SCHEMA =
  'create table if not exists lag (n integer primary key, at real not null, v text not null)';

interface RunResult {
  rate: number;
  writes: number;
  lags: number[];
  missing: number;
  writeLateMs: number[];
  executeMs: number[];
  polls: number;
  /** Rows that became visible in the same poll as the one before them. */
  batchedRows: number;
  durationMs: number;
  loop: { leader: LoopDelay; follower: LoopDelay };
  /** The leader process no longer led at the end of this run (its lease lapsed: a stall). */
  failover: boolean;
  /**
   * Per sample: the row's commit and visibility times, the follower's position then, and the
   * write token's seq (the highest changeset that can hold the row).
   */
  rows: { committedAt: number; visibleAt: number; position: number; token: number }[];
}

type LoopDelay = Tasks['loopDelay']['value'];

function numberArg(name: string): number | undefined {
  const at = process.argv.indexOf(name);
  if (at < 0) return undefined;
  const value = Number(process.argv[at + 1]);
  if (!(value > 0)) throw new Error(`${name} needs a positive number`);
  return value;
}

let nextN = 1;

async function run(
  leader: NodeProcess,
  follower: NodeProcess,
  rate: number,
  count: number,
): Promise<RunResult> {
  const fromN = nextN;
  const toN = fromN + count - 1;
  nextN = toN + 1;
  const durationMs = (count / rate) * 1000;
  // The watcher starts first (IPC messages are delivered in order, and it polls at once).
  const watching = follower.call('watch', {
    fromN,
    toN,
    pollMs: POLL_MS,
    timeoutMs: durationMs + 30_000,
  });
  await leader.call('loopDelay', { reset: true });
  await follower.call('loopDelay', { reset: true });
  const written = await leader.call('writeSteady', {
    rate,
    count,
    startN: fromN,
    durability: DURABILITY,
    valueChars: VALUE_CHARS,
  });
  const seen = await watching;
  const leaderStatus = await leader.call('status', {});
  const failover = leaderStatus.role !== 'leader' || leaderStatus.position.epoch !== 1;
  if (failover) log(`leadership moved during the run: ${JSON.stringify(leaderStatus)}`);
  const loop = {
    leader: await leader.call('loopDelay', { reset: true }),
    follower: await follower.call('loopDelay', { reset: true }),
  };
  const visibleAt = new Map<number, number>();
  seen.n.forEach((n, i) => {
    visibleAt.set(n, seen.visibleAt[i] as number);
  });
  const positionAt = new Map<number, number>();
  seen.n.forEach((n, i) => {
    positionAt.set(n, seen.positions[i] as number);
  });
  const lags: number[] = [];
  const rows: RunResult['rows'] = [];
  let missing = 0;
  written.n.forEach((n, i) => {
    const visible = visibleAt.get(n);
    const committedAt = written.committedAt[i] as number;
    if (visible === undefined) missing += 1;
    else {
      lags.push(visible - committedAt);
      rows.push({
        committedAt,
        visibleAt: visible,
        position: positionAt.get(n) as number,
        token: written.tokens[i] as number,
      });
    }
  });
  let batchedRows = 0;
  for (let i = 1; i < seen.visibleAt.length; i++) {
    if (seen.visibleAt[i] === seen.visibleAt[i - 1]) batchedRows += 1;
  }
  return {
    rate,
    writes: count,
    lags,
    missing,
    writeLateMs: written.lateMs,
    executeMs: written.resolvedMs,
    polls: seen.polls,
    batchedRows,
    durationMs,
    loop,
    rows,
    failover,
  };
}

function describe(result: RunResult) {
  return {
    rate: result.rate,
    samples: result.lags.length,
    missing: result.missing,
    lagMs: latencySummary(result.lags),
    over25Ms: result.lags.filter((x) => x > 25).length,
    over100Ms: result.lags.filter((x) => x > 100).length,
    leaderExecuteMs: latencySummary(result.executeMs),
    /** How late the leader's writes were against their schedule (timer slack). */
    writeLateMsP99: round(percentile(result.writeLateMs, 99)),
    followerPolls: result.polls,
    rowsSeenWithPrevious: result.batchedRows,
    /** The figures then mix in writes forwarded to the new leader: not a lag measurement. */
    failover: result.failover,
    /** Event-loop delay of each process during the run (monitorEventLoopDelay). */
    eventLoopDelayMs: {
      leader: roundAll(result.loop.leader),
      follower: roundAll(result.loop.follower),
    },
  };
}

function roundAll(delay: LoopDelay): LoopDelay {
  return {
    p50Ms: round(delay.p50Ms, 2),
    p99Ms: round(delay.p99Ms, 2),
    maxMs: round(delay.maxMs, 2),
  };
}

/**
 * Where the time goes, from the storage calls both nodes timed.
 *
 * `split`, for every row: commit → durable (the upload of the changeset named by the write token
 * has finished; changesets land in order, so the row is durable by then: an upper bound of the
 * leader's part, by at most one changeset when a ship was already under way) and durable →
 * visible (the follower's part: live tail, get, apply, poll; a lower bound).
 *
 * `stages`, for rows that were alone in their changeset (uncontended: at higher rates these are
 * the rows that did not queue): commit → the leader starts the upload (ship delay, capture,
 * encode, local state) → upload done → the follower starts the get that found it (live tail
 * wake-up, HTTP) → get done → visible (apply, the rest of the pull, the poll).
 */
async function breakdown(
  leader: NodeProcess,
  follower: NodeProcess,
  db: string,
  result: RunResult,
) {
  const puts = new Map<string, StorageCall>();
  for (const call of (await leader.call('storageCalls', {})).calls) {
    if (call.op === 'putIfAbsent') puts.set(call.key, call);
  }
  const gets = new Map<string, StorageCall>();
  const followerCalls = (await follower.call('storageCalls', {})).calls;
  // The last get of a key is the one that found it.
  for (const call of followerCalls) if (call.op === 'get') gets.set(call.key, call);
  const stages = {
    toUploadStart: [],
    upload: [],
    toFollowerGet: [],
    get: [],
    toVisible: [],
  } as Record<string, number[]>;
  const perPosition = new Map<number, number>();
  for (const row of result.rows)
    perPosition.set(row.position, (perPosition.get(row.position) ?? 0) + 1);
  const leaderPart: number[] = [];
  const followerPart: number[] = [];
  for (const row of result.rows) {
    const put = puts.get(logKey('', db, row.token));
    if (!put) continue;
    leaderPart.push(put.end - row.committedAt);
    followerPart.push(row.visibleAt - put.end);
  }
  for (const row of result.rows) {
    if (perPosition.get(row.position) !== 1) continue;
    const key = logKey('', db, row.position);
    const put = puts.get(key);
    const get = gets.get(key);
    if (!put || !get || put.start < row.committedAt) continue;
    stages.toUploadStart?.push(put.start - row.committedAt);
    stages.upload?.push(put.end - put.start);
    stages.toFollowerGet?.push(get.start - put.end);
    stages.get?.push(get.end - get.start);
    stages.toVisible?.push(row.visibleAt - get.end);
  }
  return {
    split: {
      rows: leaderPart.length,
      commitToDurableMs: latencySummary(leaderPart, 2),
      durableToVisibleMs: latencySummary(followerPart, 2),
    },
    rowsAloneInTheirChangeset: stages.upload?.length ?? 0,
    p50Ms: Object.fromEntries(
      Object.entries(stages).map(([name, values]) => [name, round(percentile(values, 50), 2)]),
    ),
    p99Ms: Object.fromEntries(
      Object.entries(stages).map(([name, values]) => [name, round(percentile(values, 99), 2)]),
    ),
    followerLists: followerCalls.filter((c) => c.op === 'list').length,
    followerGets: followerCalls.filter((c) => c.op === 'get').length,
  };
}

async function main(): Promise<void> {
  const dir = makeTempDir('lag');
  const loadBefore = machineLoad();
  log(
    `lag: ${quick ? 'quick' : 'full'}, ${RATE} writes/s for ${SECONDS} s${
      OTHER_RATES.length ? `, then ${OTHER_RATES.join(', ')} writes/s for ${OTHER_SECONDS} s` : ''
    }, load ${JSON.stringify(loadBefore)}, dir ${dir}`,
  );
  // Both nodes time their storage calls (a closure and two clock reads per call), for `stages`.
  const config = { ...clusterConfig(path.join(dir)), traceStorage: true };
  const { leader, followers, all } = await startCluster(config, ['leader', 'follower'], SCHEMA);
  const follower = followers[0] as NodeProcess;
  try {
    const clockChecks = [await checkSharedClock(leader), await checkSharedClock(follower)];
    log(`shared clock check: ${JSON.stringify(clockChecks)}`);
    if (!clockChecks.every((c) => c.inside)) {
      throw new Error('a child process does not share this process monotonic clock');
    }

    const warmup = await run(leader, follower, RATE, WARMUP_WRITES);
    log(`warm-up: ${JSON.stringify(describe(warmup).lagMs)}`);

    await leader.call('storageCalls', {});
    await follower.call('storageCalls', {});
    const main = await run(leader, follower, RATE, RATE * SECONDS);
    const headline = describe(main);
    log(`${RATE}/s: ${JSON.stringify(headline)}`);
    const where = await breakdown(leader, follower, config.db, main);
    log(`breakdown: ${JSON.stringify(where)}`);

    const byRate = [headline];
    for (const rate of OTHER_RATES) {
      await leader.call('storageCalls', {});
      await follower.call('storageCalls', {});
      const other = describe(await run(leader, follower, rate, rate * OTHER_SECONDS));
      log(`${rate}/s: ${JSON.stringify(other)}`);
      byRate.push(other);
    }

    const status = await follower.call('status', {});
    // A leader whose event loop stalls past its lease loses it: flagged per run, not hidden.
    const failover = byRate.some((r) => r.failover);
    emit({
      bench: 'lag',
      quick,
      lagMsP50: headline.lagMs.p50,
      lagMsP99: headline.lagMs.p99,
      targets: { lagMsP50: 25, lagMsP99: 100 },
      samples: headline.samples,
      missing: headline.missing,
      ratePerSec: RATE,
      seconds: SECONDS,
      durability: DURABILITY,
      pollMs: POLL_MS,
      lagMs: headline.lagMs,
      over25Ms: headline.over25Ms,
      over100Ms: headline.over100Ms,
      leaderExecuteMs: headline.leaderExecuteMs,
      byRate,
      breakdown: where,
      followerPosition: status.position,
      failover,
      processes: 'leader and follower in separate processes; monotonic clock shared',
      clockChecks,
      load: { before: loadBefore, after: machineLoad() },
    });
  } finally {
    await stopAll(all);
    removeDir(dir);
  }
}

await main();
