/**
 * `hadb serve` over Hrana against local SQLite: the same statements, one after the other, sent
 * with @libsql/client to a leader and to a follower (two `hadb serve` processes on fs storage and
 * fs leases, `replicated` durability), and run on a local better-sqlite3 file in WAL mode with
 * SQLite's default settings.
 *
 * The workload is a mix: every fifth statement a single-row insert, the others point reads by
 * primary key of seeded rows; the same sequence on every side. Rounds rotate the order of the
 * sides (leader, follower, local / follower, local, leader / …) to cancel drift on a noisy
 * machine. Reported per side: statements per second (sum of statements over sum of time) and
 * per-statement latency. `leaderRatio` and `followerRatio` are that side's throughput ÷ the local
 * throughput. A follower's inserts are forwarded to the leader, and its next read waits for its
 * own write to reach its copy; a leader's inserts return once durable in storage.
 *
 *   npx tsx bench/hrana.ts [--quick]
 */
import path from 'node:path';
import { type Client, createClient } from '@libsql/client';
import Database from 'better-sqlite3';
import {
  emit,
  latencySummary,
  log,
  machineLoad,
  makeTempDir,
  nowMs,
  quick,
  removeDir,
  round,
} from './lib.ts';
import { leaderAndFollower, type ServeProcess, startServe } from './support/serve.ts';

const ROUNDS = quick ? 4 : 10;
/** Statements per side per round. */
const OPS = quick ? 200 : 600;
const WARMUP_OPS = quick ? 50 : 150;
const SEED_ROWS = 1000;
/** Every WRITE_EVERY-th statement is an insert: 20 % writes, 80 % reads. */
const WRITE_EVERY = 5;
const VALUE_CHARS = 100;
const DB = 'bench';
const AUTH_TOKEN = 'bench-client-token';
const SCHEMA = 'create table if not exists kv (id integer primary key, v text not null)';
const INSERT = 'insert into kv (v) values (?)';
const READ = 'select v from kv where id = ?';

type SideName = 'leader' | 'follower' | 'local';

interface Side {
  name: SideName;
  insert(value: string): Promise<void>;
  read(id: number): Promise<void>;
}

interface Samples {
  /** Milliseconds per statement, and by kind. */
  all: number[];
  insert: number[];
  read: number[];
  /** Time spent running statements, summed over rounds. */
  busyMs: number;
}

/** A small deterministic generator, so every side runs the same statements. */
function lcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

function workload(count: number, seed: number): { insert: boolean; id: number }[] {
  const random = lcg(seed);
  return Array.from({ length: count }, (_, i) => ({
    insert: i % WRITE_EVERY === WRITE_EVERY - 1,
    id: 1 + Math.floor(random() * SEED_ROWS),
  }));
}

const VALUE = 'x'.repeat(VALUE_CHARS);

async function run(side: Side, count: number, seed: number, samples?: Samples): Promise<void> {
  const started = nowMs();
  for (const op of workload(count, seed)) {
    const t0 = nowMs();
    if (op.insert) await side.insert(VALUE);
    else await side.read(op.id);
    const ms = nowMs() - t0;
    if (samples) {
      samples.all.push(ms);
      (op.insert ? samples.insert : samples.read).push(ms);
    }
  }
  if (samples) samples.busyMs += nowMs() - started;
}

function hranaSide(name: SideName, client: Client): Side {
  return {
    name,
    async insert(value) {
      await client.execute({ sql: INSERT, args: [value] });
    },
    async read(id) {
      const result = await client.execute({ sql: READ, args: [id] });
      if (result.rows.length !== 1) throw new Error(`${name}: row ${id} not found`);
    },
  };
}

function localSide(db: Database.Database): Side {
  const insert = db.prepare<[string]>(INSERT);
  const read = db.prepare<[number], { v: string }>(READ);
  return {
    name: 'local',
    async insert(value) {
      insert.run(value);
    },
    async read(id) {
      if (read.get(id) === undefined) throw new Error(`local: row ${id} not found`);
    },
  };
}

/** Seeds the rows the reads hit, in one batch. */
async function seed(client: Client, local: Database.Database): Promise<void> {
  const rows = Array.from({ length: SEED_ROWS }, (_, i) => `seed-${i}`);
  await client.batch(
    rows.map((v) => ({ sql: INSERT, args: [v] })),
    'write',
  );
  const insert = local.prepare<[string]>(INSERT);
  local.transaction(() => {
    for (const v of rows) insert.run(v);
  })();
}

/** The follower reads from its copy: wait until the seeded rows reached it. */
async function waitForRows(client: Client, rows: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await client.execute('select count(*) as n from kv');
    if (Number(result.rows[0]?.n) >= rows) return;
    if (Date.now() > deadline) throw new Error(`the follower has not seen ${rows} rows`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Rotates the order of the sides per round: A B C, B C A, C A B, … */
function orderForRound<T>(roundIndex: number, sides: readonly T[]): T[] {
  const shift = roundIndex % sides.length;
  return [...sides.slice(shift), ...sides.slice(0, shift)];
}

function summary(samples: Samples) {
  const all = latencySummary(samples.all);
  return {
    stmtsPerSec: round(samples.all.length / (samples.busyMs / 1000), 1),
    msP50: all.p50,
    msP99: all.p99,
    insertMsP50: latencySummary(samples.insert).p50,
    insertMsP99: latencySummary(samples.insert).p99,
    readMsP50: latencySummary(samples.read).p50,
    readMsP99: latencySummary(samples.read).p99,
    statements: samples.all.length,
  };
}

async function main(): Promise<void> {
  const dir = makeTempDir('hrana');
  const loadBefore = machineLoad();
  log(
    `hrana: ${quick ? 'quick' : 'full'}, ${ROUNDS} rounds x ${OPS} statements per side ` +
      `(1 in ${WRITE_EVERY} an insert), load ${JSON.stringify(loadBefore)}, dir ${dir}`,
  );
  const config = {
    dir,
    db: DB,
    secret: 'a-cluster-secret-for-the-bench',
    authToken: AUTH_TOKEN,
    durability: 'replicated' as const,
  };
  const processes: ServeProcess[] = [];
  const clients: Client[] = [];
  const local = new Database(path.join(dir, 'local.db'));
  try {
    // The first process takes the lead; the second starts once it leads, so it follows.
    processes.push(await startServe(config, 'a'));
    const start = nowMs();
    for (;;) {
      if ((await processes[0]?.role()) === 'leader') break;
      if (nowMs() - start > 30_000) throw new Error('a did not take the lead');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    processes.push(await startServe(config, 'b'));
    const roles = await leaderAndFollower(processes);
    log(`${roles.leader.id} leads, ${roles.follower.id} follows`);
    const onLeader = createClient({ url: roles.leader.hrana, authToken: AUTH_TOKEN });
    const onFollower = createClient({ url: roles.follower.hrana, authToken: AUTH_TOKEN });
    clients.push(onLeader, onFollower);

    local.pragma('journal_mode = WAL');
    const localSynchronous = local.pragma('synchronous', { simple: true });
    local.exec(SCHEMA);
    await onLeader.execute(SCHEMA);
    await seed(onLeader, local);
    await waitForRows(onFollower, SEED_ROWS);

    const sides: Side[] = [
      hranaSide('leader', onLeader),
      hranaSide('follower', onFollower),
      localSide(local),
    ];
    for (const side of sides) await run(side, WARMUP_OPS, 1);

    const samples = Object.fromEntries(
      sides.map((side) => [side.name, { all: [], insert: [], read: [], busyMs: 0 }]),
    ) as unknown as Record<SideName, Samples>;
    const requestsBefore = await Promise.all([roles.leader.requests(), roles.follower.requests()]);
    for (let r = 0; r < ROUNDS; r++) {
      const perRound: string[] = [];
      for (const side of orderForRound(r, sides)) {
        const before = samples[side.name].busyMs;
        await run(side, OPS, 100 + r, samples[side.name]);
        perRound.push(
          `${side.name} ${round(OPS / ((samples[side.name].busyMs - before) / 1000), 0)}/s`,
        );
      }
      log(`round ${r + 1}/${ROUNDS}: ${perRound.join(', ')}`);
    }

    const requestsAfter = await Promise.all([roles.leader.requests(), roles.follower.requests()]);
    // What the measured statements cost in storage and lease-store requests, per node.
    const requests = Object.fromEntries(
      (['leader', 'follower'] as const).map((name, i) => {
        const before = requestsBefore[i] as { storage: number; lease: number };
        const now = requestsAfter[i] as { storage: number; lease: number };
        return [name, { storage: now.storage - before.storage, lease: now.lease - before.lease }];
      }),
    );
    const after = await leaderAndFollower(processes);
    const leadershipMoved = after.leader !== roles.leader;
    if (leadershipMoved) log('leadership moved during the run: the sides swapped roles');

    const leader = summary(samples.leader);
    const follower = summary(samples.follower);
    const localSummary = summary(samples.local);
    log(JSON.stringify({ leader, follower, local: localSummary }));
    emit({
      bench: 'hrana',
      quick,
      durability: config.durability,
      writeFraction: 1 / WRITE_EVERY,
      leaderRatio: round(leader.stmtsPerSec / localSummary.stmtsPerSec, 5),
      followerRatio: round(follower.stmtsPerSec / localSummary.stmtsPerSec, 5),
      leaderMsP50: leader.msP50,
      leaderMsP99: leader.msP99,
      followerMsP50: follower.msP50,
      followerMsP99: follower.msP99,
      localMsP50: localSummary.msP50,
      localMsP99: localSummary.msP99,
      leaderStmtsPerSec: leader.stmtsPerSec,
      followerStmtsPerSec: follower.stmtsPerSec,
      localStmtsPerSec: localSummary.stmtsPerSec,
      leader,
      follower,
      local: localSummary,
      /** Storage and lease-store requests each node made during the measured rounds. */
      requests,
      localSynchronous,
      leadershipMoved,
      loadBefore,
      loadAfter: machineLoad(),
    });
  } finally {
    for (const client of clients) client.close();
    local.close();
    // The follower first, so the leader's hand-over does not set off a take-over.
    for (const node of [...processes].reverse()) await node.stop();
    removeDir(dir);
  }
}

main().catch((error: unknown) => {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});
