import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LeaderEvent } from '../../src/adapters/replication/sqlite/leader.ts';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
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
});
