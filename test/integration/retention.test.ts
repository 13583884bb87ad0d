import fs from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, ReplicationGapError } from '../../src/errors.ts';
import { type RestoreTarget, restoreDatabase } from '../../src/replication/restore.ts';
import {
  applyRetention,
  planRetention,
  type RetentionPlan,
} from '../../src/replication/retention.ts';
import {
  deleteSnapshot,
  listSnapshots,
  logKey,
  snapshotPartKey,
  snapshotPrefix,
} from '../../src/replication/snapshot.ts';
import { type FollowerEvent, SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import type { SqliteLeader } from '../../src/replication/sqlite/leader.ts';
import {
  allKeys,
  logicalContent,
  makeStorage,
  openNewLeader,
  rejection,
  tempDirs,
  withReadOnly,
} from './support/replication.ts';

const PREFIX = 'tenant';
const DB = 'ledger';
const commitTime = (seq: number) => 10_000 + seq * 1000;
const LAST_SEQ = 12;
/** Explicit snapshots; the leader also snapshots seq 0 when it creates the database. */
const SNAPSHOT_AT = [3, 6, 9];

const freshDir = tempDirs('hadb-retention-');

function readContent(file: string): { content: unknown; integrity: unknown } {
  return withReadOnly(file, (db) => ({
    content: logicalContent(db),
    integrity: db.pragma('integrity_check', { simple: true }),
  }));
}

/** A distinct change per seq: rows in and out, a blob large enough for overflow pages. */
function writeStep(db: Database.Database, seq: number): void {
  if (seq === 1) {
    db.exec('CREATE TABLE entries (id INTEGER PRIMARY KEY, seq INTEGER, note TEXT, data BLOB)');
    return;
  }
  const insert = db.prepare('INSERT INTO entries (seq, note, data) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < 10; i++) {
      insert.run(seq, `entry ${seq}.${i}`, Buffer.alloc(i === 0 ? 9000 : 100, seq * 7 + i));
    }
    if (seq % 3 === 0) db.prepare('DELETE FROM entries WHERE id % 4 = ?').run(seq % 4);
  })();
}

describe.each(['memory', 'fs'] as const)('retention (%s storage)', (kind) => {
  const storage = makeStorage(kind, freshDir);
  const common = { db: DB, storage, prefix: PREFIX };
  const recorded = new Map<number, unknown>();
  const followerEvents = new Map<string, FollowerEvent[]>();
  let leader: SqliteLeader;
  let now = commitTime(0);
  /** Behind the log that retention deletes, kept open across it. */
  let openAt2: SqliteFollower;
  const openAt2Path = path.join(freshDir('follower'), 'open-at-2.db');
  /** Behind the deleted log, closed across retention. */
  const closedAt4Path = path.join(freshDir('follower'), 'closed-at-4.db');
  /** Exactly one below the oldest kept snapshot: its next changeset is kept. */
  let openAt5: SqliteFollower;
  const openAt5Path = path.join(freshDir('follower'), 'open-at-5.db');
  let keysBefore: string[];
  let plan: RetentionPlan;

  function openFollower(file: string): Promise<SqliteFollower> {
    const events: FollowerEvent[] = [];
    followerEvents.set(file, events);
    return SqliteFollower.open({ ...common, path: file, onEvent: (event) => events.push(event) });
  }

  /** The events of the follower on `file` so far, cleared. */
  function eventsOf(file: string): FollowerEvent[] {
    const events = followerEvents.get(file);
    if (!events) throw new Error(`no follower on ${file}`);
    events.length = 0;
    return events;
  }

  function expectedAt(seq: number): unknown {
    if (!recorded.has(seq)) throw new Error(`nothing recorded for seq ${seq}`);
    return recorded.get(seq);
  }

  /** Restores `target` into a new folder: the result and the restored file. */
  async function restoreTo(target: RestoreTarget) {
    const destPath = path.join(freshDir('restore'), 'restored.db');
    const result = await restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath, target });
    return { result, destPath };
  }

  beforeAll(async () => {
    leader = await openNewLeader({
      ...common,
      path: path.join(freshDir('leader'), 'leader.db'),
      wallClockMs: () => now,
    });
    for (let seq = 1; seq <= LAST_SEQ; seq++) {
      now = commitTime(seq);
      writeStep(leader.database, seq);
      await leader.flush();
      expect(leader.position.seq).toBe(seq);
      recorded.set(seq, logicalContent(leader.database));
      if (SNAPSHOT_AT.includes(seq)) await leader.snapshot();
      if (seq === 2) {
        openAt2 = await openFollower(openAt2Path);
        await openAt2.pull();
      }
      if (seq === 4) {
        const follower = await openFollower(closedAt4Path);
        await follower.pull();
        expect(follower.position.seq).toBe(4);
        follower.close();
      }
      if (seq === 5) {
        openAt5 = await openFollower(openAt5Path);
        await openAt5.pull();
      }
    }
    expect(openAt2.position.seq).toBe(2);
    expect(openAt5.position.seq).toBe(5);
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([0, ...SNAPSHOT_AT]);
    // An orphan part left by an interrupted upload under a snapshot that retention deletes.
    await storage.put(snapshotPartKey(PREFIX, DB, 3, 99), Buffer.from('orphan'));
    keysBefore = await allKeys(storage);
  });

  afterAll(async () => {
    openAt2?.close();
    openAt5?.close();
    await leader?.close();
  });

  it('plans to keep the newest snapshots and the log from the oldest kept one, deleting nothing', async () => {
    plan = await planRetention({ storage, prefix: PREFIX, db: DB, keepSnapshots: 2 });
    expect(plan).toEqual({
      db: DB,
      keptSnapshots: [6, 9],
      deletedSnapshots: [0, 3],
      deletedLogKeys: [1, 2, 3, 4, 5].map((seq) => logKey(PREFIX, DB, seq)),
    });
    // A plan is a dry run.
    expect(await allKeys(storage)).toEqual(keysBefore);
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([0, 3, 6, 9]);
  });

  it('keeping at least as many snapshots as exist deletes nothing here (the oldest is seq 0)', async () => {
    for (const keepSnapshots of [4, 100]) {
      const all = await planRetention({ storage, prefix: PREFIX, db: DB, keepSnapshots });
      expect(all).toEqual({
        db: DB,
        keptSnapshots: [0, 3, 6, 9],
        deletedSnapshots: [],
        deletedLogKeys: [],
      });
    }
  });

  it('rejects keepSnapshots below 1 or not an integer, deleting nothing', async () => {
    for (const keepSnapshots of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      const error = await rejection(
        planRetention({ storage, prefix: PREFIX, db: DB, keepSnapshots }),
      );
      expect(error, `keepSnapshots ${keepSnapshots}`).toBeInstanceOf(InvalidArgumentError);
    }
    expect(await allKeys(storage)).toEqual(keysBefore);
  });

  it('applyRetention deletes exactly what was planned, orphan parts included', async () => {
    await applyRetention(storage, PREFIX, plan);
    const deletedFolders = plan.deletedSnapshots.map(
      (seq) => `${snapshotPrefix(PREFIX, DB, seq)}/`,
    );
    const expected = keysBefore.filter(
      (key) =>
        !plan.deletedLogKeys.includes(key) &&
        !deletedFolders.some((folder) => key.startsWith(folder)),
    );
    expect(await allKeys(storage)).toEqual(expected);
    expect(expected.length).toBeLessThan(keysBefore.length);
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([6, 9]);
    for (let seq = 1; seq <= LAST_SEQ; seq++) {
      const body = await storage.get(logKey(PREFIX, DB, seq));
      expect(body === null, `log ${seq} deleted`).toBe(seq < 6);
    }
    // Applying the same plan again is harmless, and a new plan finds nothing more to delete.
    await applyRetention(storage, PREFIX, plan);
    expect(await allKeys(storage)).toEqual(expected);
    expect(await planRetention({ storage, prefix: PREFIX, db: DB, keepSnapshots: 2 })).toEqual({
      db: DB,
      keptSnapshots: [6, 9],
      deletedSnapshots: [],
      deletedLogKeys: [],
    });
  });

  it('restores every seq from the oldest kept snapshot on to the recorded state', async () => {
    for (let seq = 6; seq <= LAST_SEQ; seq++) {
      const { result, destPath } = await restoreTo({ seq });
      expect(result.seq).toBe(seq);
      expect(result.fromSnapshot).toBe(seq >= 9 ? 9 : 6);
      const { content, integrity } = readContent(destPath);
      expect(integrity, `seq ${seq}`).toBe('ok');
      expect(content, `seq ${seq}`).toEqual(expectedAt(seq));
    }
    for (const timeMs of [commitTime(6), commitTime(7) - 1, commitTime(LAST_SEQ) + 1]) {
      const { result, destPath } = await restoreTo({ timeMs });
      const seq = timeMs > commitTime(LAST_SEQ) ? LAST_SEQ : Math.floor((timeMs - 10_000) / 1000);
      expect(result.seq, `timeMs ${timeMs}`).toBe(seq);
      expect(readContent(destPath).content).toEqual(expectedAt(seq));
    }
  });

  it('fails clearly to restore below the oldest kept snapshot, leaving no file', async () => {
    const targets = [
      ...[1, 2, 3, 4, 5].map((seq) => ({ seq })),
      { timeMs: commitTime(6) - 1 },
      { timeMs: commitTime(1) },
    ];
    for (const target of targets) {
      const dir = freshDir('too-old');
      const error = await rejection(
        restoreDatabase({
          storage,
          prefix: PREFIX,
          db: DB,
          destPath: path.join(dir, 'restored.db'),
          target,
        }),
      );
      expect(error, JSON.stringify(target)).toBeInstanceOf(ReplicationGapError);
      expect(fs.readdirSync(dir)).toEqual([]);
    }
  });

  it('an open follower behind the deleted log re-bootstraps from a snapshot on pull and converges', async () => {
    const events = eventsOf(openAt2Path);
    expect(await openAt2.pull()).toBeGreaterThan(0);
    expect(openAt2.position.seq).toBe(LAST_SEQ);
    expect(events[0]).toEqual({ type: 'bootstrapped', seq: 9, fromSnapshot: true });
    expect(appliedRange(events.slice(1))).toEqual({ from: 10, to: 12 });
    const { content, integrity } = readContent(openAt2Path);
    expect(integrity).toBe('ok');
    expect(content).toEqual(expectedAt(LAST_SEQ));
  });

  it('a closed follower behind the deleted log reopens, re-bootstraps on pull and converges', async () => {
    const follower = await openFollower(closedAt4Path);
    try {
      expect(follower.position.seq).toBe(4);
      await follower.pull();
      expect(follower.position.seq).toBe(LAST_SEQ);
      expect(followerEvents.get(closedAt4Path)?.[0]).toEqual({
        type: 'bootstrapped',
        seq: 9,
        fromSnapshot: true,
      });
    } finally {
      follower.close();
    }
    expect(readContent(closedAt4Path)).toEqual({
      content: expectedAt(LAST_SEQ),
      integrity: 'ok',
    });
  });

  it('a follower whose next changeset was kept just applies it, no re-bootstrap', async () => {
    const events = eventsOf(openAt5Path);
    expect(await openAt5.pull()).toBe(LAST_SEQ - 5);
    expect(events.every((event) => event.type === 'applied')).toBe(true);
    expect(appliedRange(events)).toEqual({ from: 6, to: LAST_SEQ });
    expect(readContent(openAt5Path)).toEqual({ content: expectedAt(LAST_SEQ), integrity: 'ok' });
  });

  it('a new follower bootstraps from the newest snapshot, and everyone follows new writes', async () => {
    const file = path.join(freshDir('follower'), 'new.db');
    const fresh = await openFollower(file);
    try {
      expect(followerEvents.get(file)?.[0]).toEqual({
        type: 'bootstrapped',
        seq: 9,
        fromSnapshot: true,
      });
      await fresh.pull();
      expect(fresh.position.seq).toBe(LAST_SEQ);

      now = commitTime(LAST_SEQ + 1);
      writeStep(leader.database, LAST_SEQ + 1);
      await leader.flush();
      const latest = logicalContent(leader.database);
      for (const follower of [fresh, openAt2, openAt5]) {
        expect(await follower.pull()).toBe(1);
        expect(follower.position.seq).toBe(LAST_SEQ + 1);
      }
      for (const name of followerEvents.keys()) {
        if (name === closedAt4Path) continue;
        expect(readContent(name).content, name).toEqual(latest);
      }
    } finally {
      fresh.close();
    }
  });
});

describe.each(['memory', 'fs'] as const)('retention without snapshots (%s storage)', (kind) => {
  it('deletes nothing when there is no snapshot: the log is the only copy', async () => {
    const storage = makeStorage(kind, freshDir);
    const leader = await openNewLeader({
      db: DB,
      storage,
      prefix: PREFIX,
      path: path.join(freshDir('leader'), 'leader.db'),
    });
    let content: unknown;
    try {
      for (let seq = 1; seq <= 5; seq++) {
        writeStep(leader.database, seq);
        await leader.flush();
      }
      content = logicalContent(leader.database);
    } finally {
      await leader.close();
    }
    // The leader snapshots a new database at seq 0; take that away.
    await deleteSnapshot(storage, PREFIX, DB, 0);
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([]);
    const before = await allKeys(storage);
    expect(before).toEqual([1, 2, 3, 4, 5].map((seq) => logKey(PREFIX, DB, seq)));

    for (const keepSnapshots of [1, 3]) {
      const plan = await planRetention({ storage, prefix: PREFIX, db: DB, keepSnapshots });
      expect(plan).toEqual({ db: DB, keptSnapshots: [], deletedSnapshots: [], deletedLogKeys: [] });
      await applyRetention(storage, PREFIX, plan);
      expect(await allKeys(storage)).toEqual(before);
    }
    const destPath = path.join(freshDir('restore'), 'restored.db');
    const result = await restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath });
    expect(result).toMatchObject({ seq: 5, fromSnapshot: null, changesetsApplied: 5 });
    expect(readContent(destPath)).toEqual({ content, integrity: 'ok' });
  });
});

/** The sequences a run of 'applied' events covers, checked to be contiguous. */
function appliedRange(events: readonly FollowerEvent[]): { from: number; to: number } {
  const applied = events.filter((event) => event.type === 'applied');
  for (let i = 1; i < applied.length; i++) {
    expect((applied[i] as { fromSeq: number }).fromSeq).toBe((applied[i - 1]?.seq ?? 0) + 1);
  }
  return { from: applied[0]?.fromSeq ?? 0, to: applied.at(-1)?.seq ?? 0 };
}
