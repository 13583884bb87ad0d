import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import type { LeaderEvent } from '../../src/replication/sqlite/leader.ts';
import { expectFollowerMatches, openNewLeader, tempDirs } from './support/replication.ts';
import { withUploadHook } from './support/upload-hook.ts';

const freshDir = tempDirs('hadb-flush-checkpoint-');

describe('a flush resolves once shipped; the checkpoint after it does not hold it up', () => {
  it('reports a failed checkpoint as an event, not as a failed flush, and the next flush recovers', async () => {
    const dir = freshDir('failing');
    const inner = createMemoryStorage();
    const uploads = withUploadHook(inner);
    const events: LeaderEvent[] = [];
    let checkpointFailed: (error: unknown) => void = () => {};
    const failure = new Promise<unknown>((resolve) => {
      checkpointFailed = resolve;
    });
    const leader = await openNewLeader({
      path: path.join(dir, 'leader.db'),
      db: 'app',
      storage: uploads.storage,
      prefix: 'p',
      // Every checkpoint truncates, so it first sets the rows committed meanwhile aside.
      checkpointEveryBytes: 1,
      walTruncateBytes: 1,
      workerCaptureBytes: Number.POSITIVE_INFINITY,
      onEvent: (event) => {
        events.push(event);
        if (event.type === 'checkpoint-failed') checkpointFailed(event.error);
      },
    });
    const db = leader.database;
    db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, body BLOB)');
    const insert = db.prepare('INSERT INTO items (body) VALUES (?)');
    await leader.flush();

    // The outbox segment cannot be written: a directory stands where it goes.
    const segment = path.join(dir, 'leader.db-hadb-outbox.1');
    fs.mkdirSync(segment);
    insert.run(Buffer.alloc(3000, 1));
    uploads.beforeNextUpload(() => {
      for (let i = 0; i < 5; i++) insert.run(Buffer.alloc(3000, 2));
    });
    const shipped = await leader.flush();
    expect(shipped.seq).toBeGreaterThan(0);
    expect(await failure).toBeInstanceOf(Error);
    expect(events.filter((event) => event.type === 'shipped').length).toBeGreaterThan(0);

    // Nothing half-written is left beside the database.
    expect(fs.readdirSync(dir).filter((name) => name.includes('.tmp-'))).toEqual([]);
    fs.rmdirSync(segment);
    await leader.flush();
    await expectFollowerMatches(leader, inner, {
      dir,
      db: 'app',
      prefix: 'p',
      table: 'items',
      rows: 6,
    });
    await leader.close();
  });

  it('keeps frames that were backfilled while their upload failed until a later flush ships them', async () => {
    const dir = freshDir('backfill-then-fail');
    const file = path.join(dir, 'leader.db');
    const inner = createMemoryStorage();
    // The next upload waits until the worker's backfill has copied its frames into the file, then
    // fails: the WAL then holds nothing the file lacks, and only the pin keeps SQLite from
    // restarting it over those frames at the next commit.
    let failNextUpload = false;
    let sizeBeforeFlush = 0;
    const storage: StorageBackend = {
      put: (key, body) => inner.put(key, body),
      get: (key, range) => inner.get(key, range),
      list: (prefix, options) => inner.list(prefix, options),
      delete: (keys) => inner.delete(keys),
      putIfAbsent: async (key, body) => {
        if (!failNextUpload) return inner.putIfAbsent(key, body);
        failNextUpload = false;
        const deadline = Date.now() + 10_000;
        while (fs.statSync(file).size === sizeBeforeFlush) {
          if (Date.now() > deadline) throw new Error('the backfill never reached the file');
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        throw new Error('storage is unreachable');
      },
    };
    const leader = await openNewLeader({
      path: file,
      db: 'app',
      storage,
      prefix: 'p',
      checkpointEveryBytes: 1,
      // Every capture and backfill on the worker.
      workerCaptureBytes: 0,
    });
    const db = leader.database;
    db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, body BLOB)');
    const insert = db.prepare('INSERT INTO items (body) VALUES (?)');
    await leader.flush();

    for (let i = 0; i < 20; i++) insert.run(Buffer.alloc(3000, 1));
    failNextUpload = true;
    sizeBeforeFlush = fs.statSync(file).size;
    await expect(leader.flush()).rejects.toThrow('storage is unreachable');
    // Unpinned, this commit would start the WAL over the 20 rows storage lacks.
    insert.run(Buffer.alloc(3000, 2));
    await leader.flush();
    await expectFollowerMatches(leader, inner, {
      dir,
      db: 'app',
      prefix: 'p',
      table: 'items',
      rows: 21,
    });
    await leader.close();
  });

  it('has SQLite cut a restarted WAL back to the truncate size, and never when there is none', async () => {
    const limits: unknown[] = [];
    for (const walTruncateBytes of [undefined, 1.5 * 1024 * 1024, Number.POSITIVE_INFINITY]) {
      const leader = await openNewLeader({
        path: path.join(freshDir('limit'), 'leader.db'),
        db: 'app',
        storage: createMemoryStorage(),
        prefix: 'p',
        ...(walTruncateBytes === undefined ? {} : { walTruncateBytes }),
      });
      limits.push(leader.database.pragma('journal_size_limit', { simple: true }));
      await leader.close();
    }
    expect(limits).toEqual([64 * 1024 * 1024, 1.5 * 1024 * 1024, -1]);
  });
});
