/**
 * Write overhead of replication: plain better-sqlite3 (WAL, synchronous=NORMAL) versus a
 * SqliteLeader shipping every 100 ms to fs storage, side by side in one process.
 *
 * Two workloads: single-row autocommit inserts, and 100-row transactions. Each round runs both
 * sides for the same time window, in alternating order (A B, B A, ...); the ratios are medians
 * over rounds. Inserts go in chunks with `await new Promise(setImmediate)` between chunks on both
 * sides, so the leader's timer and its storage I/O get to run during the measurement.
 *
 * The HA side's time includes a final `leader.flush()` at the end of its window (the commits of
 * the last partial tick are shipped too), so every commit counted is durable in storage: the ratio
 * is conservative. The ratio without that drain is reported as well.
 *
 * `--always-compress` sets the leader's `lightCaptureBytes` to Infinity: every capture is
 * compressed, however little that saves.
 *
 *   npx tsx bench/write-overhead.ts [--quick] [--codec brotli|deflate-raw|none] [--always-compress]
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createFsStorage } from '../src/adapters/storage/fs.ts';
import { SqliteLeader } from '../src/replication/sqlite/leader.ts';
import { type ChangesetCodec, GENESIS_CHECKSUM } from '../src/wire/changeset.ts';
import {
  argValue,
  directoryBytes,
  emit,
  log,
  makeTempDir,
  median,
  nowMs,
  quick,
  removeDir,
  round,
  sidesForRound,
  yieldToLoop,
} from './lib.ts';

type Mode = 'autocommit' | 'batch';
type Side = 'plain' | 'ha';

const ROUNDS = quick ? 4 : 8;
const WINDOW_MS = quick ? 1200 : 3000;
const WARMUP_MS = quick ? 400 : 1000;
const SHIP_INTERVAL_MS = 100;
/** Rows per chunk between event-loop yields. */
const AUTOCOMMIT_CHUNK = 200;
const BATCH_ROWS = 100;
const BATCHES_PER_CHUNK = 5;
const VALUE_CHARS = 100;
/** The leader's default unless `--codec` names another. */
const codec = argValue('codec') as ChangesetCodec | undefined;
const alwaysCompress = process.argv.includes('--always-compress');

interface Target {
  db: Database.Database;
  insert: Database.Statement<[number, string]>;
  batch: (rows: number, start: number) => void;
}

interface WindowResult {
  ops: number;
  /** The insert window itself. */
  windowMs: number;
  /** Window plus the final drain (HA: `leader.flush()`; plain: 0). */
  totalMs: number;
  /** Time spent outside the insert loop during the window (yields: timers, I/O callbacks). */
  yieldMs: number;
  maxYieldMs: number;
  shippedBytes: number;
  changesets: number;
}

/**
 * 100-character values, base64 of random bytes. 2^18 distinct values (26 MB) so no codec finds a
 * value again within its window (brotli's is 4 MiB, deflate's 32 KiB): each row is new text.
 */
const VALUE_POOL = 1 << 18;
const values: string[] = (() => {
  const text = randomBytes((VALUE_POOL * VALUE_CHARS * 3) / 4).toString('base64');
  return Array.from({ length: VALUE_POOL }, (_, i) =>
    text.slice(i * VALUE_CHARS, (i + 1) * VALUE_CHARS),
  );
})();

function prepare(db: Database.Database): Target {
  db.exec(
    'CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL)',
  );
  const insert = db.prepare<[number, string]>('INSERT INTO t (k, v) VALUES (?, ?)');
  const batch = db.transaction((rows: number, start: number) => {
    for (let i = 0; i < rows; i++) {
      const n = start + i;
      insert.run(n, values[n % values.length] as string);
    }
  });
  return { db, insert, batch };
}

async function main(): Promise<void> {
  const dir = makeTempDir('write');
  const storageRoot = path.join(dir, 'storage');
  log(
    `write-overhead: ${quick ? 'quick' : 'full'}, ${ROUNDS} rounds x ${WINDOW_MS} ms per side per mode, dir ${dir}`,
  );

  const plainDb = new Database(path.join(dir, 'plain.db'));
  plainDb.pragma('journal_mode = WAL');
  plainDb.pragma('synchronous = NORMAL');
  const plain = prepare(plainDb);

  let shippedBytes = 0;
  let changesets = 0;
  let failureEvents = 0;
  let snapshots = 0;
  let snapshotBytes = 0;
  const leader = await SqliteLeader.open({
    path: path.join(dir, 'ha.db'),
    db: 'bench',
    storage: createFsStorage({ root: storageRoot }),
    prefix: 'bench',
    epoch: 1,
    position: { seq: 0, checksum: GENESIS_CHECKSUM },
    shipIntervalMs: SHIP_INTERVAL_MS,
    ...(codec ? { codec } : {}),
    ...(alwaysCompress ? { lightCaptureBytes: Number.POSITIVE_INFINITY } : {}),
    onEvent: (event) => {
      if (event.type === 'shipped') {
        shippedBytes += event.bytes;
        changesets += 1;
      } else if (event.type === 'snapshot') {
        // The leader's own periodic snapshots (its defaults), part of the HA cost.
        snapshots += 1;
        snapshotBytes += event.bytes;
        log(`leader snapshot at seq ${event.seq}: ${round(event.bytes / 1024 / 1024, 1)} MB`);
      } else if (event.type !== 'wal-restarted') {
        failureEvents += 1;
        log(`leader event: ${JSON.stringify(event)}`);
      }
    },
  });
  // Same pragmas as the plain side (the leader itself sets WAL and wal_autocheckpoint = 0).
  leader.database.pragma('synchronous = NORMAL');
  const ha = prepare(leader.database);
  await leader.flush();
  leader.start();

  const pragmas = {
    plain: {
      journal_mode: plainDb.pragma('journal_mode', { simple: true }),
      synchronous: plainDb.pragma('synchronous', { simple: true }),
      wal_autocheckpoint: plainDb.pragma('wal_autocheckpoint', { simple: true }),
    },
    ha: {
      journal_mode: leader.database.pragma('journal_mode', { simple: true }),
      synchronous: leader.database.pragma('synchronous', { simple: true }),
      wal_autocheckpoint: leader.database.pragma('wal_autocheckpoint', { simple: true }),
    },
  };
  log(`pragmas: ${JSON.stringify(pragmas)}`);

  let counter = 0;

  async function runWindow(side: Side, mode: Mode, windowMs: number): Promise<WindowResult> {
    const target = side === 'plain' ? plain : ha;
    const bytesBefore = shippedBytes;
    const changesetsBefore = changesets;
    let ops = 0;
    let yieldMs = 0;
    let maxYieldMs = 0;
    const start = nowMs();
    let now = start;
    while (now - start < windowMs) {
      if (mode === 'autocommit') {
        for (let i = 0; i < AUTOCOMMIT_CHUNK; i++) {
          const n = counter++;
          target.insert.run(n, values[n % values.length] as string);
        }
        ops += AUTOCOMMIT_CHUNK;
      } else {
        for (let b = 0; b < BATCHES_PER_CHUNK; b++) {
          target.batch(BATCH_ROWS, counter);
          counter += BATCH_ROWS;
        }
        ops += BATCHES_PER_CHUNK * BATCH_ROWS;
      }
      const beforeYield = nowMs();
      await yieldToLoop();
      now = nowMs();
      const gap = now - beforeYield;
      yieldMs += gap;
      if (gap > maxYieldMs) maxYieldMs = gap;
    }
    const windowEnd = nowMs();
    if (side === 'ha') await leader.flush();
    const end = nowMs();
    return {
      ops,
      windowMs: windowEnd - start,
      totalMs: end - start,
      yieldMs,
      maxYieldMs,
      shippedBytes: shippedBytes - bytesBefore,
      changesets: changesets - changesetsBefore,
    };
  }

  const summary: Record<string, unknown> = {};
  const ratios: Record<Mode, number> = { autocommit: Number.NaN, batch: Number.NaN };
  for (const mode of ['autocommit', 'batch'] as const) {
    // Warm-up, discarded: page cache, JIT, first WAL growth.
    await runWindow('plain', mode, WARMUP_MS);
    await runWindow('ha', mode, WARMUP_MS);
    const results: Record<Side, WindowResult[]> = { plain: [], ha: [] };
    const roundRatios: number[] = [];
    const roundRatiosNoDrain: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      for (const side of sidesForRound(r, 'plain' as Side, 'ha' as Side)) {
        results[side].push(await runWindow(side, mode, WINDOW_MS));
        // Let any leftover callbacks settle before the other side starts.
        await yieldToLoop();
      }
      const p = results.plain.at(-1) as WindowResult;
      const h = results.ha.at(-1) as WindowResult;
      const plainRate = p.ops / (p.totalMs / 1000);
      const haRate = h.ops / (h.totalMs / 1000);
      const haRateNoDrain = h.ops / (h.windowMs / 1000);
      roundRatios.push(haRate / plainRate);
      roundRatiosNoDrain.push(haRateNoDrain / plainRate);
      log(
        `${mode} round ${r + 1}/${ROUNDS}: plain ${Math.round(plainRate)} ops/s, ha ${Math.round(haRate)} ops/s ` +
          `(no drain ${Math.round(haRateNoDrain)}), ratio ${round(haRate / plainRate)}; ` +
          `ha shipped ${h.changesets} changesets ${round(h.shippedBytes / 1024 / 1024, 2)} MB, ` +
          `yield plain ${round(p.yieldMs, 1)} ms / ha ${round(h.yieldMs, 1)} ms (max ${round(h.maxYieldMs, 1)} ms), ` +
          `drain ${round(h.totalMs - h.windowMs, 1)} ms`,
      );
    }
    const rate = (w: WindowResult) => w.ops / (w.totalMs / 1000);
    const haOps = results.ha.reduce((s, w) => s + w.ops, 0);
    const haBytes = results.ha.reduce((s, w) => s + w.shippedBytes, 0);
    const haChangesets = results.ha.reduce((s, w) => s + w.changesets, 0);
    ratios[mode] = median(roundRatios);
    summary[mode] = {
      plainOpsPerSec: Math.round(median(results.plain.map(rate))),
      haOpsPerSec: Math.round(median(results.ha.map(rate))),
      haOpsPerSecNoDrain: Math.round(median(results.ha.map((w) => w.ops / (w.windowMs / 1000)))),
      ratio: round(ratios[mode]),
      ratioNoDrain: round(median(roundRatiosNoDrain)),
      roundRatios: roundRatios.map((x) => round(x)),
      haChangesets,
      haShippedMb: round(haBytes / 1024 / 1024, 2),
      haShippedBytesPerOp: round(haBytes / haOps, 1),
      haMedianYieldMsPerWindow: round(median(results.ha.map((w) => w.yieldMs)), 1),
      plainMedianYieldMsPerWindow: round(median(results.plain.map((w) => w.yieldMs)), 1),
      haMaxYieldMs: round(Math.max(...results.ha.map((w) => w.maxYieldMs)), 1),
      haMedianDrainMs: round(median(results.ha.map((w) => w.totalMs - w.windowMs)), 1),
    };
  }

  await leader.close();
  plainDb.close();
  const storageMb = directoryBytes(storageRoot) / 1024 / 1024;
  removeDir(dir);

  emit({
    bench: 'write-overhead',
    quick,
    autocommitRatio: round(ratios.autocommit),
    batchRatio: round(ratios.batch),
    targets: { autocommitRatio: 0.85, batchRatio: 0.9 },
    shippedBytes,
    shippedMb: round(shippedBytes / 1024 / 1024, 2),
    changesets,
    /** ship-failed, snapshot-failed, fenced... (none expected) */
    failureEvents,
    leaderSnapshots: snapshots,
    leaderSnapshotMb: round(snapshotBytes / 1024 / 1024, 1),
    storageMb: round(storageMb, 2),
    rounds: ROUNDS,
    windowMs: WINDOW_MS,
    shipIntervalMs: SHIP_INTERVAL_MS,
    codec: codec ?? 'default',
    alwaysCompress,
    autocommitChunkRows: AUTOCOMMIT_CHUNK,
    batchRows: BATCH_ROWS,
    pragmas,
    ...summary,
  });
}

await main();
