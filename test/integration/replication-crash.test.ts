/**
 * Crash tests with real processes: a leader, a follower and a restore each run in a child process
 * that is SIGKILLed at random points (seeded: HADB_CRASH_SEED), then started again on the same
 * files. Storage is the fs backend in the test's temporary folder, shared by every process.
 *
 * What must hold after any SIGKILL:
 * - leader: every id acknowledged by a flush is already in storage; a restart with the same
 *   epoch resumes from its local state without forking the log; a fresh follower ends up equal
 *   to the leader's file.
 * - follower: reopening finishes an interrupted apply (integrity_check ok every time), and the
 *   copy finally equals the leader page for page.
 * - restore: the destination is the old file byte for byte until a restore completes; a final
 *   restore equals the leader.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { restoreDatabase } from '../../src/replication/restore.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import { REDO_SUFFIX } from '../../src/replication/sqlite/apply.ts';
import { SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import { seededRandom } from '../../src/sim/run.ts';
import type { FollowerLine } from './fixtures/crash-follower.ts';
import type { LeaderLine } from './fixtures/crash-leader.ts';
import type { RestoreLine } from './fixtures/crash-restore.ts';
import { expectSamePages, openNewLeader, tempDirs, withReadOnly } from './support/replication.ts';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const LEADER_SCRIPT = fixture('crash-leader.ts');
const FOLLOWER_SCRIPT = fixture('crash-follower.ts');
const RESTORE_SCRIPT = fixture('crash-restore.ts');
const LINE_TIMEOUT_MS = 20_000;
const PREFIX = 'crash';
const DB = 'app';

const SEED = Number(process.env.HADB_CRASH_SEED ?? 20240611);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A fixture in a child process, with its JSON stdout lines collected in order. */
class Child<Line extends { type: string }> {
  readonly lines: Line[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #process: ChildProcess;
  #stderr = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly #listeners = new Set<() => void>();

  constructor(script: string, args: string[]) {
    this.#process = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(this);
    this.#process.stderr?.on('data', (chunk: Buffer) => {
      this.#stderr += chunk.toString();
    });
    const stdout = this.#process.stdout;
    if (stdout === null) throw new Error('child has no stdout');
    const lineReader = readline.createInterface({ input: stdout });
    lineReader.on('line', (line) => {
      this.lines.push(JSON.parse(line) as Line);
      this.#notify();
    });
    const streamClosed = new Promise<void>((resolve) => lineReader.on('close', resolve));
    this.exited = new Promise((resolve) => {
      this.#process.on('exit', (code, signal) => {
        // Every line the child wrote is read before the exit counts.
        void streamClosed.then(() => {
          this.#exit = { code, signal };
          live.delete(this);
          this.#notify();
          resolve({ code, signal });
        });
      });
    });
  }

  get stderr(): string {
    return this.#stderr;
  }

  /** The first line (already received or coming) of this type matching `accept`. */
  waitFor<T extends Line['type']>(
    type: T,
    accept: (line: Extract<Line, { type: T }>) => boolean = () => true,
  ): Promise<Extract<Line, { type: T }>> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.lines.find(
          (line): line is Extract<Line, { type: T }> =>
            line.type === type && accept(line as Extract<Line, { type: T }>),
        );
        if (found) return done(() => resolve(found));
        if (this.#exit) {
          return done(() =>
            reject(
              new Error(
                `child exited (${JSON.stringify(this.#exit)}) before a ${type} line; stderr: ${this.#stderr}`,
              ),
            ),
          );
        }
      };
      const timer = setTimeout(
        () =>
          done(() =>
            reject(
              new Error(`no ${type} line within ${LINE_TIMEOUT_MS} ms; stderr: ${this.#stderr}`),
            ),
          ),
        LINE_TIMEOUT_MS,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        this.#listeners.delete(check);
        settle();
      };
      this.#listeners.add(check);
      check();
    });
  }

  of<T extends Line['type']>(type: T): Extract<Line, { type: T }>[] {
    return this.lines.filter((line): line is Extract<Line, { type: T }> => line.type === type);
  }

  /** SIGKILL; resolves once the process is gone. Fails if it had already died on its own. */
  async kill(): Promise<void> {
    if (this.#exit) {
      throw new Error(
        `child already exited ${JSON.stringify(this.#exit)}; stderr: ${this.#stderr}`,
      );
    }
    this.#process.kill('SIGKILL');
    const { signal } = await this.exited;
    if (signal !== 'SIGKILL') {
      throw new Error(`child exited by itself before the kill; stderr: ${this.#stderr}`);
    }
  }

  /** SIGKILL unless it already finished cleanly; true when the kill is what ended it. */
  async killUnlessFinished(): Promise<boolean> {
    if (!this.#exit) this.#process.kill('SIGKILL');
    const exit = await this.exited;
    if (exit.signal === 'SIGKILL') return true;
    if (exit.code !== 0) {
      throw new Error(`child failed ${JSON.stringify(exit)}; stderr: ${this.#stderr}`);
    }
    return false;
  }

  /** Waits for a clean exit (code 0). */
  async finished(): Promise<void> {
    const exit = await this.exited;
    if (exit.code !== 0) {
      throw new Error(`child failed ${JSON.stringify(exit)}; stderr: ${this.#stderr}`);
    }
  }

  forceKill(): void {
    if (!this.#exit) this.#process.kill('SIGKILL');
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener();
  }
}

const live = new Set<Child<{ type: string }>>();
const freshDir = tempDirs('hadb-crash-');

afterEach(async () => {
  const children = [...live];
  for (const child of children) child.forceKill();
  await Promise.all(children.map((child) => child.exited));
});

/** Schema and every row of every table, rows hashed: equal digests mean equal logical content. */
function logicalDigest(db: Database.Database): { tables: string[]; rows: number; digest: string } {
  const hash = createHash('sha256');
  const objects = db
    .prepare('SELECT type, name, sql FROM sqlite_master ORDER BY type, name')
    .all() as { type: string; name: string; sql: string | null }[];
  let rows = 0;
  for (const { type, name, sql } of objects) {
    hash.update(`${type}\0${name}\0${sql ?? ''}\0`);
    if (type !== 'table') continue;
    for (const row of db.prepare(`SELECT * FROM "${name}" ORDER BY rowid`).raw().iterate()) {
      rows += 1;
      for (const value of row as unknown[]) {
        hash.update(Buffer.isBuffer(value) ? value : `${typeof value}:${String(value)}`);
        hash.update('\0');
      }
    }
  }
  return { tables: objects.map((o) => o.name), rows, digest: hash.digest('hex') };
}

/** The leader's database image (its WAL included) as SQLite serializes it. */
function leaderImage(leaderPath: string): Buffer {
  return withReadOnly(leaderPath, (db) => db.serialize());
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function integrity(file: string): string {
  return withReadOnly(file, (db) => String(db.pragma('integrity_check', { simple: true })));
}

/** The ids in the items table of `file`, ascending. */
function itemIds(file: string): number[] {
  return withReadOnly(
    file,
    (db) => db.prepare('SELECT id FROM items ORDER BY id').pluck().all() as number[],
  );
}

describe('replication survives SIGKILL', () => {
  it('leader killed mid-upload: acknowledged ids are durable, restarts resume, a fresh follower equals the leader', async () => {
    const random = seededRandom(SEED);
    const dir = freshDir('leader');
    const leaderPath = path.join(dir, 'leader.db');
    const statePath = `${leaderPath}-hadb-leader.json`;
    const storage = createFsStorage({ root: path.join(dir, 'storage') });
    const common = { db: DB, storage, prefix: PREFIX };
    const checkerPath = path.join(dir, 'checker', 'follower.db');
    fs.mkdirSync(path.dirname(checkerPath));
    const started = Date.now();
    const KILLS = 5;
    let maxAck = 0;
    let maxAckSeq = 0;
    let resumeAt: number | null = null;
    let checker: SqliteFollower | null = null;
    const report: string[] = [];
    try {
      for (let cycle = 0; cycle < KILLS; cycle++) {
        const child = new Child<LeaderLine>(LEADER_SCRIPT, [dir, 'loop']);
        const ready = await child.waitFor('ready');
        // Acknowledged rows are in the leader's own file too, and its resumed position is not
        // behind what it acknowledged: a restart loses nothing.
        expect(ready.maxId).toBeGreaterThanOrEqual(maxAck);
        expect(ready.seq).toBeGreaterThanOrEqual(maxAckSeq);
        // It resumed exactly where its state file said, an upload in flight counted iff it landed.
        if (resumeAt !== null) expect(ready.seq).toBe(resumeAt);
        const delay = 100 + Math.floor(random() * 700);
        await sleep(delay);
        await child.kill();
        const acks = child.of('ack');
        const ackedNow = Math.max(0, ...acks.map((line) => line.id));
        maxAck = Math.max(maxAck, ackedNow);
        maxAckSeq = Math.max(maxAckSeq, ...acks.map((line) => line.seq));
        const state = JSON.parse(fs.readFileSync(statePath, 'utf8')) as {
          seq: number;
          pending: { seq: number } | null;
        };
        const landed =
          state.pending !== null &&
          (await storage.get(logKey(PREFIX, DB, state.pending.seq))) !== null;
        resumeAt = landed && state.pending ? state.pending.seq : state.seq;

        // Durability: what was acknowledged is already in storage, before any restart.
        checker ??= await SqliteFollower.open({ ...common, path: checkerPath });
        await checker.pull();
        const ids = itemIds(checkerPath);
        expect(ids.length).toBeGreaterThanOrEqual(maxAck);
        // Ids are committed in order 1, 2, 3...: any gap is a lost commit.
        expect(ids.every((id, index) => id === index + 1)).toBe(true);
        expect(integrity(checkerPath)).toBe('ok');
        report.push(
          `cycle ${cycle}: killed after ${delay} ms, ${acks.length} acks (max id ${ackedNow}), state seq ${state.seq}, ` +
            `pending upload ${state.pending ? `seq ${state.pending.seq} (${landed ? 'landed' : 'not landed'})` : 'none'}, ` +
            `storage holds ids 1..${ids.length}`,
        );
      }
      expect(maxAck).toBeGreaterThan(0);

      // A last run that closes cleanly.
      const last = new Child<LeaderLine>(LEADER_SCRIPT, [dir, 'final']);
      const ready = await last.waitFor('ready');
      expect(ready.maxId).toBeGreaterThanOrEqual(maxAck);
      expect(ready.seq).toBe(resumeAt);
      await last.finished();
      const closed = await last.waitFor('closed');
      checker?.close();
      checker = null;

      // Each restart removes what a killed run left behind.
      const leftovers = fs.readdirSync(dir).filter((name) => name.includes('.tmp-'));
      expect(leftovers, 'leftover temporary files next to the leader db').toEqual([]);

      // A fresh follower gets everything from storage alone.
      const freshPath = path.join(dir, 'fresh.db');
      const fresh = await SqliteFollower.open({ ...common, path: freshPath });
      await fresh.pull();
      expect(fresh.position.seq).toBe(closed.seq);
      fresh.close();

      expect(integrity(freshPath)).toBe('ok');
      const ids = itemIds(freshPath);
      expect(ids.length).toBe(closed.maxId);
      expect(ids.every((id, index) => id === index + 1)).toBe(true);
      expect(closed.maxId).toBeGreaterThanOrEqual(maxAck);
      const leaderContent = withReadOnly(leaderPath, logicalDigest);
      expect(withReadOnly(freshPath, logicalDigest)).toEqual(leaderContent);
      expectSamePages(leaderImage(leaderPath), freshPath);
      report.push(
        `final: seq ${closed.seq}, ${closed.maxId} rows, max acknowledged before it ${maxAck}; ${Date.now() - started} ms`,
      );
    } finally {
      checker?.close();
      console.log(`[leader crash, seed ${SEED}]\n  ${report.join('\n  ')}`);
    }
  }, 60_000);

  it('follower killed mid-apply: reopening recovers, and the copy finally equals the leader', async () => {
    const random = seededRandom(SEED + 1);
    const dir = freshDir('follower');
    const leaderPath = path.join(dir, 'leader.db');
    const followerPath = path.join(dir, 'follower.db');
    const storage = createFsStorage({ root: path.join(dir, 'storage') });
    const started = Date.now();
    const leader = await openNewLeader({ path: leaderPath, db: DB, storage, prefix: PREFIX });
    const report: string[] = [];
    const SLOTS = 200;
    const KILLS = 8;
    let stop = false;
    let transactions = 0;
    let writer: Promise<void> = Promise.resolve();
    try {
      const db = leader.database;
      db.exec('CREATE TABLE slots (slot INTEGER PRIMARY KEY, body BLOB NOT NULL)');
      const upsert = db.prepare('INSERT OR REPLACE INTO slots (slot, body) VALUES (?, ?)');
      const remove = db.prepare('DELETE FROM slots WHERE slot % 7 = ?');
      // Big transactions: ~30 blobs of 8..64 KB, ~500 pages per changeset; the table
      // stays near SLOTS rows so the database (and each integrity_check) stays small.
      const bigTransaction = db.transaction((n: number) => {
        for (let i = 0; i < 30; i++) {
          upsert.run(
            Math.floor(random() * SLOTS),
            randomBytes(8192 + Math.floor(random() * 57_344)),
          );
        }
        if (n % 10 === 9) remove.run(n % 7);
      });
      writer = (async () => {
        while (!stop) {
          bigTransaction(transactions);
          transactions += 1;
          await leader.flush();
        }
      })();

      const redoPath = `${followerPath}${REDO_SUFFIX}`;
      let killedMidApply = 0;
      let lastApplied = 0;
      let recoveredAtOpen = 0;
      for (let cycle = 0; cycle < KILLS; cycle++) {
        const child = new Child<FollowerLine>(FOLLOWER_SCRIPT, [dir, 'loop']);
        const ready = await child.waitFor('ready');
        // After the previous SIGKILL, open() finished the interrupted apply: a sound database,
        // never behind what the previous run reported applied.
        expect(ready.integrity).toBe(ready.fileBytes === 0 && ready.seq === 0 ? 'empty' : 'ok');
        expect(ready.seq).toBeGreaterThanOrEqual(lastApplied);
        expect(ready.redoAfterOpen).toBe(false);
        if (ready.redoBeforeOpen) recoveredAtOpen += 1;
        // Opening took long enough for a backlog to build, so the child is busy applying.
        let when: string;
        if (cycle % 2 === 0) {
          // A little after the k-th changeset of this run.
          const k = 1 + Math.floor(random() * 4);
          await child.waitFor('applied', (line) => line.seq >= ready.seq + k);
          const delay = Math.floor(random() * 25);
          await sleep(delay);
          when = `${delay} ms after applying ${k}`;
        } else {
          // Inside an apply: as soon as its redo file appears, or a ms or two later (an apply
          // of a few hundred pages only takes a few ms).
          const delay = [0, 0, 1, 2][Math.floor(random() * 4)] ?? 0;
          const deadline = Date.now() + LINE_TIMEOUT_MS;
          while (!fs.existsSync(redoPath)) {
            if (Date.now() > deadline) throw new Error('the follower never wrote a redo file');
            await new Promise<void>((resolve) => setImmediate(resolve));
          }
          if (delay > 0) await sleep(delay);
          when = `${delay} ms after a redo file appeared`;
        }
        await child.kill();
        const applied = child.of('applied');
        lastApplied = Math.max(lastApplied, applied.at(-1)?.seq ?? 0);
        const redoLeft = fs.existsSync(redoPath);
        if (redoLeft) killedMidApply += 1;
        report.push(
          `cycle ${cycle}: opened at seq ${ready.seq} (${ready.integrity}${ready.redoBeforeOpen ? ', recovered a redo' : ''}), killed ${when}, ` +
            `${applied.length} applied (last ${applied.at(-1)?.seq ?? '-'}), redo file left: ${redoLeft}, leader at ${leader.position.seq}`,
        );
      }
      // The kills really interrupted applies.
      expect(killedMidApply).toBeGreaterThan(0);
      stop = true;
      await writer;
      const target = (await leader.flush()).seq;

      const last = new Child<FollowerLine>(FOLLOWER_SCRIPT, [dir, 'final', String(target)]);
      const ready = await last.waitFor('ready');
      expect(ready.integrity).toBe('ok');
      expect(ready.redoAfterOpen).toBe(false);
      if (ready.redoBeforeOpen) recoveredAtOpen += 1;
      // Every kill that left a redo file had its apply finished by the next open.
      expect(recoveredAtOpen).toBe(killedMidApply);
      await last.finished();
      expect((await last.waitFor('done')).seq).toBe(target);

      expect(integrity(followerPath)).toBe('ok');
      expect(withReadOnly(followerPath, logicalDigest)).toEqual(logicalDigest(db));
      expectSamePages(db.serialize(), followerPath);
      const leftovers = fs.readdirSync(dir).filter((name) => name.includes('.tmp'));
      expect(leftovers, 'leftover temporary files next to the follower db').toEqual([]);
      report.push(
        `final: seq ${target} after ${transactions} big transactions; kills that left a redo file: ${killedMidApply}/${KILLS}; ` +
          `leftover temporary files: ${JSON.stringify(leftovers)}; ${Date.now() - started} ms`,
      );
    } finally {
      stop = true;
      await writer.catch(() => {});
      await leader.close().catch(() => {});
      console.log(`[follower crash, seed ${SEED + 1}]\n  ${report.join('\n  ')}`);
    }
  }, 60_000);

  it('restore killed mid-download: the destination stays the old file until a restore completes', async () => {
    const random = seededRandom(SEED + 2);
    const dir = freshDir('restore');
    const leaderPath = path.join(dir, 'leader.db');
    const storageRoot = path.join(dir, 'storage');
    const storage = createFsStorage({ root: storageRoot });
    const restoreDir = path.join(dir, 'restored');
    fs.mkdirSync(restoreDir);
    const destPath = path.join(restoreDir, 'dest.db');
    const started = Date.now();
    const report: string[] = [];
    try {
      const leader = await openNewLeader({ path: leaderPath, db: DB, storage, prefix: PREFIX });
      let manifestParts = 0;
      let oldSeq = 0;
      try {
        const db = leader.database;
        db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL)');
        const insert = db.prepare('INSERT INTO blobs (body) VALUES (?)');
        const update = db.prepare('UPDATE blobs SET body = ? WHERE id = ?');
        // ~24 MB of incompressible blobs: a snapshot of three 8 MiB parts.
        for (let batch = 0; batch < 4; batch++) {
          db.transaction(() => {
            for (let i = 0; i < 6; i++) insert.run(randomBytes(1024 * 1024));
          })();
          const { seq } = await leader.flush();
          if (batch === 1) oldSeq = seq;
        }
        const manifest = await leader.snapshot();
        manifestParts = manifest.parts.length;
        expect(manifestParts).toBeGreaterThanOrEqual(3);
        // Then a log to apply on top of the snapshot, ~2 MB per changeset.
        for (let i = 0; i < 6; i++) {
          db.transaction(() => {
            update.run(randomBytes(1024 * 1024), 1 + ((i * 5) % 24));
            update.run(randomBytes(1024 * 1024), 1 + ((i * 5 + 2) % 24));
          })();
          await leader.flush();
        }
      } finally {
        await leader.close();
      }
      const leaderBytes = leaderImage(leaderPath);
      const leaderContent = withReadOnly(leaderPath, logicalDigest);

      // The older valid database the restores overwrite: a restore of an earlier seq.
      await restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath, target: { seq: oldSeq } });
      let expectedDest = sha256(destPath);
      expect(integrity(destPath)).toBe('ok');
      expect(sha256(destPath)).toBe(expectedDest);

      // Time one uninterrupted restore, to spread the kills over its whole run.
      const calibratePath = path.join(dir, 'calibrate.db');
      const calibrate = new Child<RestoreLine>(RESTORE_SCRIPT, [storageRoot, calibratePath]);
      await calibrate.waitFor('ready');
      const calibrateStart = Date.now();
      await calibrate.finished();
      const restoreMs = Date.now() - calibrateStart;
      const newDest = sha256(calibratePath);
      report.push(
        `database ${leaderBytes.length} bytes, snapshot in ${manifestParts} parts, one restore takes ${restoreMs} ms (from ready)`,
      );

      const KILLS = 6;
      let interrupted = 0;
      for (let cycle = 0; cycle < KILLS; cycle++) {
        const child = new Child<RestoreLine>(RESTORE_SCRIPT, [storageRoot, destPath]);
        await child.waitFor('ready');
        // Stratified: kill i lands in the i-th sixth of a (slightly stretched) restore.
        const delay = Math.floor(((cycle + random()) / KILLS) * restoreMs * 1.1);
        await sleep(delay);
        const killed = await child.killUnlessFinished();
        const progress = child.of('progress');
        const lastProgress = progress.at(-1);
        const finished = child.of('done').length > 0;
        // A clean exit is a completed restore, nothing else.
        expect(killed || finished).toBe(true);
        // Never a third state: the old file, or the complete new one once the final rename ran
        // (which a kill can also land just after, before 'done' is printed).
        const now = sha256(destPath);
        if (now === newDest) {
          expectedDest = newDest;
        } else if (progress.length > 0) {
          interrupted += 1;
        }
        if (finished) expect(now).toBe(newDest);
        expect(
          now,
          `cycle ${cycle}: dest is neither the old nor the new file (integrity: ${integrity(destPath)})`,
        ).toBe(expectedDest);
        for (const suffix of ['-journal', '-wal', '-shm']) {
          expect(fs.existsSync(`${destPath}${suffix}`)).toBe(false);
        }
        const leftovers = fs.readdirSync(restoreDir).filter((name) => name !== 'dest.db');
        report.push(
          `cycle ${cycle}: after ${delay} ms ${
            !killed
              ? 'it had finished'
              : finished
                ? 'killed after done'
                : now === newDest
                  ? 'killed after the final rename'
                  : lastProgress === undefined
                    ? 'killed before any progress'
                    : lastProgress.phase === 'snapshot'
                      ? `killed in the snapshot download at ${lastProgress.doneBytes}/${lastProgress.totalBytes} bytes`
                      : `killed in the log apply after seq ${lastProgress.seq}`
          }; dest is the ${expectedDest === newDest ? 'new' : 'old'} file; ${leftovers.length} other files in its folder`,
        );
      }
      // The kills really interrupted restores that were under way.
      expect(interrupted).toBeGreaterThan(0);
      expect(integrity(destPath)).toBe('ok');

      const last = new Child<RestoreLine>(RESTORE_SCRIPT, [storageRoot, destPath]);
      await last.finished();
      const done = await last.waitFor('done');
      expect(done.fromSnapshot).not.toBeNull();
      expect(done.changesetsApplied).toBeGreaterThan(0);
      expect(sha256(destPath)).toBe(newDest);
      expect(integrity(destPath)).toBe('ok');
      expect(withReadOnly(destPath, logicalDigest)).toEqual(leaderContent);
      expectSamePages(leaderBytes, destPath);

      const leftovers = fs
        .readdirSync(restoreDir)
        .filter((name) => name.includes('.hadb-pitr-') || name.includes('.hadb-restore-'));
      const leftoverBytes = leftovers.reduce(
        (sum, name) => sum + fs.statSync(path.join(restoreDir, name)).size,
        0,
      );
      expect(
        leftovers,
        `${leftoverBytes} bytes of temporary files left after the final restore`,
      ).toEqual([]);
      report.push(`after the final restore: no temporary files left; ${Date.now() - started} ms`);
    } finally {
      console.log(`[restore crash, seed ${SEED + 2}]\n  ${report.join('\n  ')}`);
    }
  }, 60_000);
});
