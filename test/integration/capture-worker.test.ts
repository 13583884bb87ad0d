import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { WalInvalidError } from '../../src/errors.ts';
import { encodeCapture } from '../../src/replication/sqlite/capture.ts';
import { captureWorker } from '../../src/replication/sqlite/capture-pool.ts';
import { decodeChangeset, GENESIS_CHECKSUM } from '../../src/wire/changeset.ts';
import { expectFollowerMatches, openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-capture-worker-');

/**
 * A database in WAL mode with automatic checkpoints off and `rows` committed rows in its WAL,
 * left open (closing would checkpoint the WAL away).
 */
function walWithRows(dir: string, rows: number): { file: string; db: Database.Database } {
  const file = path.join(dir, 'source.db');
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)');
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  for (let i = 0; i < rows; i++) insert.run(Buffer.alloc(500 + (i % 700), i % 251));
  return { file, db };
}

describe('capture worker', () => {
  it('builds byte for byte the changeset the leader thread builds', async () => {
    const { file, db } = walWithRows(freshDir('same'), 2000);
    const job = {
      walPath: `${file}-wal`,
      from: null,
      outboxPaths: [],
      db: 'app',
      epoch: 3,
      seq: 7,
      prevChecksum: new Uint8Array(32).fill(9),
      commitTimeMs: 1_700_000_000_000,
      dbPath: file,
      hashes: null,
    };
    const before = captureWorker.counts();
    const inWorker = await captureWorker.run(job);
    const inline = encodeCapture(job);
    expect(captureWorker.counts().workerCaptures).toBe(before.workerCaptures + 1);
    expect(inWorker).not.toBeNull();
    expect(Buffer.from(inWorker?.bytes ?? []).equals(Buffer.from(inline?.bytes ?? [0]))).toBe(true);
    expect(inWorker?.cursor).toEqual(inline?.cursor);
    const decoded = decodeChangeset(inWorker?.bytes ?? new Uint8Array(), { db: 'app', seq: 7 });
    expect(decoded.pages.length).toBe(inline?.pages);
    db.close();
  });

  it('reports the real error of a job it cannot do', async () => {
    const dir = freshDir('bad');
    const wal = path.join(dir, 'bad.db-wal');
    fs.writeFileSync(wal, Buffer.alloc(4096, 7));
    const job = {
      walPath: wal,
      from: null,
      outboxPaths: [],
      db: 'app',
      epoch: 1,
      seq: 1,
      prevChecksum: GENESIS_CHECKSUM,
      commitTimeMs: 0,
      dbPath: path.join(dir, 'bad.db'),
      hashes: null,
    };
    await expect(captureWorker.run(job)).rejects.toBeInstanceOf(WalInvalidError);
  });

  it('a leader capturing on the worker ships what a follower replays exactly', async () => {
    const dir = freshDir('leader');
    const storage = createMemoryStorage();
    const leader = await openNewLeader({
      path: path.join(dir, 'leader.db'),
      db: 'app',
      storage,
      prefix: 'p',
      workerCaptureBytes: 0,
      checkpointEveryBytes: 64 * 1024,
    });
    const before = captureWorker.counts();
    const db = leader.database;
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)');
    const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
    for (let round = 0; round < 6; round++) {
      const flushing = leader.flush();
      // Commits while the worker reads the WAL and the upload runs.
      for (let i = 0; i < 50; i++) insert.run(Buffer.alloc(2000 + i, (round * 50 + i) % 251));
      await flushing;
    }
    await leader.flush();
    const counts = captureWorker.counts();
    expect(counts.workerCaptures).toBeGreaterThan(before.workerCaptures);
    expect(counts.fallbacks).toBe(before.fallbacks);

    await expectFollowerMatches(leader, storage, {
      dir,
      db: 'app',
      prefix: 'p',
      table: 't',
      rows: 300,
    });
    await leader.close();
  });
});
