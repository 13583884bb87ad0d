import fs from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage, type MemoryStorage } from '../../src/adapters/storage/memory.ts';
import { DatabaseDivergedError } from '../../src/errors.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import { SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import type { SqliteLeader } from '../../src/replication/sqlite/leader.ts';
import { decodeChangeset, encodeChangeset } from '../../src/wire/changeset.ts';
import { openNewLeader, rejection, tempDirs } from './support/replication.ts';

const PREFIX = 'tenant';
const DB = 'app';
const freshDir = tempDirs('hadb-diverged-copy-');

function insertRows(db: Database.Database, from: number, count: number): void {
  const insert = db.prepare('INSERT INTO notes (id, body) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = from; i < from + count; i++) insert.run(i, `note ${i} `.repeat(20));
  })();
}

async function cluster(): Promise<{
  storage: MemoryStorage;
  leader: SqliteLeader;
  followerPath: string;
}> {
  const storage = createMemoryStorage();
  const leader = await openNewLeader({
    path: path.join(freshDir('leader'), 'leader.db'),
    db: DB,
    storage,
    prefix: PREFIX,
  });
  leader.database.exec('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)');
  insertRows(leader.database, 0, 200);
  await leader.flush();
  return { storage, leader, followerPath: path.join(freshDir('follower'), 'follower.db') };
}

function openFollower(storage: MemoryStorage, followerPath: string): Promise<SqliteFollower> {
  return SqliteFollower.open({ path: followerPath, db: DB, storage, prefix: PREFIX });
}

describe('a follower whose copy would not match the database checksum', () => {
  it('stops with DATABASE_DIVERGED when its file was changed outside hadb, and applies nothing', async () => {
    const { storage, leader, followerPath } = await cluster();
    const first = await openFollower(storage, followerPath);
    await first.pull();
    first.close();
    insertRows(leader.database, 1000, 50);
    const { seq } = await leader.flush();

    // A byte changes behind the follower's back, in a page the next changeset replaces: the copy
    // hashes only what it replaces, and this page's hash is not the one it recorded.
    const next = decodeChangeset((await storage.get(logKey(PREFIX, DB, seq))) as Uint8Array);
    const sizePages = fs.statSync(followerPath).size / 4096;
    const victim = next.pages.find(({ pgno }) => pgno > 1 && pgno <= sizePages)?.pgno as number;
    expect(victim).toBeGreaterThan(1);
    const fd = fs.openSync(followerPath, 'r+');
    fs.writeSync(fd, Buffer.from([0x5a]), 0, 1, (victim - 1) * 4096 + 3000);
    fs.closeSync(fd);
    const tampered = fs.readFileSync(followerPath);

    const follower = await openFollower(storage, followerPath);
    const error = await rejection(follower.pull());
    expect(error).toBeInstanceOf(DatabaseDivergedError);
    expect((error as DatabaseDivergedError).code).toBe('DATABASE_DIVERGED');
    // Stopped: the file is as it was, the position did not move, and it stays stopped.
    expect(fs.readFileSync(followerPath).equals(tampered)).toBe(true);
    expect(follower.position.seq).toBe(first.position.seq);
    expect(follower.diverged).toBe(error);
    await expect(follower.pull()).rejects.toBe(error);
    follower.close();
    await leader.close();
  });

  it('stops with DATABASE_DIVERGED on a changeset whose pages were altered but re-sealed', async () => {
    const { storage, leader, followerPath } = await cluster();
    const follower = await openFollower(storage, followerPath);
    await follower.pull();
    const before = fs.readFileSync(followerPath);
    insertRows(leader.database, 1000, 50);
    const { seq } = await leader.flush();

    // Someone rewrites the last changeset with one page byte changed: frame CRC and chain
    // checksum are recomputed, so only the database checksum can tell.
    const key = logKey(PREFIX, DB, seq);
    const original = decodeChangeset((await storage.get(key)) as Uint8Array);
    const pages = original.pages.map(({ pgno, data }) => ({ pgno, data: new Uint8Array(data) }));
    const victim = pages.at(-1)?.data as Uint8Array;
    victim[victim.length - 10] = (victim[victim.length - 10] as number) ^ 0xff;
    const { version: _v, checksum: _c, ...fields } = original;
    await storage.put(key, encodeChangeset({ ...fields, pages }).bytes);

    const error = await rejection(follower.pull());
    expect(error).toBeInstanceOf(DatabaseDivergedError);
    expect((error as DatabaseDivergedError).seq).toBe(seq);
    expect(fs.readFileSync(followerPath).equals(before)).toBe(true);
    expect(follower.position.seq).toBe(seq - 1);
    follower.close();
    await leader.close();
  });
});
