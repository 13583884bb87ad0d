/**
 * Group commit: throughput of 'replicated' writes (each returns once the changeset holding it is
 * durable in storage) as a ratio to 'async' writes (each returns at the local commit), with 1, 16
 * and 64 concurrent writers on the leader.
 *
 * One node, in this process: the measured path is the embedded API on the leader (`execute()`,
 * the local commit, the leader's shipping to fs storage), which runs in the application's process
 * by design; no other node takes part in a 'replicated' write. Storage and the lease store are on
 * the local filesystem in a temp folder.
 *
 * Each writer runs `await db.execute(insert, …, { durability })` in a loop until the window ends,
 * yielding to the event loop (setImmediate) after each write, as a write arriving with its own
 * request would: an 'async' write resolves through microtasks only, so a loop that never yields
 * starves the leader's timers (shipping, lease renewal) for the whole window. The window's time
 * runs until the last write started in it has resolved. Rounds alternate the
 * side that goes first; before each window the leader is drained (a replicated no-op write,
 * untimed), so neither side inherits the other's backlog. The ratios are medians over rounds of
 * (replicated writes/s ÷ async writes/s) in the same round; 'async' is counted without a final
 * drain, as the application sees it (its drain time is reported separately).
 *
 *   npx tsx bench/group-commit.ts [--quick]
 */
import path from 'node:path';
import { createFsLeaseStore } from '../src/adapters/lease/fs.ts';
import { createFsStorage } from '../src/adapters/storage/fs.ts';
import type { Durability } from '../src/api-types.ts';
import { createNode } from '../src/runtime/node.ts';
import {
  directoryBytes,
  emit,
  latencySummary,
  log,
  machineLoad,
  makeTempDir,
  median,
  nowMs,
  quick,
  removeDir,
  round,
  sidesForRound,
  yieldToLoop,
} from './lib.ts';
import { BENCH_TIMING } from './support/protocol.ts';

const CONCURRENCY = [1, 16, 64] as const;
const ROUNDS = quick ? 4 : 8;
const WINDOW_MS = quick ? 1200 : 3000;
const WARMUP_MS = quick ? 300 : 1000;
const VALUE_CHARS = 100;

const SCHEMA =
  'create table if not exists gc (id integer primary key, k integer not null, v text not null)';
const INSERT = 'insert into gc (k, v) values (?, ?)';

interface WindowResult {
  ops: number;
  ms: number;
  /** Changesets shipped during the window (the leader's position moved by this much). */
  changesets: number;
  latencies: number[];
  /** Time to make everything written durable afterwards (the untimed drain). */
  drainMs: number;
}

const values = Array.from({ length: 1024 }, (_, i) =>
  (`${i}`.repeat(VALUE_CHARS) + Math.random().toString(36)).slice(0, VALUE_CHARS),
);

async function main(): Promise<void> {
  const dir = makeTempDir('group-commit');
  const loadBefore = machineLoad();
  log(
    `group-commit: ${quick ? 'quick' : 'full'}, ${ROUNDS} rounds x ${WINDOW_MS} ms per side per concurrency, load ${JSON.stringify(loadBefore)}, dir ${dir}`,
  );
  // hadb's timers are unref'd and this node has no listener: a write waiting only on a retry
  // timer (seen while the lease was being renewed late) would let the process exit mid-run.
  const keepAlive = setInterval(() => {}, 1000);
  const leases = createFsLeaseStore({ path: path.join(dir, 'leases.sqlite') });
  const node = await createNode({
    id: 'leader',
    secret: 'group-commit-bench-secret',
    dataDir: path.join(dir, 'node'),
    storage: createFsStorage({ root: path.join(dir, 'storage') }),
    leases,
    timing: BENCH_TIMING,
    listen: false,
  });
  const db = await node.open('bench', { schema: SCHEMA });
  const started = nowMs();
  while (db.role !== 'leader') {
    if (nowMs() - started > 30_000) throw new Error(`not leader after 30 s: ${db.role}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }

  let counter = 0;
  const drain = async (): Promise<number> => {
    const before = nowMs();
    await db.execute('delete from gc where 0', [], { durability: 'replicated' });
    return nowMs() - before;
  };

  async function runWindow(
    durability: Durability,
    writers: number,
    windowMs: number,
  ): Promise<WindowResult> {
    await drain();
    const seqBefore = db.position.seq;
    const latencies: number[] = [];
    const start = nowMs();
    const deadline = start + windowMs;
    const writer = async () => {
      while (nowMs() < deadline) {
        const k = counter++;
        const before = nowMs();
        await db.execute(INSERT, [k, values[k % values.length] as string], { durability });
        latencies.push(nowMs() - before);
        await yieldToLoop();
      }
    };
    await Promise.all(Array.from({ length: writers }, writer));
    const ms = nowMs() - start;
    const changesets = db.position.seq - seqBefore;
    const drainMs = await drain();
    return { ops: latencies.length, ms, changesets, latencies, drainMs };
  }

  const byConcurrency: Record<string, unknown> = {};
  const ratios: Record<number, number> = {};
  for (const writers of CONCURRENCY) {
    await runWindow('async', writers, WARMUP_MS);
    await runWindow('replicated', writers, WARMUP_MS);
    const results: Record<Durability, WindowResult[]> = { async: [], replicated: [] };
    const roundRatios: number[] = [];
    const roundRatiosDrained: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      for (const side of sidesForRound(r, 'async' as Durability, 'replicated' as Durability)) {
        results[side].push(await runWindow(side, writers, WINDOW_MS));
      }
      const a = results.async.at(-1) as WindowResult;
      const p = results.replicated.at(-1) as WindowResult;
      const asyncRate = a.ops / (a.ms / 1000);
      const replicatedRate = p.ops / (p.ms / 1000);
      roundRatios.push(replicatedRate / asyncRate);
      roundRatiosDrained.push(replicatedRate / (a.ops / ((a.ms + a.drainMs) / 1000)));
      log(
        `${writers} writers, round ${r + 1}/${ROUNDS}: async ${Math.round(asyncRate)}/s ` +
          `(${round(a.ops / Math.max(1, a.changesets), 1)} writes/changeset), replicated ${Math.round(replicatedRate)}/s ` +
          `(${round(p.ops / Math.max(1, p.changesets), 1)} writes/changeset), ratio ${round(replicatedRate / asyncRate, 4)}`,
      );
    }
    const rate = (w: WindowResult) => w.ops / (w.ms / 1000);
    const perChangeset = (ws: WindowResult[]) =>
      round(
        ws.reduce((s, w) => s + w.ops, 0) /
          Math.max(
            1,
            ws.reduce((s, w) => s + w.changesets, 0),
          ),
        2,
      );
    ratios[writers] = median(roundRatios);
    byConcurrency[writers] = {
      asyncWritesPerSec: Math.round(median(results.async.map(rate))),
      replicatedWritesPerSec: Math.round(median(results.replicated.map(rate))),
      ratio: round(ratios[writers], 4),
      /** Async counted until its writes were durable too (the drain after the window). */
      ratioVsAsyncDrained: round(median(roundRatiosDrained), 4),
      roundRatios: roundRatios.map((x) => round(x, 4)),
      asyncWritesPerChangeset: perChangeset(results.async),
      replicatedWritesPerChangeset: perChangeset(results.replicated),
      asyncDrainMsMedian: round(median(results.async.map((w) => w.drainMs)), 2),
      asyncLatencyMs: latencySummary(results.async.flatMap((w) => w.latencies)),
      replicatedLatencyMs: latencySummary(results.replicated.flatMap((w) => w.latencies)),
    };
    log(`${writers} writers: ${JSON.stringify(byConcurrency[writers])}`);
  }

  const position = db.position;
  await node.close();
  await leases.close();
  clearInterval(keepAlive);
  const storageMb = directoryBytes(path.join(dir, 'storage')) / 1024 / 1024;
  removeDir(dir);

  emit({
    bench: 'group-commit',
    quick,
    ratio1: round(ratios[1] as number, 4),
    ratio16: round(ratios[16] as number, 4),
    ratio64: round(ratios[64] as number, 4),
    byConcurrency,
    rounds: ROUNDS,
    windowMs: WINDOW_MS,
    writes: counter,
    changesets: position.seq,
    storageMb: round(storageMb, 1),
    processes: 'one node in this process (leader only)',
    load: { before: loadBefore, after: machineLoad() },
  });
}

await main();
