/**
 * Many databases in one process, under node-level leases: spawn time, memory per idle
 * (hibernated) database, memory with many active, idle request rate, load versus plain
 * better-sqlite3 files, and the time until every database a cut-off node led has a new leader.
 *
 *   npx tsx --expose-gc bench/many-dbs.ts [--quick]
 *
 * Storage is a local folder; the lease store is in-process (so one node can be cut off from it).
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import type { HadbDatabase } from '../src/actors/hosted-database.ts';
import { createNode, type HadbNode, type NodeOptions } from '../src/actors/node.ts';
import { MemoryLeaseStore } from '../src/adapters/lease/memory.ts';
import { createFsStorage } from '../src/adapters/storage/fs.ts';
import type { LeaseTiming } from '../src/machines/role.ts';
import {
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

const DATABASES = quick ? 1000 : 10_000;
const ACTIVE = quick ? 200 : 1000;
const FAILOVER_DATABASES = quick ? 300 : 5000;
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

function nodeOptions(dir: string, id: string, leases: MemoryLeaseStore): NodeOptions {
  return {
    id,
    secret: SECRET,
    dataDir: path.join(dir, id),
    storage: createFsStorage({ root: path.join(dir, 'storage') }),
    leases: leases.forNode(id),
    timing: TIMING,
    leaseScope: 'node',
    hibernateAfterMs: 2000,
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
  return (db as HadbDatabase & { readonly writable?: boolean }).writable === true;
}

/**
 * Two nodes; `count` databases led by a; a is cut off from the lease store: time until each has a
 * new leader (its ownership claimed: the role event) and until that leader can commit.
 */
async function nodeFailover(count: number) {
  const dir = makeTempDir('many-failover');
  const leases = new MemoryLeaseStore();
  const a = await createNode(nodeOptions(dir, 'a', leases));
  const names = Array.from({ length: count }, (_, i) => `f${i}`);
  await openMany(a, names);
  const waitUntil = async (ok: () => boolean, ms: number) => {
    const end = nowMs() + ms;
    while (!ok() && nowMs() < end) await sleep(20);
  };
  // Leaders open their files a few at a time after open() returns: start from a settled a.
  await waitUntil(() => a.databases().every(writable), 120_000);
  const b = await createNode(nodeOptions(dir, 'b', leases));
  await openMany(b, names);
  const onB = b.databases();
  await waitUntil(() => onB.every((db) => db.role === 'follower'), 30_000);
  const times: number[] = [];
  const writableTimes: number[] = [];
  const claimed = new Set<HadbDatabase>();
  const cutAt = nowMs();
  for (const db of onB) {
    db.on('role', ({ role }) => {
      if (role !== 'leader') return;
      times.push(nowMs() - cutAt);
      claimed.add(db);
    });
  }
  const watch = setInterval(() => {
    for (const db of claimed) {
      if (!writable(db)) continue;
      writableTimes.push(nowMs() - cutAt);
      claimed.delete(db);
    }
  }, 20);
  leases.faults.cutOff('a');
  await waitUntil(() => writableTimes.length === count, 180_000);
  clearInterval(watch);
  const result = {
    moved: times.length,
    p50: round(percentile(times, 50), 1),
    p99: round(percentile(times, 99), 1),
    writableP50: round(percentile(writableTimes, 50), 1),
    writableP99: round(percentile(writableTimes, 99), 1),
  };
  leases.faults.heal('a');
  await Promise.allSettled([a.close(), b.close()]);
  removeDir(dir);
  return result;
}

const solo = await oneNode();
log('node failover, 1 database');
const single = await nodeFailover(1);
log(`node failover, ${FAILOVER_DATABASES} databases`);
const many = await nodeFailover(FAILOVER_DATABASES);
emit({
  databases: DATABASES,
  ...solo,
  singleFailoverMs: single.p50,
  failoverDatabases: FAILOVER_DATABASES,
  moved: many.moved,
  nodeFailoverMsP50: many.p50,
  nodeFailoverMsP99: many.p99,
  failoverRatioP99: round(many.p99 / single.p50),
  // Until the new leader can commit (its epoch-start record written, its files reopened).
  singleFailoverWritableMs: single.writableP50,
  nodeFailoverWritableMsP50: many.writableP50,
  nodeFailoverWritableMsP99: many.writableP99,
  writableRatioP99: round(many.writableP99 / single.writableP50),
  leaseTiming: TIMING,
});
process.exit(0);
