import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { LeaderEvent } from '../../src/replication/sqlite/leader.ts';
import { expectFollowerMatches, openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-leader-setting-reset-');

describe("the leader re-asserts its connection's settings before each capture", () => {
  it('finds each changed setting, reports it and sets it back, and the capture ships as usual', async () => {
    const dir = freshDir('changed');
    const storage = createMemoryStorage();
    const events: LeaderEvent[] = [];
    const leader = await openNewLeader({
      path: path.join(dir, 'leader.db'),
      db: 'app',
      storage,
      prefix: 'p',
      onEvent: (event) => events.push(event),
    });
    try {
      const db = leader.database;
      db.exec('create table items(id integer primary key, body blob)');
      db.prepare('insert into items(body) values (?)').run(Buffer.alloc(100, 1));
      await leader.flush();
      expect(events.filter((event) => event.type === 'setting-reset')).toEqual([]);

      // What a statement that got past the gate (or code holding the connection) could do.
      db.prepare('insert into items(body) values (?)').run(Buffer.alloc(100, 2));
      db.pragma('wal_autocheckpoint = 1000');
      db.pragma('busy_timeout = 5000');
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('query_only = 1');
      await leader.flush();

      const resets = events.filter((event) => event.type === 'setting-reset');
      expect(resets).toEqual([
        { type: 'setting-reset', pragma: 'wal_autocheckpoint', expected: '0', actual: '1000' },
        { type: 'setting-reset', pragma: 'locking_mode', expected: 'normal', actual: 'exclusive' },
        { type: 'setting-reset', pragma: 'query_only', expected: '0', actual: '1' },
        { type: 'setting-reset', pragma: 'busy_timeout', expected: '0', actual: '5000' },
      ]);
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
      expect(db.pragma('busy_timeout', { simple: true })).toBe(0);
      expect(db.pragma('locking_mode', { simple: true })).toBe('normal');
      expect(db.pragma('query_only', { simple: true })).toBe(0);
      // Writable again, and what was committed reached storage.
      db.prepare('insert into items(body) values (?)').run(Buffer.alloc(100, 3));
      await leader.flush();
      await expectFollowerMatches(leader, storage, {
        dir,
        db: 'app',
        prefix: 'p',
        table: 'items',
        rows: 3,
      });
    } finally {
      await leader.close();
    }
  });
});
