import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import {
  ChangesetError,
  InvalidArgumentError,
  ReplicationGapError,
  SnapshotInvalidError,
} from '../../src/errors.ts';
import {
  type RestoreProgress,
  type RestoreResult,
  type RestoreTarget,
  restoreDatabase,
} from '../../src/replication/restore.ts';
import { listSnapshots, logKey, snapshotPartKey } from '../../src/replication/snapshot.ts';
import {
  allKeys,
  logicalContent,
  makeStorage,
  openNewLeader,
  rejection,
  type StorageKind,
  tempDirs,
  withReadOnly,
} from './support/replication.ts';

const PREFIX = 'tenant';
const DB = 'orders';
/** Commit time of changeset `seq`. */
const commitTime = (seq: number) => seq * 1000;
/** Wall clock when the leader opens (its seq-0 snapshot carries this time). */
const OPEN_TIME = 500;
/** The second explicit snapshot is taken after the clock moved on past commit 8. */
const LATE_SNAPSHOT_TIME = 8500;

const freshDir = tempDirs('hadb-pitr-');

async function cloneStorage(from: StorageBackend, kind: StorageKind): Promise<StorageBackend> {
  const to = makeStorage(kind, freshDir);
  for (const key of await allKeys(from)) {
    const body = await from.get(key);
    if (body !== null) await to.put(key, body);
  }
  return to;
}

function blob(bytes: number, seed: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) out[i] = (i * 31 + seed * 17) & 0xff;
  return out;
}

/** One step per changeset: each changes something, so each flush ships exactly one changeset. */
const STEPS: ((db: Database.Database) => void)[] = [
  (db) =>
    db.exec(
      'CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT NOT NULL, n REAL, body BLOB)',
    ),
  (db) => {
    const insert = db.prepare('INSERT INTO items (label, n, body) VALUES (?, ?, ?)');
    db.transaction(() => {
      for (let i = 0; i < 40; i++) insert.run(`item ${i}`, i * 1.5, blob(64, i));
    })();
  },
  (db) => {
    // Overflow pages.
    const insert = db.prepare('INSERT INTO items (label, n, body) VALUES (?, ?, ?)');
    db.transaction(() => {
      for (let i = 0; i < 6; i++) insert.run(`big ${i}`, -i, blob(30_000, 100 + i));
    })();
  },
  (db) => db.exec("UPDATE items SET label = label || ' (edited)', n = n * 2 WHERE id % 3 = 0"),
  (db) => {
    db.exec('CREATE TABLE tags (item_id INTEGER NOT NULL, tag TEXT NOT NULL)');
    db.exec('CREATE INDEX tags_by_item ON tags (item_id)');
    const insert = db.prepare('INSERT INTO tags (item_id, tag) VALUES (?, ?)');
    for (let i = 1; i <= 30; i++) insert.run(i, `tag-${i % 4}`);
  },
  (db) => db.exec('DELETE FROM items WHERE id % 2 = 0'),
  (db) => {
    // Two commits in one changeset; VACUUM rewrites and shrinks the file.
    db.prepare('INSERT INTO items (label, n, body) VALUES (?, ?, ?)').run('pre-vacuum', 7, null);
    db.exec('VACUUM');
  },
  (db) => db.exec('DROP TABLE tags'),
  (db) => {
    const insert = db.prepare('INSERT INTO items (label, n, body) VALUES (?, ?, ?)');
    insert.run('ünïcødé ✓ 日本', null, null);
    insert.run('', 0, Buffer.alloc(0));
    insert.run('x'.repeat(10_000), 1e300, blob(1, 7));
  },
  (db) => db.prepare('UPDATE items SET body = ? WHERE id <= 10').run(blob(5000, 9)),
  (db) => {
    db.exec('CREATE TABLE kv (k TEXT PRIMARY KEY, v)');
    const insert = db.prepare('INSERT INTO kv (k, v) VALUES (?, ?)');
    for (let i = 0; i < 50; i++) insert.run(`key-${i}`, i % 2 === 0 ? i : `value ${i}`);
  },
  (db) => db.exec('DELETE FROM items'),
  (db) =>
    db.prepare('INSERT INTO items (label, n, body) VALUES (?, ?, ?)').run('last', 42, blob(9, 3)),
];
const LAST_SEQ = STEPS.length;
/** Seqs after which an explicit snapshot is taken (the leader also took one at seq 0 on open). */
const SNAPSHOT_AT = [4, 8];

interface Recorded {
  seq: number;
  commitTimeMs: number;
  content: unknown;
}

interface History {
  storage: StorageBackend;
  recorded: Map<number, Recorded>;
  latestChecksum: string;
}

async function buildHistory(kind: StorageKind): Promise<History> {
  const storage = makeStorage(kind, freshDir);
  let now = OPEN_TIME;
  const leader = await openNewLeader({
    path: path.join(freshDir('leader'), 'leader.db'),
    db: DB,
    storage,
    prefix: PREFIX,
    wallClockMs: () => now,
  });
  const recorded = new Map<number, Recorded>();
  try {
    for (const [index, step] of STEPS.entries()) {
      const seq = index + 1;
      now = commitTime(seq);
      step(leader.database);
      if (seq === 4) {
        // Ships the commit and snapshots in one go (the snapshot image overlays the WAL).
        const manifest = await leader.snapshot();
        expect(manifest.seq).toBe(4);
      } else {
        await leader.flush();
      }
      expect(leader.position.seq).toBe(seq);
      const content = logicalContent(leader.database);
      // Every seq must be told apart from the one before it.
      expect(JSON.stringify(content)).not.toBe(JSON.stringify(recorded.get(seq - 1)?.content));
      recorded.set(seq, { seq, commitTimeMs: now, content });
      if (seq === 8) {
        now = LATE_SNAPSHOT_TIME;
        expect((await leader.snapshot()).seq).toBe(8);
      }
    }
    return {
      storage,
      recorded,
      latestChecksum: Buffer.from(leader.position.checksum).toString('hex'),
    };
  } finally {
    await leader.close();
  }
}

interface Restored {
  result: RestoreResult;
  content: unknown;
  integrity: unknown;
  journalMode: unknown;
  headerVersions: number[];
}

async function restoreAndRead(
  storage: StorageBackend,
  target: RestoreTarget | undefined,
  onProgress?: (progress: RestoreProgress) => void,
): Promise<Restored> {
  const destPath = path.join(freshDir('restore'), 'restored.db');
  const result = await restoreDatabase({
    storage,
    prefix: PREFIX,
    db: DB,
    destPath,
    ...(target === undefined ? {} : { target }),
    ...(onProgress ? { onProgress } : {}),
  });
  const headerVersions = [...fs.readFileSync(destPath).subarray(18, 20)];
  return withReadOnly(destPath, (db) => ({
    result,
    content: logicalContent(db),
    integrity: db.pragma('integrity_check', { simple: true }),
    journalMode: db.pragma('journal_mode', { simple: true }),
    headerVersions,
  }));
}

/** A restore of `target` into a new folder that must fail: its error, the folder and the file. */
async function failedRestore(
  storage: StorageBackend,
  label: string,
  target?: RestoreTarget,
): Promise<{ error: unknown; dir: string; destPath: string }> {
  const dir = freshDir(label);
  const destPath = path.join(dir, 'restored.db');
  const error = await rejection(
    restoreDatabase({
      storage,
      prefix: PREFIX,
      db: DB,
      destPath,
      ...(target === undefined ? {} : { target }),
    }),
  );
  return { error, dir, destPath };
}

/** The snapshot a restore to `seq` starts from: the newest at or below it. */
function baseSnapshotFor(seq: number): number {
  return Math.max(0, ...SNAPSHOT_AT.filter((at) => at <= seq));
}

describe.each(['memory', 'fs'] as const)('point-in-time restore (%s storage)', (kind) => {
  let history: History;

  beforeAll(async () => {
    history = await buildHistory(kind);
    expect(await listSnapshots(history.storage, PREFIX, DB)).toEqual([0, ...SNAPSHOT_AT]);
  });

  function expected(seq: number): Recorded {
    const entry = history.recorded.get(seq);
    if (!entry) throw new Error(`nothing recorded for seq ${seq}`);
    return entry;
  }

  it('restores every recorded seq to exactly the state after that changeset', async () => {
    for (let seq = 1; seq <= LAST_SEQ; seq++) {
      const restored = await restoreAndRead(history.storage, { seq });
      const base = baseSnapshotFor(seq);
      expect(restored.result.seq, `seq ${seq}`).toBe(seq);
      expect(restored.result.epoch).toBe(1);
      expect(restored.result.fromSnapshot, `seq ${seq}`).toBe(base);
      expect(restored.result.changesetsApplied, `seq ${seq}`).toBe(seq - base);
      expect(restored.integrity, `seq ${seq}`).toBe('ok');
      expect(restored.content, `content at seq ${seq}`).toEqual(expected(seq).content);
      if (restored.result.changesetsApplied > 0) {
        expect(restored.result.commitTimeMs).toBe(commitTime(seq));
        // A plain rollback-journal file, as documented.
        expect(restored.headerVersions).toEqual([1, 1]);
        expect(restored.journalMode).toBe('delete');
      }
    }
  });

  it('restores by time: at a commit, between commits, and after the last one', async () => {
    for (let seq = 1; seq <= LAST_SEQ; seq++) {
      const at = await restoreAndRead(history.storage, { timeMs: commitTime(seq) });
      expect(at.result.seq, `exactly at commit ${seq}`).toBe(seq);
      expect(at.integrity).toBe('ok');
      expect(at.content, `exactly at commit ${seq}`).toEqual(expected(seq).content);

      const between = await restoreAndRead(history.storage, { timeMs: commitTime(seq) + 499 });
      expect(between.result.seq, `just after commit ${seq}`).toBe(seq);
      expect(between.content, `just after commit ${seq}`).toEqual(expected(seq).content);

      if (seq > 1) {
        const before = await restoreAndRead(history.storage, { timeMs: commitTime(seq) - 1 });
        expect(before.result.seq, `just before commit ${seq}`).toBe(seq - 1);
        expect(before.content, `just before commit ${seq}`).toEqual(expected(seq - 1).content);
      }
    }
    const after = await restoreAndRead(history.storage, { timeMs: commitTime(LAST_SEQ) + 1e9 });
    expect(after.result.seq).toBe(LAST_SEQ);
    expect(after.content).toEqual(expected(LAST_SEQ).content);
  });

  it('dates a snapshot by the commit of its seq, not by when it was taken', async () => {
    // Snapshot 8 was taken at LATE_SNAPSHOT_TIME, after commit 8: any target from commit 8 on can use it.
    for (const timeMs of [commitTime(8), LATE_SNAPSHOT_TIME - 1, LATE_SNAPSHOT_TIME]) {
      const restored = await restoreAndRead(history.storage, { timeMs });
      expect(restored.result).toMatchObject({
        seq: 8,
        fromSnapshot: 8,
        changesetsApplied: 0,
        commitTimeMs: commitTime(8),
      });
      expect(restored.content).toEqual(expected(8).content);
    }
    const before = await restoreAndRead(history.storage, { timeMs: commitTime(8) - 1 });
    expect(before.result).toMatchObject({ seq: 7, fromSnapshot: 4 });
    expect(before.content).toEqual(expected(7).content);
  });

  it('keeps the replaced database and its WAL when the final rename fails', async () => {
    const destPath = path.join(freshDir('wal-dest'), 'dest.db');
    const old = new Database(destPath);
    old.pragma('journal_mode = WAL');
    old.pragma('wal_autocheckpoint = 0');
    old.exec('CREATE TABLE kept (v INTEGER)');
    old.prepare('INSERT INTO kept VALUES (?)').run(7);
    // Leave the commits only in the -wal file, as a killed writer would.
    const walBytes = fs.readFileSync(`${destPath}-wal`);
    const dbBytes = fs.readFileSync(destPath);
    old.close();
    fs.writeFileSync(destPath, dbBytes);
    fs.writeFileSync(`${destPath}-wal`, walBytes);
    const rename = fs.renameSync;
    const spy = vi.spyOn(fs, 'renameSync').mockImplementation((from, to) => {
      if (to === destPath) throw new Error('rename refused');
      rename(from, to);
    });
    try {
      await expect(
        restoreDatabase({
          storage: history.storage,
          prefix: PREFIX,
          db: DB,
          destPath,
          overwrite: true,
        }),
      ).rejects.toThrow('rename refused');
    } finally {
      spy.mockRestore();
    }
    const reopened = new Database(destPath, { readonly: true });
    expect(reopened.prepare('SELECT v FROM kept').all()).toEqual([{ v: 7 }]);
    reopened.close();
  });

  it('refuses to skip a hole in the log, even for the latest state', async () => {
    const storage = await cloneStorage(history.storage, 'memory');
    await storage.delete([logKey(PREFIX, DB, 10)]);
    for (const target of ['latest', { timeMs: commitTime(12) }] as const) {
      const { error, destPath } = await failedRestore(storage, 'hole', target);
      expect(error).toBeInstanceOf(ReplicationGapError);
      expect(fs.existsSync(destPath)).toBe(false);
    }
  });

  it('refuses a time before the first commit with a clear error', async () => {
    for (const timeMs of [0, OPEN_TIME - 1, OPEN_TIME, commitTime(1) - 1]) {
      const { error, dir } = await failedRestore(history.storage, 'too-early', { timeMs });
      expect(error, `timeMs ${timeMs}`).toBeInstanceOf(ReplicationGapError);
      expect((error as ReplicationGapError).code).toBe('REPLICATION_GAP');
      expect((error as Error).message).toContain('at or before the requested point');
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  });

  it("restores 'latest' (also the default) to the last changeset", async () => {
    for (const target of ['latest', undefined] as const) {
      const restored = await restoreAndRead(history.storage, target);
      expect(restored.result).toEqual({
        seq: LAST_SEQ,
        epoch: 1,
        checksum: history.latestChecksum,
        commitTimeMs: commitTime(LAST_SEQ),
        fromSnapshot: 8,
        changesetsApplied: LAST_SEQ - 8,
        dbChecksum: expect.stringMatching(/^[0-9a-f]{16}$/),
      });
      expect(restored.integrity).toBe('ok');
      expect(restored.content).toEqual(expected(LAST_SEQ).content);
    }
  });

  it('fails with ReplicationGapError for a seq beyond the log, leaving nothing behind', async () => {
    for (const seq of [LAST_SEQ + 1, LAST_SEQ + 100]) {
      const { error, dir } = await failedRestore(history.storage, 'beyond', { seq });
      expect(error).toBeInstanceOf(ReplicationGapError);
      expect((error as Error).message).toContain(`the log ends at ${LAST_SEQ}`);
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  });

  it('rejects a malformed target seq', async () => {
    for (const seq of [-1, 1.5, Number.NaN]) {
      const { error, dir } = await failedRestore(history.storage, 'bad-seq', { seq });
      expect(error, `seq ${seq}`).toBeInstanceOf(InvalidArgumentError);
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  });

  it('refuses to overwrite an existing destination unless overwrite is set', async () => {
    const dir = freshDir('overwrite');
    const destPath = path.join(dir, 'restored.db');
    const original = Buffer.from('not a database, but mine');
    fs.writeFileSync(destPath, original);
    const options = { storage: history.storage, prefix: PREFIX, db: DB, destPath };

    const error = await rejection(restoreDatabase({ ...options, target: { seq: 6 } }));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(fs.readFileSync(destPath)).toEqual(original);
    expect(fs.readdirSync(dir)).toEqual(['restored.db']);

    const refused = await rejection(
      restoreDatabase({ ...options, target: { seq: 6 }, overwrite: false }),
    );
    expect(refused).toBeInstanceOf(InvalidArgumentError);
    expect(fs.readFileSync(destPath)).toEqual(original);

    // Stale companions of the old file must not be applied to the new one.
    fs.writeFileSync(`${destPath}-journal`, 'stale journal');
    fs.writeFileSync(`${destPath}-wal`, 'stale wal');
    const result = await restoreDatabase({ ...options, target: { seq: 6 }, overwrite: true });
    expect(result.seq).toBe(6);
    expect(fs.readdirSync(dir).sort()).toEqual(['restored.db']);
    withReadOnly(destPath, (db) => {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      expect(logicalContent(db)).toEqual(expected(6).content);
    });
  });

  it('reports progress: the snapshot download, then each changeset applied', async () => {
    const events: RestoreProgress[] = [];
    const restored = await restoreAndRead(history.storage, { seq: 11 }, (progress) =>
      events.push(progress),
    );
    expect(restored.content).toEqual(expected(11).content);
    const snapshotEvents = events.filter((event) => event.phase === 'snapshot');
    const logEvents = events.filter((event) => event.phase === 'log');
    expect(snapshotEvents.length).toBeGreaterThan(0);
    for (const event of snapshotEvents) expect(event.seq).toBe(8);
    const done = snapshotEvents.map((event) => event.doneBytes);
    expect(done).toEqual([...done].sort((a, b) => a - b));
    const last = snapshotEvents.at(-1);
    expect(last?.doneBytes).toBe(last?.totalBytes);
    expect(last?.totalBytes).toBeGreaterThan(0);
    expect(logEvents.map((event) => event.seq)).toEqual([9, 10, 11]);
    // Snapshot first, then the log.
    expect(events.findIndex((event) => event.phase === 'log')).toBe(snapshotEvents.length);

    // Without a snapshot at or below the target, only log events.
    const fromGenesisLog: RestoreProgress[] = [];
    await restoreAndRead(history.storage, { seq: 3 }, (progress) => fromGenesisLog.push(progress));
    expect(
      fromGenesisLog.filter((event) => event.phase === 'log').map((event) => event.seq),
    ).toEqual([1, 2, 3]);
  });

  describe('damaged storage', () => {
    it('a garbage changeset fails the restore with ChangesetError and leaves no file', async () => {
      const storage = await cloneStorage(history.storage, kind);
      await storage.put(logKey(PREFIX, DB, 11), Buffer.from('definitely not a changeset'));
      const targets: RestoreTarget[] = [
        'latest',
        { seq: 11 },
        { seq: LAST_SEQ },
        { timeMs: commitTime(12) },
      ];
      for (const target of targets) {
        const { error, dir, destPath } = await failedRestore(storage, 'garbage', target);
        expect(error, JSON.stringify(target)).toBeInstanceOf(ChangesetError);
        expect((error as ChangesetError).code).toBe('CHANGESET_CORRUPT');
        expect(fs.existsSync(destPath)).toBe(false);
        expect(fs.readdirSync(dir), 'no temporary file is left').toEqual([]);
      }
      // Below the damage, restores still work.
      const below = await restoreAndRead(storage, { seq: 10 });
      expect(below.content).toEqual(expected(10).content);
    });

    it('a failed restore with overwrite keeps the existing destination intact', async () => {
      const storage = await cloneStorage(history.storage, kind);
      const dir = freshDir('keep');
      const destPath = path.join(dir, 'restored.db');
      await restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath, target: { seq: 5 } });
      const before = fs.readFileSync(destPath);
      const flipped = await storage.get(logKey(PREFIX, DB, 10));
      if (!flipped) throw new Error('changeset 10 missing');
      flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 0x01;
      await storage.put(logKey(PREFIX, DB, 10), flipped);
      const error = await rejection(
        restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath, overwrite: true }),
      );
      expect(error).toBeInstanceOf(ChangesetError);
      expect(fs.readFileSync(destPath).equals(before), 'destination bytes unchanged').toBe(true);
      expect(fs.readdirSync(dir)).toEqual(['restored.db']);
    });

    it('a replayed changeset breaks the chain', async () => {
      const storage = await cloneStorage(history.storage, kind);
      const previous = await storage.get(logKey(PREFIX, DB, 10));
      if (!previous) throw new Error('changeset 10 missing');
      await storage.put(logKey(PREFIX, DB, 11), previous);
      const { error, dir } = await failedRestore(storage, 'replay');
      expect(error).toBeInstanceOf(ChangesetError);
      expect((error as ChangesetError).code).toBe('CHANGESET_CHAIN_BROKEN');
      expect(fs.readdirSync(dir)).toEqual([]);
    });

    it('a damaged snapshot part fails with SnapshotInvalidError and leaves no file', async () => {
      const storage = await cloneStorage(history.storage, kind);
      await storage.put(snapshotPartKey(PREFIX, DB, 8, 0), Buffer.from('garbage'));
      const { error, dir } = await failedRestore(storage, 'bad-part', { seq: 9 });
      expect(error).toBeInstanceOf(SnapshotInvalidError);
      expect(fs.readdirSync(dir)).toEqual([]);
      // Targets below that snapshot do not need it.
      const below = await restoreAndRead(storage, { seq: 7 });
      expect(below.content).toEqual(expected(7).content);
    });
  });
});
