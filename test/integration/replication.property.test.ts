import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import { expectSamePages, openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-repl-prop-');

type Op =
  | { kind: 'insert'; rows: number; blobBytes: number }
  | { kind: 'update'; modulo: number; blobBytes: number }
  | { kind: 'delete'; modulo: number }
  | { kind: 'schema' }
  | { kind: 'index' }
  | { kind: 'vacuum' }
  | { kind: 'snapshot' }
  | { kind: 'reopenFollower' };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('insert' as const),
      rows: fc.integer({ min: 1, max: 60 }),
      blobBytes: fc.oneof(
        fc.integer({ min: 0, max: 200 }),
        fc.integer({ min: 4000, max: 150_000 }),
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('update' as const),
      modulo: fc.integer({ min: 2, max: 7 }),
      blobBytes: fc.integer({ min: 0, max: 70_000 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('delete' as const),
      modulo: fc.integer({ min: 2, max: 5 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'schema' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'index' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'vacuum' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'snapshot' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopenFollower' as const }) },
);

function runOp(db: Database.Database, operation: Op, step: number): void {
  const blob = (n: number) => Buffer.alloc(n, step % 251);
  switch (operation.kind) {
    case 'insert': {
      const insert = db.prepare('INSERT INTO items (label, body) VALUES (?, ?)');
      db.transaction(() => {
        for (let i = 0; i < operation.rows; i++)
          insert.run(`row ${step}.${i}`, blob(operation.blobBytes));
      })();
      return;
    }
    case 'update':
      db.prepare('UPDATE items SET body = ?, label = label || ? WHERE id % ? = 0').run(
        blob(operation.blobBytes),
        '+',
        operation.modulo,
      );
      return;
    case 'delete':
      db.prepare('DELETE FROM items WHERE id % ? = 1').run(operation.modulo);
      return;
    case 'schema':
      db.exec(`CREATE TABLE IF NOT EXISTS extra_${step % 3} (k INTEGER PRIMARY KEY, v TEXT)`);
      db.prepare(`INSERT INTO extra_${step % 3} (v) VALUES (?)`).run(`v${step}`);
      return;
    case 'index':
      db.exec(`CREATE INDEX IF NOT EXISTS items_label_${step % 2} ON items (label)`);
      return;
    case 'vacuum':
      db.exec('VACUUM');
      return;
    case 'snapshot':
    case 'reopenFollower':
      return;
  }
}

/** This test's own logical content: table and index SQL, and rows with blobs as SHA-1 digests. */
function logicalContent(db: Database.Database): unknown {
  const tables = db
    .prepare("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name")
    .all() as { name: string; sql: string | null }[];
  return tables.map(({ name, sql }) => ({
    name,
    sql,
    // Blobs as digests: deep-comparing Buffers is very slow in vitest.
    rows: sql?.startsWith('CREATE TABLE')
      ? db
          .prepare(`SELECT * FROM "${name}" ORDER BY rowid`)
          .all()
          .map((row) =>
            Object.fromEntries(
              Object.entries(row as object).map(([k, v]) => [
                k,
                Buffer.isBuffer(v) ? createHash('sha1').update(v).digest('hex') : v,
              ]),
            ),
          )
      : null,
  }));
}

const seen = { walRestarts: 0, vacuums: 0, snapshots: 0, reopenedFollowers: 0 };

describe('replication: a follower converges to the leader byte for byte', () => {
  it('holds for random workloads, page sizes, VACUUM, checkpoints and WAL restarts', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(4096, 65536),
        fc.array(op, { minLength: 1, maxLength: 14 }),
        fc.boolean(),
        async (pageSize, ops, truncateWal) => {
          const dir = freshDir('run');
          const storage = createMemoryStorage();
          const common = { db: 'app', storage, prefix: 'tenant' };
          const leader = await openNewLeader({
            ...common,
            path: path.join(dir, 'leader.db'),
            pageSize,
            walTruncateBytes: truncateWal ? 0 : 64 * 1024 * 1024,
            onEvent: (event) => {
              if (event.type === 'wal-restarted') seen.walRestarts += 1;
            },
          });
          const followerPath = path.join(dir, 'follower.db');
          let follower = await SqliteFollower.open({ ...common, path: followerPath });
          let reader: Database.Database | null = null;
          try {
            leader.database.exec(
              'CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, body BLOB)',
            );
            for (const [step, operation] of ops.entries()) {
              runOp(leader.database, operation, step);
              if (operation.kind === 'vacuum') seen.vacuums += 1;
              if (operation.kind === 'snapshot') seen.snapshots += 1;
              if (operation.kind === 'reopenFollower') seen.reopenedFollowers += 1;
              if (operation.kind === 'snapshot') await leader.snapshot();
              else await leader.flush();
              if (operation.kind === 'reopenFollower') {
                reader?.close();
                reader = null;
                follower.close();
                follower = await SqliteFollower.open({ ...common, path: followerPath });
              }
              await follower.pull();
              expect(follower.position.seq).toBe(leader.position.seq);
              reader ??= new Database(followerPath, { readonly: true });
              expect(logicalContent(reader)).toEqual(logicalContent(leader.database));
            }
            expect(reader?.pragma('integrity_check', { simple: true })).toBe('ok');
            expectSamePages(leader.database.serialize(), followerPath);
            // A new follower bootstraps from storage alone and reaches the same state.
            const fresh = await SqliteFollower.open({
              ...common,
              path: path.join(dir, 'fresh.db'),
            });
            await fresh.pull();
            fresh.close();
            expectSamePages(leader.database.serialize(), path.join(dir, 'fresh.db'));
          } finally {
            reader?.close();
            follower.close();
            await leader.close();
            fs.rmSync(dir, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: Number(process.env.HADB_REPLICATION_RUNS ?? 50) },
    );
    // The runs really exercised what the title claims.
    expect(seen.walRestarts).toBeGreaterThan(0);
    expect(seen.vacuums).toBeGreaterThan(0);
    expect(seen.snapshots).toBeGreaterThan(0);
    expect(seen.reopenedFollowers).toBeGreaterThan(0);
  }, 300_000);
});
