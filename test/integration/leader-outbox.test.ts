import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { expectFollowerMatches, openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-outbox-');
const fixture = path.resolve(import.meta.dirname, 'fixtures/outbox-leader.ts');

describe('leader checkpoints: commits made while a flush ships survive a crash', () => {
  const resumesFrom = {
    truncate: 'its outbox and the restarted WAL',
    pinned: 'the WAL',
    background: 'two or more outbox segments and the WAL',
  };
  for (const mode of ['truncate', 'pinned', 'background'] as const) {
    it(`${mode}: a killed leader resumes from ${resumesFrom[mode]}, losing no commit`, async () => {
      const dir = freshDir('crash');
      const child = spawnSync(process.execPath, ['--import', 'tsx', fixture, dir, mode], {
        cwd: path.resolve(import.meta.dirname, '../..'),
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(child.signal).toBe('SIGKILL');
      const { rows } = JSON.parse(child.stdout.trim()) as { rows: number };
      if (mode === 'background') expect(rows).toBeGreaterThan(0);
      else expect(rows).toBe(83);
      const segment = (n: number) => path.join(dir, `leader.db-hadb-outbox.${n}`);
      expect(fs.existsSync(segment(1))).toBe(mode !== 'pinned');
      expect(fs.existsSync(segment(2))).toBe(mode === 'background');

      const storage = createFsStorage({ root: path.join(dir, 'bucket') });
      const leader = await openNewLeader({
        path: path.join(dir, 'leader.db'),
        db: 'app',
        storage,
        prefix: 'p',
      });
      expect(leader.database.prepare('SELECT count(*) AS c FROM items').get()).toEqual({ c: rows });
      await leader.flush();
      await expectFollowerMatches(leader, storage, {
        dir,
        db: 'app',
        prefix: 'p',
        table: 'items',
        rows,
      });
      await leader.close();
      expect(fs.existsSync(segment(1))).toBe(false);
      expect(fs.existsSync(segment(2))).toBe(false);
    });
  }

  for (const setAside of ['on this thread', 'in the background'] as const) {
    // The WAL's bound depends on the capture worker getting a core while the writer never pauses:
    // a CPU-heavy test file beside it in the suite can starve it, so a run gets two more tries.
    it(`under writes that never pause, the WAL is still truncated and every commit ships (set aside ${setAside})`, {
      retry: 2,
    }, async () => {
      const dir = freshDir('bounded');
      const storage = createMemoryStorage();
      const walTruncateBytes = 512 * 1024;
      const leader = await openNewLeader({
        path: path.join(dir, 'leader.db'),
        db: 'app',
        storage,
        prefix: 'p',
        shipIntervalMs: 5,
        checkpointEveryBytes: 64 * 1024,
        walTruncateBytes,
        workerCaptureBytes: 0,
        // Anything unshipped past 16 KiB goes to a segment on the worker before a truncation.
        setAsideBytes: setAside === 'in the background' ? 16 * 1024 : walTruncateBytes * 8,
      });
      const db = leader.database;
      db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, body BLOB)');
      const insert = db.prepare('INSERT INTO items (body) VALUES (?)');
      leader.start();
      // Sizes after the first truncation: before it the worker thread may still be starting.
      let largestWal = 0;
      let truncations = 0;
      let previousWal = 0;
      let rows = 0;
      let segmentsSeen = 0;
      const until = Date.now() + 2000;
      while (Date.now() < until || truncations < 3) {
        for (let i = 0; i < 4; i++) insert.run(Buffer.alloc(1500, rows++ % 251));
        await new Promise((resolve) => setTimeout(resolve, 1));
        const wal = fs.statSync(path.join(dir, 'leader.db-wal')).size;
        if (wal < previousWal) truncations += 1;
        previousWal = wal;
        if (truncations > 0) largestWal = Math.max(largestWal, wal);
        if (fs.existsSync(path.join(dir, 'leader.db-hadb-outbox.1'))) segmentsSeen += 1;
      }
      await leader.flush();
      // Bounded: past 4× the truncate size a truncation is forced at the next checkpoint, and
      // the writer adds what it writes until then; never the whole history.
      expect(truncations).toBeGreaterThanOrEqual(3);
      expect(largestWal).toBeLessThan(8 * walTruncateBytes);
      if (setAside === 'in the background') expect(segmentsSeen).toBeGreaterThan(0);

      await expectFollowerMatches(leader, storage, {
        dir,
        db: 'app',
        prefix: 'p',
        table: 'items',
        rows,
      });
      await leader.close();
      expect(fs.existsSync(path.join(dir, 'leader.db-hadb-outbox.1'))).toBe(false);
    });
  }
});
