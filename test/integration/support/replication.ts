/** Helpers the replication integration tests share (a support module: vitest does not run it). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, expect } from 'vitest';
import { createFsStorage } from '../../../src/adapters/storage/fs.ts';
import { createMemoryStorage } from '../../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../../src/adapters/storage/types.ts';
import { maskFollowerOwnedHeader } from '../../../src/replication/sqlite/apply.ts';
import { SqliteFollower } from '../../../src/replication/sqlite/follower.ts';
import { type LeaderOptions, SqliteLeader } from '../../../src/replication/sqlite/leader.ts';
import { GENESIS_CHECKSUM } from '../../../src/wire/changeset.ts';

/** Returns `freshDir(label)`: a new folder in a temporary one removed after the file's tests. */
export function tempDirs(prefix: string): (label: string) => string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  let counter = 0;
  return (label) => {
    const dir = path.join(root, `${label}-${counter++}`);
    fs.mkdirSync(dir);
    return dir;
  };
}

/** The storage backends the tests run against. */
export type StorageKind = 'memory' | 'fs';

/** Empty storage of `kind`; an fs one in a new folder from `freshDir`. */
export function makeStorage(
  kind: StorageKind,
  freshDir: (label: string) => string,
): StorageBackend {
  return kind === 'memory' ? createMemoryStorage() : createFsStorage({ root: freshDir('bucket') });
}

/** Every key in `storage`, in order, across all list pages. */
export async function allKeys(storage: StorageBackend): Promise<string[]> {
  const keys: string[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await storage.list('', startAfter === undefined ? {} : { startAfter });
    keys.push(...page.objects.map((object) => object.key));
    if (page.nextStartAfter === undefined) return keys;
    startAfter = page.nextStartAfter;
  }
}

/** A leader of a new database: epoch 1, from the genesis position. */
export function openNewLeader(
  options: Omit<LeaderOptions, 'epoch' | 'position'>,
): Promise<SqliteLeader> {
  return SqliteLeader.open({
    ...options,
    epoch: 1,
    position: { seq: 0, checksum: GENESIS_CHECKSUM },
  });
}

/**
 * Replays storage into a new follower beside `leader` and checks it holds `rows` rows of `table`
 * and the leader's pages.
 */
export async function expectFollowerMatches(
  leader: SqliteLeader,
  storage: StorageBackend,
  options: { dir: string; db: string; prefix: string; table: string; rows: number },
): Promise<void> {
  const followerPath = path.join(options.dir, 'follower.db');
  const follower = await SqliteFollower.open({
    path: followerPath,
    db: options.db,
    storage,
    prefix: options.prefix,
  });
  await follower.pull();
  follower.close();
  const count = withReadOnly(followerPath, (db) =>
    db.prepare(`SELECT count(*) AS c FROM "${options.table}"`).get(),
  );
  expect(count).toEqual({ c: options.rows });
  expectSamePages(leader.database.serialize(), followerPath);
}

/** Every row of every table (blobs as hex) and the schema: what a copy must reproduce. */
export function logicalContent(db: Database.Database): unknown {
  const schema = db
    .prepare('SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name')
    .all() as { type: string; name: string }[];
  const tables: Record<string, unknown[]> = {};
  for (const { type, name } of schema) {
    if (type !== 'table') continue;
    tables[name] = db
      .prepare(`SELECT * FROM "${name}" ORDER BY rowid`)
      .all()
      .map((row) =>
        Object.fromEntries(
          Object.entries(row as Record<string, unknown>).map(([column, value]) => [
            column,
            Buffer.isBuffer(value) ? { blob: value.toString('hex') } : value,
          ]),
        ),
      );
  }
  return { schema, tables };
}

/** Runs `read` on `file` opened read-only, closing it afterwards. */
export function withReadOnly<T>(file: string, read: (db: Database.Database) => T): T {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return read(db);
  } finally {
    db.close();
  }
}

/** Page for page equal to the leader image, page 1 compared without the follower-owned bytes. */
export function expectSamePages(expected: Buffer, actualPath: string): void {
  const actual = fs.readFileSync(actualPath);
  expect(actual.length).toBe(expected.length);
  const pageSize = expected.readUInt16BE(16) === 1 ? 65536 : expected.readUInt16BE(16);
  const differing: number[] = [];
  for (let offset = 0; offset < expected.length; offset += pageSize) {
    const a = expected.subarray(offset, offset + pageSize);
    const b = actual.subarray(offset, offset + pageSize);
    const same =
      offset === 0
        ? Buffer.from(maskFollowerOwnedHeader(a)).equals(maskFollowerOwnedHeader(b))
        : a.equals(b);
    if (!same) differing.push(offset / pageSize + 1);
  }
  expect(differing, 'pages that differ from the leader').toEqual([]);
}

/** The error `promise` rejects with; throws if it fulfils. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject');
}
