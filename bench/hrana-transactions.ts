/**
 * Interactive transactions over Hrana: `client.transaction('write')` with a point read, an insert
 * and COMMIT, one after the other, sent with @libsql/client to a leader and relayed by a follower
 * (two `hadb serve` processes on fs storage and fs leases, `replicated` durability), and the same
 * transaction on a local better-sqlite3 file in WAL mode. Rounds rotate the order of the sides.
 * Reported per side: transactions per second and per-transaction latency; `leaderRatio` and
 * `followerRatio` are that side's throughput ÷ the local throughput.
 *
 *   npx tsx bench/hrana-transactions.ts [--quick]
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

const ROUNDS = quick ? 3 : 8;
const TRANSACTIONS = quick ? 60 : 200;
const WARMUP = 20;
const AUTH_TOKEN = 'bench-client-token';
const SCHEMA = 'create table if not exists kv (id integer primary key, v text not null)';
const READ = 'select v from kv where id = ?';
const INSERT = 'insert into kv (v) values (?)';

interface Side {
  name: 'leader' | 'follower' | 'local';
  transaction(i: number): Promise<void>;
}

function hranaSide(name: 'leader' | 'follower', client: Client): Side {
  return {
    name,
    async transaction(i) {
      const tx = await client.transaction('write');
      try {
        await tx.execute({ sql: READ, args: [1 + (i % 100)] });
        await tx.execute({ sql: INSERT, args: [`value-${i}`] });
        await tx.commit();
      } finally {
        tx.close();
      }
    },
  };
}

function localSide(local: Database.Database): Side {
  const read = local.prepare(READ);
  const insert = local.prepare(INSERT);
  const run = local.transaction((i: number) => {
    read.get(1 + (i % 100));
    insert.run(`value-${i}`);
  });
  return {
    name: 'local',
    async transaction(i) {
      run.immediate(i);
    },
  };
}

async function main(): Promise<void> {
  const dir = makeTempDir('hrana-transactions');
  log(`hrana-transactions: ${ROUNDS} rounds x ${TRANSACTIONS} per side, dir ${dir}`);
  const config = {
    dir,
    db: 'bench',
    secret: 'a-cluster-secret-for-the-bench',
    authToken: AUTH_TOKEN,
    durability: 'replicated' as const,
  };
  const processes: ServeProcess[] = [];
  const clients: Client[] = [];
  const local = new Database(path.join(dir, 'local.db'));
  try {
    processes.push(await startServe(config, 'a'));
    const start = nowMs();
    while ((await processes[0]?.role()) !== 'leader') {
      if (nowMs() - start > 30_000) throw new Error('a did not take the lead');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    processes.push(await startServe(config, 'b'));
    const roles = await leaderAndFollower(processes);
    const onLeader = createClient({ url: roles.leader.hrana, authToken: AUTH_TOKEN });
    const onFollower = createClient({ url: roles.follower.hrana, authToken: AUTH_TOKEN });
    clients.push(onLeader, onFollower);
    local.pragma('journal_mode = WAL');
    local.exec(SCHEMA);
    await onLeader.execute(SCHEMA);
    for (let i = 0; i < 100; i++) {
      await onLeader.execute({ sql: INSERT, args: [`seed-${i}`] });
      local.prepare(INSERT).run(`seed-${i}`);
    }
    const sides = [
      hranaSide('leader', onLeader),
      hranaSide('follower', onFollower),
      localSide(local),
    ];
    for (const side of sides) for (let i = 0; i < WARMUP; i++) await side.transaction(i);
    const samples: Record<Side['name'], number[]> = { leader: [], follower: [], local: [] };
    for (let r = 0; r < ROUNDS; r++) {
      const order = [...sides.slice(r % sides.length), ...sides.slice(0, r % sides.length)];
      for (const side of order) {
        for (let i = 0; i < TRANSACTIONS; i++) {
          const began = nowMs();
          await side.transaction(r * TRANSACTIONS + i);
          samples[side.name].push(nowMs() - began);
        }
      }
      log(`round ${r + 1}/${ROUNDS}`);
    }
    const perSec = (values: number[]) =>
      values.length / (values.reduce((sum, value) => sum + value, 0) / 1000);
    const localPerSec = perSec(samples.local);
    emit({
      bench: 'hrana-transactions',
      quick,
      machine: machineLoad(),
      leaderRatio: round(perSec(samples.leader) / localPerSec, 5),
      followerRatio: round(perSec(samples.follower) / localPerSec, 5),
      leaderTxPerSec: round(perSec(samples.leader), 1),
      followerTxPerSec: round(perSec(samples.follower), 1),
      localTxPerSec: round(localPerSec, 1),
      leaderMs: latencySummary(samples.leader),
      followerMs: latencySummary(samples.follower),
    });
  } finally {
    for (const client of clients) client.close();
    await Promise.allSettled(processes.map((process) => process.stop()));
    local.close();
    removeDir(dir);
  }
}

await main();
