/**
 * Restore throughput and memory: a database of blobs (200 MB; --quick 50 MB) is built through a
 * SqliteLeader shipping to fs storage, `leader.snapshot()` is taken, then `restoreDatabase` to a new
 * path is timed against `fs.copyFileSync` of the database file.
 *
 * Each restore and each copy runs in its own child process (this file with `--child`), which
 * times itself and reports its peak RSS (VmHWM from /proc/self/status), so the peak belongs to the
 * restore alone and process start-up is not timed. Restore and copy alternate (R C, C R, ...);
 * ratios are medians of per-round ratios. The restored file is checked against the source file.
 *
 *   npx tsx bench/restore.ts [--quick]
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { createFsStorage } from '../src/adapters/storage/fs.ts';
import { restoreDatabase } from '../src/replication/restore.ts';
import { FOLLOWER_OWNED_HEADER_BYTES } from '../src/replication/sqlite/apply.ts';
import { SqliteLeader } from '../src/replication/sqlite/leader.ts';
import { GENESIS_CHECKSUM } from '../src/wire/changeset.ts';
import {
  directoryBytes,
  emit,
  log,
  MB,
  makeTempDir,
  mbPerSec,
  median,
  nowMs,
  procStatusMb,
  quick,
  removeDatabaseFiles,
  removeDir,
  round,
  sidesForRound,
} from './lib.ts';

const TARGET_MB = quick ? 50 : 200;
const ROUNDS = quick ? 3 : 5;
/** 16 KiB blobs of hex text: about 2:1 compressible, like much real data. */
const BLOB_BYTES = 16 * 1024;
const BLOBS_PER_TRANSACTION = 64;
const FLUSH_EVERY_BYTES = 16 * MB;
const DB = 'bench';
const PREFIX = 'bench';

type Side = 'restore' | 'copy';

interface ChildArgs {
  mode: Side;
  storageRoot: string;
  source: string;
  dest: string;
}

interface ChildResult {
  mode: Side;
  ms: number;
  /** copy only: copyFileSync then fsync of the copy. */
  msWithFsync?: number;
  rssBeforeMb: number;
  peakRssMb: number;
  /** Peak RSS sampled every 10 ms during the timed work (cross-check of VmHWM). */
  sampledPeakRssMb: number;
  bytes: number;
  changesetsApplied?: number;
}

async function child(args: ChildArgs): Promise<void> {
  const rssBeforeMb = procStatusMb('VmRSS');
  let sampledPeak = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, process.memoryUsage().rss);
  }, 10);
  let result: ChildResult;
  if (args.mode === 'restore') {
    const start = nowMs();
    const restored = await restoreDatabase({
      storage: createFsStorage({ root: args.storageRoot }),
      prefix: PREFIX,
      db: DB,
      destPath: args.dest,
    });
    const ms = nowMs() - start;
    result = {
      mode: 'restore',
      ms,
      rssBeforeMb,
      peakRssMb: procStatusMb('VmHWM'),
      sampledPeakRssMb: 0,
      bytes: fs.statSync(args.dest).size,
      changesetsApplied: restored.changesetsApplied,
    };
  } else {
    const start = nowMs();
    fs.copyFileSync(args.source, args.dest);
    const ms = nowMs() - start;
    const fd = fs.openSync(args.dest, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    result = {
      mode: 'copy',
      ms,
      msWithFsync: nowMs() - start,
      rssBeforeMb,
      peakRssMb: procStatusMb('VmHWM'),
      sampledPeakRssMb: 0,
      bytes: fs.statSync(args.dest).size,
    };
  }
  clearInterval(sampler);
  result.sampledPeakRssMb = Math.max(sampledPeak, process.memoryUsage().rss) / MB;
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function runChild(args: ChildArgs): ChildResult {
  const script = fileURLToPath(import.meta.url);
  const out = spawnSync(
    process.execPath,
    [...process.execArgv, script, '--child', JSON.stringify(args)],
    { encoding: 'utf8', maxBuffer: 16 * MB },
  );
  if (out.status !== 0) {
    throw new Error(`child ${args.mode} failed (${out.status}): ${out.stderr}`);
  }
  const last = out.stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(last) as ChildResult;
}

async function buildDatabase(
  file: string,
  storageRoot: string,
): Promise<{
  snapshotMs: number;
  buildMs: number;
  rawMb: number;
  storedMb: number;
  changesets: number;
}> {
  let changesets = 0;
  const leader = await SqliteLeader.open({
    path: file,
    db: DB,
    storage: createFsStorage({ root: storageRoot }),
    prefix: PREFIX,
    epoch: 1,
    position: { seq: 0, checksum: GENESIS_CHECKSUM },
    onEvent: (event) => {
      if (event.type === 'shipped') changesets += 1;
    },
  });
  const buildStart = nowMs();
  leader.database.pragma('synchronous = NORMAL');
  leader.database.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)');
  const insert = leader.database.prepare<[Buffer]>('INSERT INTO blobs (data) VALUES (?)');
  const insertMany = leader.database.transaction((count: number) => {
    for (let i = 0; i < count; i++) {
      insert.run(Buffer.from(randomBytes(BLOB_BYTES / 2).toString('hex'), 'latin1'));
    }
  });
  let inserted = 0;
  let sinceFlush = 0;
  while (inserted < TARGET_MB * MB) {
    insertMany(BLOBS_PER_TRANSACTION);
    inserted += BLOBS_PER_TRANSACTION * BLOB_BYTES;
    sinceFlush += BLOBS_PER_TRANSACTION * BLOB_BYTES;
    if (sinceFlush >= FLUSH_EVERY_BYTES) {
      await leader.flush();
      sinceFlush = 0;
      log(`  built ${Math.round(inserted / MB)} MB`);
    }
  }
  await leader.flush();
  const buildMs = nowMs() - buildStart;
  const snapshotStart = nowMs();
  const manifest = await leader.snapshot();
  const snapshotMs = nowMs() - snapshotStart;
  await leader.close();
  const storedBytes = manifest.parts.reduce((sum, part) => sum + part.storedBytes, 0);
  return {
    buildMs,
    snapshotMs,
    rawMb: manifest.rawBytes / MB,
    storedMb: storedBytes / MB,
    changesets,
  };
}

/** SHA-256 of a file with page 1's follower-owned header bytes zeroed. */
function maskedSha256(file: string): string {
  const bytes = fs.readFileSync(file);
  for (const offset of FOLLOWER_OWNED_HEADER_BYTES) if (offset < bytes.length) bytes[offset] = 0;
  return createHash('sha256').update(bytes).digest('hex');
}

function checkRestored(
  file: string,
  source: string,
): { sameBytes: boolean; header1819: number[]; rows: number; integrity: string } {
  const header = Buffer.alloc(20);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, header, 0, 20, 0);
  fs.closeSync(fd);
  // The restore may rewrite the follower-owned header bytes (journal mode, change counter).
  const sameBytes = maskedSha256(file) === maskedSha256(source);
  // Open a copy: opening the restored file itself might create -wal/-shm next to it.
  const probe = `${file}.probe`;
  fs.copyFileSync(file, probe);
  const db = new Database(probe, { readonly: true });
  const rows = (db.prepare('SELECT count(*) AS n FROM blobs').get() as { n: number }).n;
  const integrity = db.pragma('quick_check', { simple: true }) as string;
  db.close();
  removeDatabaseFiles(probe);
  return { sameBytes, header1819: [header[18] ?? -1, header[19] ?? -1], rows, integrity };
}

async function main(): Promise<void> {
  const dir = makeTempDir('restore');
  const storageRoot = path.join(dir, 'storage');
  const source = path.join(dir, 'source.db');
  log(
    `restore: ${quick ? 'quick' : 'full'}, ${TARGET_MB} MB of blobs, ${ROUNDS} rounds, dir ${dir}`,
  );
  const built = await buildDatabase(source, storageRoot);
  const sourceBytes = fs.statSync(source).size;
  log(
    `built ${round(built.rawMb, 1)} MB in ${Math.round(built.buildMs)} ms (${built.changesets} changesets); ` +
      `snapshot ${Math.round(built.snapshotMs)} ms, ${round(built.storedMb, 1)} MB stored; source file ${round(sourceBytes / MB, 1)} MB`,
  );

  const results: Record<Side, ChildResult[]> = { restore: [], copy: [] };
  const ratios: number[] = [];
  const ratiosVsCopyFsync: number[] = [];
  let check: ReturnType<typeof checkRestored> | null = null;
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of sidesForRound(r, 'restore' as Side, 'copy' as Side)) {
      const dest = path.join(dir, `${mode}-${r}.db`);
      const result = runChild({ mode, storageRoot, source, dest });
      results[mode].push(result);
      if (mode === 'restore' && check === null) check = checkRestored(dest, source);
      removeDatabaseFiles(dest);
    }
    const restore = results.restore.at(-1) as ChildResult;
    const copy = results.copy.at(-1) as ChildResult;
    const restoreMBps = mbPerSec(restore.bytes, restore.ms);
    const copyMBps = mbPerSec(copy.bytes, copy.ms);
    const copyFsyncMBps = mbPerSec(copy.bytes, copy.msWithFsync ?? Number.NaN);
    ratios.push(restoreMBps / copyMBps);
    ratiosVsCopyFsync.push(restoreMBps / copyFsyncMBps);
    log(
      `round ${r + 1}/${ROUNDS}: restore ${round(restoreMBps, 1)} MB/s (${Math.round(restore.ms)} ms, peak RSS ${round(restore.peakRssMb, 1)} MB), ` +
        `copyFileSync ${round(copyMBps, 1)} MB/s (+fsync ${round(copyFsyncMBps, 1)}), ratio ${round(restoreMBps / copyMBps, 3)}`,
    );
  }
  const storageMb = directoryBytes(storageRoot) / MB;
  removeDir(dir);

  const restoreMs = median(results.restore.map((x) => x.ms));
  const copyMs = median(results.copy.map((x) => x.ms));
  const copyFsyncMs = median(results.copy.map((x) => x.msWithFsync ?? Number.NaN));
  emit({
    bench: 'restore',
    quick,
    restoreRatio: round(median(ratios), 4),
    peakRssMb: round(Math.max(...results.restore.map((x) => x.peakRssMb)), 1),
    restoreMBps: round(mbPerSec(sourceBytes, restoreMs), 1),
    copyFileSyncMBps: round(mbPerSec(sourceBytes, copyMs), 1),
    copyFileSyncFsyncMBps: round(mbPerSec(sourceBytes, copyFsyncMs), 1),
    restoreRatioVsCopyFsync: round(median(ratiosVsCopyFsync), 4),
    roundRatios: ratios.map((x) => round(x, 4)),
    medianMs: {
      restore: round(restoreMs, 1),
      copyFileSync: round(copyMs, 1),
      copyFileSyncFsync: round(copyFsyncMs, 1),
    },
    restoreRssBeforeMb: round(median(results.restore.map((x) => x.rssBeforeMb)), 1),
    restoreSampledPeakRssMb: round(Math.max(...results.restore.map((x) => x.sampledPeakRssMb)), 1),
    copyPeakRssMb: round(Math.max(...results.copy.map((x) => x.peakRssMb)), 1),
    databaseMb: round(sourceBytes / MB, 1),
    snapshotStoredMb: round(built.storedMb, 1),
    storageMb: round(storageMb, 1),
    buildMs: Math.round(built.buildMs),
    snapshotMs: Math.round(built.snapshotMs),
    snapshotMBps: round(mbPerSec(sourceBytes, built.snapshotMs), 1),
    buildChangesets: built.changesets,
    changesetsAppliedOnRestore: results.restore[0]?.changesetsApplied,
    /** Byte-identical to the source file, but for page 1's follower-owned header bytes. */
    restoredMatchesSource: check?.sameBytes,
    restoredHeaderBytes18And19: check?.header1819,
    restoredRows: check?.rows,
    restoredQuickCheck: check?.integrity,
    rounds: ROUNDS,
  });
}

const childIndex = process.argv.indexOf('--child');
if (childIndex !== -1) {
  await child(JSON.parse(process.argv[childIndex + 1] ?? '{}') as ChildArgs);
} else {
  await main();
}
