/**
 * Resource attacks of a client holding the token against two `hadb serve` processes on loopback
 * (fs storage, fs leases; the hostile suite's harness, test/hostile/support/cluster.ts), one
 * fresh cluster per attack so each process's peak memory is the attack's own. Reported per
 * attack: what the client got (ok, or the error code: a refusal is a valid outcome), the serve
 * processes' peak RSS (VmHWM of /proc/<pid>/status, and the peak of each process plus its
 * children, sampled every 100 ms), the RSS still held 1.5 s after, `/health` latency p50/p99/max
 * polled throughout, and whether any lease was lost (leader or epoch changed, or any role
 * transition during the attack).
 *
 *   npx tsx bench/attacks.ts [--quick] [--only name,name]
 */
import type { Client } from '@libsql/client';
import {
  type AttackReport,
  codeOf,
  getWithBody,
  type HostileCluster,
  hostileCluster,
  pipeline,
  pipelineOutcome,
  writeLoad,
} from '../test/hostile/support/cluster.ts';
import { argValue, emit, log, machineLoad, percentile, quick, round } from './lib.ts';

interface Attack {
  name: string;
  /** Serve flags for this attack's cluster only. */
  flags?: string[];
  run(cluster: HostileCluster, clients: { leader: Client; follower: Client }): Promise<unknown>;
}

const COUNT_TO = 30_000_000;
const LONG_CTE = `with recursive c(x) as (select 1 union all select x + 1 from c where x < ${COUNT_TO}) select count(*) as n from c`;

/** ok, or the error code (or name) a client call ended with. */
async function outcomeOf(attempt: () => Promise<unknown>): Promise<string> {
  try {
    await attempt();
    return 'ok';
  } catch (error) {
    return codeOf(error) ?? (error instanceof Error ? error.name : String(error));
  }
}

/** How many of `outcomes` were each outcome. */
function tally(outcomes: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const outcome of outcomes) counts[outcome] = (counts[outcome] ?? 0) + 1;
  return counts;
}

const ATTACKS: Attack[] = [
  {
    name: 'longCte',
    run: async (_, { leader }) => ({ read: await outcomeOf(() => leader.execute(LONG_CTE)) }),
  },
  {
    name: 'longCteInTransaction',
    run: async (_, { leader }) => ({
      inWriteTransaction: await outcomeOf(async () => {
        const tx = await leader.transaction('write');
        try {
          await tx.execute(LONG_CTE);
          await tx.commit();
        } finally {
          tx.close();
        }
      }),
    }),
  },
  {
    name: 'zeroblob4',
    run: async (cluster) => {
      const url = `${(await cluster.leaderOf('app')).hrana}/app/v3/pipeline`;
      const outcomes = await Promise.all(
        [1, 2, 3, 4].map(() =>
          pipeline(
            url,
            {
              baton: null,
              requests: [
                { type: 'execute', stmt: { sql: 'select zeroblob(250000000) as z' } },
                { type: 'close' },
              ],
            },
            quick ? 60_000 : 180_000,
          ).then(pipelineOutcome, (error: unknown) =>
            error instanceof Error ? error.name : String(error),
          ),
        ),
      );
      return tally(outcomes);
    },
  },
  {
    name: 'healthBodies60MB',
    run: async (cluster) => {
      const body = Buffer.alloc(60 * 1000 * 1000, 0x78);
      const target = await cluster.leaderOf('app');
      const statuses = await Promise.all(
        Array.from({ length: quick ? 5 : 10 }, () => getWithBody(`${target.peer}/health`, body)),
      );
      return tally(statuses);
    },
  },
  {
    name: 'bigSql12MB',
    run: async (_, { leader }) => {
      const filler = 'x'.repeat(12 * 1000 * 1000);
      const outcomes: string[] = [];
      for (let i = 0; i < (quick ? 20 : 40); i++) {
        outcomes.push(await outcomeOf(() => leader.execute(`select ${i}, length('${filler}')`)));
      }
      return tally(outcomes);
    },
  },
  {
    name: 'manyStreams',
    // Idle streams kept a minute, so they pile up.
    flags: ['--transaction-timeout', '60'],
    run: async (cluster) => {
      const url = `${(await cluster.leaderOf('app')).hrana}/app/v3/pipeline`;
      const limit = quick ? 3000 : 10_001;
      let opened = 0;
      let refusal: string | null = null;
      const opener = async () => {
        while (refusal === null && opened < limit) {
          opened++;
          const outcome = await pipeline(url, {
            baton: null,
            requests: [{ type: 'store_sql', sql_id: 1, sql: 'select 1' }],
          }).then(pipelineOutcome, (error: unknown) => String(error));
          if (outcome !== 'ok') refusal = outcome;
        }
      };
      await Promise.all(Array.from({ length: 32 }, opener));
      return { opened, refusal };
    },
  },
  {
    name: 'storedSql',
    run: async (cluster) => {
      const url = `${(await cluster.leaderOf('app')).hrana}/app/v3/pipeline`;
      const sql = `select '${'y'.repeat(1000 * 1000)}'`;
      let baton: string | null = null;
      let storedMb = 0;
      for (let request = 0; request < (quick ? 10 : 17); request++) {
        const answer = await pipeline(url, {
          baton,
          requests: Array.from({ length: 15 }, (_, i) => ({
            type: 'store_sql',
            sql_id: request * 15 + i,
            sql,
          })),
        });
        const outcome = pipelineOutcome(answer);
        if (outcome !== 'ok') return { storedMb, refusal: outcome };
        storedMb += 15;
        baton = answer.body.baton ?? null;
      }
      return { storedMb, refusal: null };
    },
  },
  {
    name: 'lockingModeExclusive',
    run: async (_, { leader }) => ({
      pragma: await outcomeOf(() => leader.execute('PRAGMA locking_mode=EXCLUSIVE')),
      writeLoadAfter: await outcomeOf(() => writeLoad(leader, quick ? 800 : 1200)),
    }),
  },
];

function summarize(report: AttackReport<unknown>, durationMs: number) {
  const ids = Object.keys(report.hwmAfterMb);
  const max = (values: number[]) => round(Math.max(...values), 1);
  const leaseLost =
    report.leadershipAfter === null ||
    JSON.stringify(report.leadershipAfter) !== JSON.stringify(report.leadershipBefore) ||
    report.transitionsDuring.length > 0;
  return {
    outcome: report.outcome.ok
      ? report.outcome.value
      : { error: codeOf(report.outcome.error) ?? String(report.outcome.error) },
    durationMs: Math.round(durationMs),
    rssBeforeMb: max(ids.map((id) => report.rssBeforeMb[id] ?? 0)),
    /** The serve process's own peak (VmHWM), the highest of the two nodes. */
    peakRssMb: max(ids.map((id) => report.hwmAfterMb[id] ?? 0)),
    peakRssGrowthMb: max(
      ids.map((id) => (report.hwmAfterMb[id] ?? 0) - (report.hwmBeforeMb[id] ?? 0)),
    ),
    /** With the serve process's children (statement runners), sampled. */
    treePeakRssMb: max(ids.map((id) => report.peakRssMb[id] ?? 0)),
    keptRssMb: max(ids.map((id) => (report.rssAfterMb[id] ?? 0) - (report.rssBeforeMb[id] ?? 0))),
    healthMs: {
      p50: round(percentile(report.health, 50), 1),
      p99: round(percentile(report.health, 99), 1),
      max: round(Math.max(...report.health), 1),
      count: report.health.length,
    },
    leaseLost,
    transitions: report.transitionsDuring.length,
  };
}

async function main(): Promise<void> {
  const only = argValue('only')?.split(',');
  const results: Record<string, unknown> = {};
  for (const attack of ATTACKS) {
    if (only && !only.includes(attack.name)) continue;
    log(`attack ${attack.name}…`);
    const cluster = hostileCluster(`bench-${attack.name}`, attack.flags ?? []);
    try {
      await cluster.start();
      const leaderNode = await cluster.leaderOf('app');
      const followerNode = await cluster.followerOf('app');
      const clients = {
        leader: cluster.client(leaderNode, 'app'),
        follower: cluster.client(followerNode, 'app'),
      };
      // A table to write to, and warm connections, before the baseline is read.
      await clients.leader.execute('create table if not exists warm(x)');
      await clients.follower.execute('insert into warm(x) values (1)');
      const started = performance.now();
      const report = await cluster.underAttack(() => attack.run(cluster, clients));
      results[attack.name] = summarize(report, performance.now() - started);
      log(`  ${JSON.stringify(results[attack.name])}`);
    } catch (error) {
      // The bench reports a broken run instead of dying: the other attacks still run.
      results[attack.name] = { error: error instanceof Error ? error.message : String(error) };
      log(`  failed: ${String(error)}`);
    } finally {
      await cluster.dispose();
    }
  }
  emit({ bench: 'attacks', quick, machine: machineLoad(), attacks: results });
}

await main();
