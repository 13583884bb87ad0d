/**
 * Many databases in one process, under node-level leases: spawn time, memory per idle
 * (hibernated) database, memory with many active, idle request rate, load versus plain
 * better-sqlite3 files, and node failover: the time until every database a lost node led has a
 * new leader, and until that leader can commit.
 *
 *   npx tsx --expose-gc bench/many-dbs.ts [--quick] [--failover-only N]
 *
 * `--failover-only N` measures only the node failovers, with N leaderships.
 *
 * Storage is a local folder. Node failover is measured twice: a node process SIGKILLed (the fs
 * lease store, shared by both processes), and a node cut off from an in-process lease store while
 * it keeps running beside the one taking over.
 */
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createFsLeaseStore } from '../src/adapters/lease/fs.ts';
import { MemoryLeaseStore } from '../src/adapters/lease/memory.ts';
import type { LeaseStore } from '../src/adapters/lease/types.ts';
import { createFsStorage } from '../src/adapters/storage/fs.ts';
import type { HadbDatabase } from '../src/api-types.ts';
import type { LeaseTiming } from '../src/machines/role.ts';
import { createNode, type HadbNode, type NodeOptions } from '../src/runtime/node.ts';
import {
  argValue,
  emit,
  log,
  makeTempDir,
  nowMs,
  percentile,
  quick,
  removeDir,
  round,
  yieldToLoop,
} from './lib.ts';
import { clusterConfig, startNodeProcess } from './support/cluster.ts';

const DATABASES = quick ? 1000 : 10_000;
const ACTIVE = quick ? 200 : 1000;
const failoverOnly = argValue('failover-only');
const FAILOVER_DATABASES = failoverOnly ? Number(failoverOnly) : quick ? 300 : 5000;
const IDLE_WINDOW_MS = quick ? 5000 : 20_000;
const LOAD_MS = quick ? 3000 : 10_000;
const SCHEMA = 'create table if not exists t(k integer primary key, v text)';
const TIMING: LeaseTiming = {
  ttlMs: 3000,
  renewIntervalMs: 600,
  retryIntervalMs: 150,
  pollIntervalMs: 500,
  marginMs: 300,
};
const SECRET = 'bench-secret-0123456789';
const HIBERNATE_AFTER_MS = 2000;

function rssMb(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss / 1024 / 1024;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function openMany(node: HadbNode, names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 100) {
    await Promise.all(names.slice(i, i + 100).map((name) => node.open(name)));
    if (i % 1000 === 0) log(`  opened ${i + 100} of ${names.length}`);
  }
}

function totalRequests(node: HadbNode): number {
  const counts = node.requestCounts() as unknown as Record<string, Record<string, number>>;
  let total = 0;
  const walk = (value: unknown) => {
    if (typeof value === 'number') total += value;
    else if (value && typeof value === 'object') for (const v of Object.values(value)) walk(v);
  };
  walk(counts);
  return total;
}

function nodeOptions(dir: string, id: string, leases: MemoryLeaseStore | LeaseStore): NodeOptions {
  return {
    id,
    secret: SECRET,
    dataDir: path.join(dir, id),
    storage: createFsStorage({ root: path.join(dir, 'storage') }),
    leases: leases instanceof MemoryLeaseStore ? leases.forNode(id) : leases,
    timing: TIMING,
    leaseScope: 'node',
    hibernateAfterMs: HIBERNATE_AFTER_MS,
    // Room for every active database to stay open: the load phase measures them open, not the LRU.
    maxOpenDatabases: ACTIVE + 100,
    durability: 'replicated',
  };
}

/** Many databases on one node: spawn, idle memory and requests, active memory, load. */
async function oneNode() {
  const dir = makeTempDir('many');
  const leases = new MemoryLeaseStore();
  const baseline = rssMb();
  const node = await createNode(nodeOptions(dir, 'solo', leases));
  const names = Array.from({ length: DATABASES }, (_, i) => `db${i}`);
  const started = nowMs();
  await openMany(node, names);
  const spawnMs = nowMs() - started;
  log(`spawned ${DATABASES} databases in ${Math.round(spawnMs)} ms`);
  // New leaders write their epoch-start records a few at a time after open() returns: the idle
  // window starts once every one of them can commit.
  while (!node.databases().every(writable)) await sleep(100);
  const settleMs = nowMs() - started - spawnMs;
  log(`all ${DATABASES} leaders writable ${Math.round(settleMs)} ms later`);
  await sleep(5000); // hibernation after 2 s, sweep every 1 s
  const idleRss = rssMb();
  const idleRssKbPerDb = ((idleRss - baseline) * 1024) / DATABASES;
  const before = totalRequests(node);
  const windowStart = nowMs();
  const cpuBefore = process.cpuUsage();
  await sleep(IDLE_WINDOW_MS);
  const cpu = process.cpuUsage(cpuBefore);
  const windowMs = nowMs() - windowStart;
  const idleRequestsPerSec = (totalRequests(node) - before) / (windowMs / 1000);
  const idleCpuPercent = ((cpu.user + cpu.system) / 1000 / windowMs) * 100;
  log(`idle: ${round(idleRssKbPerDb, 1)} KB per database, ${round(idleRequestsPerSec)} requests/s`);

  // Load: writes spread over ACTIVE random databases, against plain files doing the same.
  const active = names.slice(0, ACTIVE);
  const handles = await Promise.all(active.map((name) => node.open(name)));
  for (const db of handles) await db.execute(SCHEMA);
  // 'async' is the like-for-like comparison (acknowledged at the local commit, shipped within
  // 10 ms); 'replicated' waits for storage on every write and is reported beside it.
  const haWrites = await runLoad(async (i) => {
    const db = handles[Math.floor(Math.random() * handles.length)];
    await db?.execute('insert into t(v) values (?)', [`v${i}`], { durability: 'async' });
  });
  const replicatedWrites = await runLoad(async (i) => {
    const db = handles[Math.floor(Math.random() * handles.length)];
    await db?.execute('insert into t(v) values (?)', [`r${i}`], { durability: 'replicated' });
  });
  const activeRssMb = rssMb();
  await node.close();

  const plainDir = makeTempDir('many-plain');
  const plain = active.map((name) => {
    const db = new Database(path.join(plainDir, `${name}.db`));
    db.pragma('journal_mode = WAL');
    db.exec(SCHEMA);
    return db.prepare('insert into t(v) values (?)');
  });
  const plainWrites = await runLoad(async (i) => {
    plain[Math.floor(Math.random() * plain.length)]?.run(`v${i}`);
  });
  removeDir(plainDir);
  removeDir(dir);
  return {
    spawnMs: Math.round(spawnMs),
    settleMs: Math.round(settleMs),
    idleRssKbPerDb: round(idleRssKbPerDb, 1),
    idleRequestsPerSec: round(idleRequestsPerSec, 2),
    idleCpuPercent: round(idleCpuPercent, 1),
    activeRssMb: round(activeRssMb, 1),
    haWritesPerSec: Math.round(haWrites),
    replicatedWritesPerSec: Math.round(replicatedWrites),
    plainWritesPerSec: Math.round(plainWrites),
    loadRatio: round(haWrites / plainWrites),
  };
}

/** Writes per second with 16 writers in flight for LOAD_MS. */
async function runLoad(write: (i: number) => Promise<void>): Promise<number> {
  let done = 0;
  const deadline = nowMs() + LOAD_MS;
  const started = nowMs();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (nowMs() < deadline) {
        await write(done);
        done += 1;
        if (done % 64 === 0) await yieldToLoop();
      }
    }),
  );
  return done / ((nowMs() - started) / 1000);
}

/** True once this node can commit for `db` (its epoch-start record is in, its files are open). */
function writable(db: HadbDatabase): boolean {
  return db.writable;
}

/**
 * Times from `loseA()` until each of `onB` is claimed by b (its role event) and can commit there.
 * With HADB_BENCH_CPU_PROF=<dir>, a CPU profile of this process over that window goes to
 * `<dir>/takeover-<databases>-<time>.cpuprofile`.
 */
async function measureTakeover(onB: HadbDatabase[], loseA: () => void) {
  const profiling = await startProfile();
  const times: number[] = [];
  const writableTimes: number[] = [];
  const claimed = new Set<HadbDatabase>();
  const lostAt = nowMs();
  for (const db of onB) {
    db.on('role', ({ role }) => {
      if (role !== 'leader') return;
      times.push(nowMs() - lostAt);
      claimed.add(db);
    });
  }
  const watch = setInterval(() => {
    for (const db of claimed) {
      if (!writable(db)) continue;
      writableTimes.push(nowMs() - lostAt);
      claimed.delete(db);
    }
  }, 20);
  loseA();
  await waitUntil(() => writableTimes.length === onB.length, 180_000);
  clearInterval(watch);
  await profiling?.stop(`takeover-${onB.length}`);
  return {
    moved: times.length,
    p50: round(percentile(times, 50), 1),
    p99: round(percentile(times, 99), 1),
    writableP50: round(percentile(writableTimes, 50), 1),
    writableP99: round(percentile(writableTimes, 99), 1),
  };
}

async function startProfile() {
  const dir = process.env.HADB_BENCH_CPU_PROF;
  if (!dir) return null;
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(name: string) {
      const { profile } = await session.post('Profiler.stop');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `${name}-${Date.now()}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}

async function waitUntil(ok: () => boolean, ms: number): Promise<void> {
  const end = nowMs() + ms;
  while (!ok() && nowMs() < end) await sleep(20);
}

/** b opens `names` and waits until it follows every one. */
async function followAll(b: HadbNode, names: string[]): Promise<HadbDatabase[]> {
  await openMany(b, names);
  const onB = b.databases();
  await waitUntil(() => onB.every((db) => db.role === 'follower'), 60_000);
  return onB;
}

/**
 * The case: node a, in its own process, leads `count` databases; b (this process) follows
 * them all; a is SIGKILLed. Both use the local defaults: fs storage and the fs lease store.
 */
async function killedNodeFailover(count: number) {
  const dir = makeTempDir('many-killed');
  const config = { ...clusterConfig(dir), secret: SECRET, timing: TIMING };
  const names = Array.from({ length: count }, (_, i) => `k${i}`);
  const a = startNodeProcess(config, 'a');
  const leases = createFsLeaseStore({ path: path.join(dir, 'leases.sqlite') });
  try {
    const { leaders } = await a.call('openMany', {
      names,
      hibernateAfterMs: HIBERNATE_AFTER_MS,
      maxOpenDatabases: ACTIVE + 100,
    });
    if (leaders !== count) throw new Error(`a leads ${leaders} of ${count} databases`);
    const b = await createNode({
      ...nodeOptions(dir, 'b', leases),
      // Where the node process keeps its copies too (see node-process.ts).
      dataDir: path.join(dir, 'nodes', 'b'),
    });
    const onB = await followAll(b, names);
    const result = await measureTakeover(onB, () => a.kill());
    await b.close();
    return result;
  } finally {
    a.kill();
    await leases.close();
    removeDir(dir);
  }
}

/**
 * A partition: a leads `count` databases and is cut off from the (in-process) lease store while it
 * keeps running, so it stops all its leaders on the same two cores while b takes over.
 */
async function cutOffNodeFailover(count: number) {
  const dir = makeTempDir('many-failover');
  const leases = new MemoryLeaseStore();
  const a = await createNode(nodeOptions(dir, 'a', leases));
  const names = Array.from({ length: count }, (_, i) => `f${i}`);
  await openMany(a, names);
  // Leaders open their files a few at a time after open() returns: start from a settled a.
  await waitUntil(() => a.databases().every(writable), 120_000);
  const b = await createNode(nodeOptions(dir, 'b', leases));
  const onB = await followAll(b, names);
  const result = await measureTakeover(onB, () => leases.faults.cutOff('a'));
  leases.faults.heal('a');
  await Promise.allSettled([a.close(), b.close()]);
  removeDir(dir);
  return result;
}

const solo = failoverOnly ? {} : await oneNode();
log('killed node failover, 1 database');
const single = await killedNodeFailover(1);
log(`killed node failover, ${FAILOVER_DATABASES} databases`);
const many = await killedNodeFailover(FAILOVER_DATABASES);
log('cut-off node failover, 1 database');
const cutSingle = await cutOffNodeFailover(1);
log(`cut-off node failover, ${FAILOVER_DATABASES} databases`);
const cutMany = await cutOffNodeFailover(FAILOVER_DATABASES);
emit({
  databases: DATABASES,
  ...solo,
  singleFailoverMs: single.p50,
  failoverDatabases: FAILOVER_DATABASES,
  moved: many.moved,
  nodeFailoverMsP50: many.p50,
  nodeFailoverMsP99: many.p99,
  failoverRatioP99: round(many.p99 / single.p50),
  // Until the new leader can commit (its epoch-start record is in storage).
  singleFailoverWritableMs: single.writableP50,
  nodeFailoverWritableMsP50: many.writableP50,
  nodeFailoverWritableMsP99: many.writableP99,
  writableRatioP99: round(many.writableP99 / single.writableP50),
  // The same with a cut off from the lease store but still running (stepping down) beside b.
  cutOffSingleFailoverMs: cutSingle.p50,
  cutOffNodeFailoverMsP99: cutMany.p99,
  cutOffFailoverRatioP99: round(cutMany.p99 / cutSingle.p50),
  cutOffSingleWritableMs: cutSingle.writableP50,
  cutOffWritableMsP99: cutMany.writableP99,
  cutOffWritableRatioP99: round(cutMany.writableP99 / cutSingle.writableP50),
  leaseTiming: TIMING,
});
process.exit(0);
