/**
 * Follower apply throughput: PageApplier.apply of N changesets (1 MiB of 4 KiB pages each) into a
 * fresh file, versus the fair baseline of writing the same pages to a fresh file with
 * fs.writeSync (one per page, at its offset) and one fsync per changeset. Also reports a plain
 * fs.copyFileSync of the final file (with and without fsync), and decodeChangeset throughput
 * (the other half of a follower's pull) as supporting figures.
 *
 * Sides alternate per round (apply, baseline / baseline, apply ...); ratios are medians of the
 * per-round ratios.
 *
 *   npx tsx bench/apply.ts [--quick]
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import {
  type ApplyStep,
  FOLLOWER_OWNED_HEADER_BYTES,
  PageApplier,
} from '../src/replication/sqlite/apply.ts';
import {
  type Changeset,
  decodeChangeset,
  encodeChangeset,
  GENESIS_CHECKSUM,
} from '../src/wire/changeset.ts';
import {
  emit,
  log,
  MB,
  makeTempDir,
  mbPerSec,
  median,
  nowMs,
  quick,
  removeDir,
  round,
  sidesForRound,
} from './lib.ts';

const CHANGESETS = quick ? 50 : 200;
const PAGE_SIZE = 4096;
const PAGES_PER_CHANGESET = 256; // 1 MiB
const ROUNDS = 5;
/** Share of each page filled with random bytes; the rest is zeros, like a B-tree page's free space. */
const FILLED = 0.7;

type Side = 'apply' | 'baseline';

/** A real page 1 (SQLite header, schema) so PageApplier's checks see a genuine database. */
function realPage1(dir: string): Buffer {
  const file = path.join(dir, 'page1.db');
  const db = new Database(file);
  db.pragma(`page_size = ${PAGE_SIZE}`);
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)');
  db.close();
  const page = Buffer.alloc(PAGE_SIZE);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, page, 0, PAGE_SIZE, 0);
  fs.closeSync(fd);
  fs.rmSync(file);
  return page;
}

function makePage(): Uint8Array {
  const page = new Uint8Array(PAGE_SIZE);
  page.set(randomBytes(Math.floor(PAGE_SIZE * FILLED)));
  return page;
}

/** Changesets growing the database by 1 MiB each: pages (i*256+1)..((i+1)*256), page 1 first. */
function buildChangesets(page1: Buffer): { encoded: Uint8Array[]; rawBytes: number } {
  const encoded: Uint8Array[] = [];
  let prevChecksum = GENESIS_CHECKSUM;
  let rawBytes = 0;
  for (let i = 0; i < CHANGESETS; i++) {
    const first = i * PAGES_PER_CHANGESET + 1;
    const pages = Array.from({ length: PAGES_PER_CHANGESET }, (_, j) => ({
      pgno: first + j,
      data: first + j === 1 ? new Uint8Array(page1) : makePage(),
    }));
    const { bytes, changeset } = encodeChangeset({
      db: 'bench',
      epoch: 1,
      seq: i + 1,
      commitTimeMs: Date.now(),
      prevChecksum,
      pageSize: PAGE_SIZE,
      dbSizePages: first + PAGES_PER_CHANGESET - 1,
      pages,
    });
    prevChecksum = changeset.checksum;
    rawBytes += PAGES_PER_CHANGESET * PAGE_SIZE;
    encoded.push(bytes);
  }
  return { encoded, rawBytes };
}

function decodeAll(encoded: readonly Uint8Array[]): Changeset[] {
  let prevChecksum = GENESIS_CHECKSUM;
  return encoded.map((bytes, i) => {
    const changeset = decodeChangeset(bytes, {
      db: 'bench',
      seq: i + 1,
      prevChecksum,
      pageSize: PAGE_SIZE,
    });
    prevChecksum = changeset.checksum;
    return changeset;
  });
}

/** Where apply time goes, summed over a run (from PageApplier's onStep hook). */
interface ApplySteps {
  /** Validation, redo encoding (SHA-256), redo write + fsync + rename + directory fsync. */
  redo: number;
  /** One writeSync per page. */
  pages: number;
  truncate: number;
  /** fsync of the database file. */
  sync: number;
  /** Redo removal + directory fsync. */
  dropRedo: number;
}

function runApply(file: string, changesets: readonly Changeset[], steps: ApplySteps): number {
  let last = 0;
  const onStep = (step: ApplyStep) => {
    if (step === 'page-written') return;
    const now = nowMs();
    const key =
      step === 'redo-written'
        ? 'redo'
        : step === 'pages-written'
          ? 'pages'
          : step === 'truncated'
            ? 'truncate'
            : 'sync';
    steps[key] += now - last;
    last = now;
  };
  const start = nowMs();
  const applier = PageApplier.open(file, { onStep });
  applier.recover();
  for (const changeset of changesets) {
    last = nowMs();
    applier.apply(changeset);
    steps.dropRedo += nowMs() - last;
  }
  applier.close();
  return nowMs() - start;
}

function runBaseline(file: string, changesets: readonly Changeset[]): number {
  const start = nowMs();
  const fd = fs.openSync(file, 'w');
  for (const changeset of changesets) {
    for (const { pgno, data } of changeset.pages) {
      let done = 0;
      while (done < data.length) {
        done += fs.writeSync(fd, data, done, data.length - done, (pgno - 1) * PAGE_SIZE + done);
      }
    }
    fs.fsyncSync(fd);
  }
  fs.closeSync(fd);
  return nowMs() - start;
}

function sha256File(file: string, from: number): string {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const chunk = Buffer.allocUnsafe(4 * MB);
  for (let position = from; ; ) {
    const n = fs.readSync(fd, chunk, 0, chunk.length, position);
    if (n === 0) break;
    hash.update(chunk.subarray(0, n));
    position += n;
  }
  fs.closeSync(fd);
  return hash.digest('hex');
}

/** The applied file equals the plain one, except the follower-owned bytes of page 1's header. */
function sameContent(applied: string, plain: string): boolean {
  if (fs.statSync(applied).size !== fs.statSync(plain).size) return false;
  const a = Buffer.alloc(PAGE_SIZE);
  const b = Buffer.alloc(PAGE_SIZE);
  for (const [file, buf] of [
    [applied, a],
    [plain, b],
  ] as const) {
    const fd = fs.openSync(file, 'r');
    fs.readSync(fd, buf, 0, PAGE_SIZE, 0);
    fs.closeSync(fd);
  }
  for (const offset of FOLLOWER_OWNED_HEADER_BYTES) {
    a[offset] = 0;
    b[offset] = 0;
  }
  return a.equals(b) && sha256File(applied, PAGE_SIZE) === sha256File(plain, PAGE_SIZE);
}

async function main(): Promise<void> {
  const dir = makeTempDir('apply');
  log(
    `apply: ${quick ? 'quick' : 'full'}, ${CHANGESETS} changesets x ${(PAGES_PER_CHANGESET * PAGE_SIZE) / MB} MiB, ${ROUNDS} rounds, dir ${dir}`,
  );
  const buildStart = nowMs();
  const { encoded, rawBytes } = buildChangesets(realPage1(dir));
  const encodedBytes = encoded.reduce((sum, bytes) => sum + bytes.length, 0);
  log(
    `built ${CHANGESETS} changesets: ${round(rawBytes / MB, 1)} MB of pages, ${round(encodedBytes / MB, 1)} MB encoded, in ${Math.round(nowMs() - buildStart)} ms`,
  );
  const changesets = decodeAll(encoded);

  const appliedFile = path.join(dir, 'applied.db');
  const plainFile = path.join(dir, 'plain.db');
  const copyFile = path.join(dir, 'copy.db');
  const removeOutputs = () => {
    for (const file of [appliedFile, plainFile, copyFile]) {
      fs.rmSync(file, { force: true });
      fs.rmSync(`${file}-hadb-redo`, { force: true });
    }
  };

  const ms: Record<Side | 'decode' | 'copy' | 'copyFsync', number[]> = {
    apply: [],
    baseline: [],
    decode: [],
    copy: [],
    copyFsync: [],
  };
  const ratios: number[] = [];
  const steps: ApplySteps = { redo: 0, pages: 0, truncate: 0, sync: 0, dropRedo: 0 };
  let verified: boolean | null = null;
  for (let r = 0; r < ROUNDS; r++) {
    removeOutputs();
    for (const side of sidesForRound(r, 'apply' as Side, 'baseline' as Side)) {
      ms[side].push(
        side === 'apply'
          ? runApply(appliedFile, changesets, steps)
          : runBaseline(plainFile, changesets),
      );
    }
    if (verified === null) verified = sameContent(appliedFile, plainFile);

    let start = nowMs();
    fs.copyFileSync(plainFile, copyFile);
    const copyMs = nowMs() - start;
    const fd = fs.openSync(copyFile, 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    ms.copy.push(copyMs);
    ms.copyFsync.push(nowMs() - start);

    start = nowMs();
    decodeAll(encoded);
    ms.decode.push(nowMs() - start);

    const applyMBps = mbPerSec(rawBytes, ms.apply.at(-1) as number);
    const baselineMBps = mbPerSec(rawBytes, ms.baseline.at(-1) as number);
    ratios.push(applyMBps / baselineMBps);
    log(
      `round ${r + 1}/${ROUNDS}: apply ${round(applyMBps, 1)} MB/s, baseline ${round(baselineMBps, 1)} MB/s, ` +
        `ratio ${round(applyMBps / baselineMBps)}; copyFileSync ${round(mbPerSec(rawBytes, copyMs), 1)} MB/s ` +
        `(+fsync ${round(mbPerSec(rawBytes, ms.copyFsync.at(-1) as number), 1)}); ` +
        `decode ${round(mbPerSec(rawBytes, ms.decode.at(-1) as number), 1)} MB/s`,
    );
  }
  removeOutputs();
  removeDir(dir);

  const rate = (values: number[]) => round(mbPerSec(rawBytes, median(values)), 1);
  const applyMBps = rate(ms.apply);
  const decodeMBps = rate(ms.decode);
  emit({
    bench: 'apply',
    quick,
    applyRatio: round(median(ratios)),
    applyMBps,
    baselineMBps: rate(ms.baseline),
    copyFileSyncMBps: rate(ms.copy),
    copyFileSyncFsyncMBps: rate(ms.copyFsync),
    applyVsCopyFileSync: round(median(ms.copy) / median(ms.apply)),
    decodeMBps,
    /** A follower's pull does decode then apply, one after the other. */
    decodePlusApplyMBps: round(1 / (1 / decodeMBps + 1 / applyMBps), 1),
    roundRatios: ratios.map((x) => round(x)),
    medianMs: {
      apply: round(median(ms.apply), 1),
      baseline: round(median(ms.baseline), 1),
      copyFileSync: round(median(ms.copy), 1),
      copyFileSyncFsync: round(median(ms.copyFsync), 1),
      decode: round(median(ms.decode), 1),
    },
    changesets: CHANGESETS,
    changesetMb: (PAGES_PER_CHANGESET * PAGE_SIZE) / MB,
    pageSize: PAGE_SIZE,
    totalMb: round(rawBytes / MB, 1),
    encodedMb: round(encodedBytes / MB, 1),
    fsyncsPerChangeset: {
      apply: '2 file (redo, pages) + 2 directory (redo rename, redo removal)',
      baseline: '1 file',
    },
    /** Share of apply time per step, over all rounds. */
    applyStepShare: Object.fromEntries(
      Object.entries(steps).map(([step, t]) => [
        step,
        round(t / ms.apply.reduce((sum, x) => sum + x, 0), 3),
      ]),
    ),
    applyStepMsPerChangeset: Object.fromEntries(
      Object.entries(steps).map(([step, t]) => [step, round(t / (CHANGESETS * ROUNDS), 3)]),
    ),
    rounds: ROUNDS,
    appliedMatchesBaseline: verified,
  });
}

await main();
