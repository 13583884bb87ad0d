import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/errors.ts';
import {
  type ApplyStep,
  FOLLOWER_OWNED_HEADER_BYTES,
  maskFollowerOwnedHeader,
  PageApplier,
  REDO_SUFFIX,
} from '../../src/replication/sqlite/apply.ts';
import { seededRandom } from '../../src/sim/run.ts';
import type { ChangedPage, Changeset } from '../../src/wire/changeset.ts';

type Db = Database.Database;

function changeset(
  seq: number,
  pageSize: number,
  dbSizePages: number,
  pages: ChangedPage[],
): Changeset {
  return {
    version: 1,
    db: 'test',
    epoch: 1,
    seq,
    commitTimeMs: 0,
    prevChecksum: new Uint8Array(32),
    checksum: new Uint8Array(32).fill(seq & 0xff),
    pageSize,
    dbSizePages,
    pages,
  };
}

/** The pages of `next` that differ from `prev` (all of them when prev is null). */
function diffPages(prev: Buffer | null, next: Buffer, pageSize: number): ChangedPage[] {
  const pages: ChangedPage[] = [];
  for (let offset = 0; offset < next.length; offset += pageSize) {
    const page = next.subarray(offset, offset + pageSize);
    if (prev !== null && page.equals(prev.subarray(offset, offset + pageSize))) continue;
    pages.push({ pgno: offset / pageSize + 1, data: Uint8Array.from(page) });
  }
  return pages;
}

/** A leader database whose committed state is shipped as changesets, as the real leader would. */
class Leader {
  readonly db: Db;
  readonly pageSize: number;
  #prev: Buffer | null = null;
  #seq = 0;

  constructor(
    readonly file: string,
    options: { wal: boolean; pageSize?: number },
  ) {
    this.db = new Database(file);
    if (options.pageSize !== undefined) this.db.pragma(`page_size = ${options.pageSize}`);
    this.db.pragma(`journal_mode = ${options.wal ? 'WAL' : 'DELETE'}`);
    this.pageSize = this.db.pragma('page_size', { simple: true }) as number;
  }

  /** The main file after a full checkpoint: exactly the committed database. */
  bytes(): Buffer {
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    const bytes = fs.readFileSync(this.file);
    expect(bytes.length).toBe(this.pageCount() * this.pageSize);
    return bytes;
  }

  pageCount(): number {
    return this.db.pragma('page_count', { simple: true }) as number;
  }

  /** Changes since the last ship; `full` ships every page. */
  ship(full = false): Changeset {
    const bytes = this.bytes();
    const pages = diffPages(full ? null : this.#prev, bytes, this.pageSize);
    this.#prev = bytes;
    this.#seq += 1;
    return changeset(this.#seq, this.pageSize, bytes.length / this.pageSize, pages);
  }

  close(): void {
    this.db.close();
  }
}

/** Every table's rows in rowid order, and the schema: what an application can observe. */
function dump(db: Db): unknown {
  const schema = db
    .prepare('SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name')
    .all() as { type: string; name: string; sql: string }[];
  const tables: Record<string, unknown[]> = {};
  for (const { type, name, sql } of schema) {
    if (type !== 'table' || name.startsWith('sqlite_')) continue;
    const query = /WITHOUT ROWID/i.test(sql)
      ? `SELECT * FROM "${name}" ORDER BY 1`
      : `SELECT rowid AS _rowid, * FROM "${name}" ORDER BY rowid`;
    // Blobs as hex: deep equality walks Buffers byte by byte and is very slow.
    tables[name] = (db.prepare(query).raw().all() as unknown[][]).map((row) =>
      row.map((value) => (Buffer.isBuffer(value) ? `x'${value.toString('hex')}'` : value)),
    );
  }
  return { schema, tables };
}

function expectPagesMatch(follower: string, leader: Buffer, pageSize: number): void {
  const bytes = fs.readFileSync(follower);
  expect(bytes.length).toBe(leader.length);
  for (let offset = 0; offset < leader.length; offset += pageSize) {
    let ours: Uint8Array = bytes.subarray(offset, offset + pageSize);
    let theirs: Uint8Array = leader.subarray(offset, offset + pageSize);
    if (offset === 0) {
      ours = maskFollowerOwnedHeader(ours);
      theirs = maskFollowerOwnedHeader(theirs);
    }
    if (!Buffer.from(ours).equals(theirs)) {
      throw new Error(`page ${offset / pageSize + 1} differs from the leader's`);
    }
  }
}

function integrity(db: Db): unknown {
  return db.pragma('integrity_check', { simple: true });
}

function counters(file: string): { counter: number; validFor: number; format: number[] } {
  const header = fs.readFileSync(file).subarray(0, 100);
  return {
    counter: header.readUInt32BE(24),
    validFor: header.readUInt32BE(92),
    format: [header[18] ?? -1, header[19] ?? -1],
  };
}

class Crash extends Error {}

describe('PageApplier', () => {
  let dir: string;
  let followerPath: string;
  const open: { close(): void }[] = [];

  function track<T extends { close(): void }>(resource: T): T {
    open.push(resource);
    return resource;
  }

  function leader(options: { wal: boolean; pageSize?: number }): Leader {
    return track(new Leader(path.join(dir, `leader-${open.length}.db`), options));
  }

  function applier(onStep?: (step: ApplyStep) => void): PageApplier {
    return track(PageApplier.open(followerPath, onStep === undefined ? {} : { onStep }));
  }

  function reader(): Db {
    return track(new Database(followerPath, { readonly: true, fileMustExist: true }));
  }

  /** An applier that throws (like a crash would stop it) at the n-th occurrence of `step`. */
  function crashingApplier(step: ApplyStep, nth = 1): PageApplier {
    let seen = 0;
    return applier((at) => {
      if (at === step && ++seen === nth) throw new Crash(`crash after ${step}`);
    });
  }

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-apply-'));
    followerPath = path.join(dir, 'follower.db');
  });

  afterEach(() => {
    for (const resource of open.splice(0).reverse()) resource.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates a missing follower file empty', () => {
    applier();
    expect(fs.statSync(followerPath).size).toBe(0);
    expect(dump(reader())).toEqual({ schema: [], tables: {} });
  });

  it('applies a full copy of a leader and owns only the masked header bytes', () => {
    const l = leader({ wal: true });
    l.db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t (v)');
    const insert = l.db.prepare('INSERT INTO t (v) VALUES (?)');
    for (let i = 0; i < 300; i++) insert.run(`row ${i} ${'x'.repeat(i)}`);
    const applied = l.ship(true);
    const leaderHeader = l.bytes().subarray(0, 100);
    expect([leaderHeader[18], leaderHeader[19]]).toEqual([2, 2]);

    applier().apply(applied);

    const r = reader();
    expect(dump(r)).toEqual(dump(l.db));
    expect(integrity(r)).toBe('ok');
    expectPagesMatch(followerPath, l.bytes(), l.pageSize);
    const header = counters(followerPath);
    expect(header.format).toEqual([1, 1]);
    expect(header.counter).toBeGreaterThan(leaderHeader.readUInt32BE(24));
    expect(header.validFor).toBe(header.counter);
    expect(r.pragma('journal_mode', { simple: true })).toBe('delete');
    expect(fs.existsSync(`${followerPath}${REDO_SUFFIX}`)).toBe(false);
  });

  it('bumps the counters when a changeset has no page 1, or readers would stay stale', () => {
    const l = leader({ wal: true });
    l.db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
    const insert = l.db.prepare('INSERT INTO t (v) VALUES (?)');
    for (let i = 0; i < 500; i++) insert.run('x'.repeat(50));
    const a = applier();
    a.apply(l.ship());
    const r = reader();
    const get = r.prepare('SELECT v FROM t WHERE id = 400').pluck();
    expect(get.get()).toBe('x'.repeat(50));
    const before = counters(followerPath).counter;

    // Same-size update in WAL mode: SQLite leaves page 1 alone.
    l.db.prepare('UPDATE t SET v = ? WHERE id = 400').run('y'.repeat(50));
    const update = l.ship();
    expect(update.pages.map((page) => page.pgno)).not.toContain(1);
    a.apply(update);

    expect(get.get()).toBe('y'.repeat(50));
    expect(counters(followerPath).counter).toBeGreaterThan(before);
    expectPagesMatch(followerPath, l.bytes(), l.pageSize);
  });

  it('keeps a read-only connection current across 50 batches', () => {
    const l = leader({ wal: true });
    l.db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)');
    const a = applier();
    // Opened on the empty file, before the first apply.
    const r = reader();
    const random = seededRandom(42);
    const insert = l.db.prepare('INSERT INTO t (v, b) VALUES (?, ?)');
    const update = l.db.prepare('UPDATE t SET v = ? WHERE id = ?');
    const remove = l.db.prepare('DELETE FROM t WHERE id = ?');
    const ids = (): number[] => l.db.prepare('SELECT id FROM t').pluck().all() as number[];
    const pick = (list: number[]): number => list[Math.floor(random() * list.length)] ?? 0;

    let shrinks = 0;
    let withoutPage1 = 0;
    let bigBlobs = 0;
    let lastCounter = 0;
    let previousSize = 0;
    for (let batch = 1; batch <= 50; batch++) {
      l.db.transaction(() => {
        for (let i = Math.floor(random() * 20); i > 0; i--) {
          // Now and then a blob that spans several overflow pages.
          const blob = random() < 0.2 ? Buffer.alloc(3 * l.pageSize + 17, batch) : null;
          if (blob !== null) bigBlobs++;
          insert.run(`b${batch} ${'v'.repeat(Math.floor(random() * 900))}`, blob);
        }
        const existing = ids();
        for (let i = Math.floor(random() * 10); i > 0 && existing.length > 0; i--) {
          update.run(`u${batch} ${'w'.repeat(Math.floor(random() * 300))}`, pick(existing));
        }
        for (let i = Math.floor(random() * 6); i > 0 && existing.length > 0; i--) {
          remove.run(pick(existing));
        }
      })();
      if (batch === 20) l.db.exec('CREATE INDEX t_v ON t (v)');
      if (batch === 35) l.db.exec('CREATE TABLE u (k TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID');
      if (batch > 35) l.db.prepare('INSERT INTO u VALUES (?, ?)').run(`k${batch}`, batch);
      if (batch % 10 === 0) {
        l.db.exec('DELETE FROM t WHERE id % 3 <> 0');
        l.db.exec('VACUUM');
      }

      const shipped = l.ship();
      if (shipped.dbSizePages < previousSize) shrinks++;
      if (!shipped.pages.some((page) => page.pgno === 1)) withoutPage1++;
      previousSize = shipped.dbSizePages;
      a.apply(shipped);

      expect(dump(r), `batch ${batch}`).toEqual(dump(l.db));
      expect(integrity(r), `batch ${batch}`).toBe('ok');
      expectPagesMatch(followerPath, l.bytes(), l.pageSize);
      const header = counters(followerPath);
      expect(header.counter).not.toBe(lastCounter);
      lastCounter = header.counter;
    }
    expect(shrinks).toBeGreaterThan(0);
    expect(bigBlobs).toBeGreaterThan(0);
    // In WAL mode a commit that leaves page 1 alone ships without it.
    expect(withoutPage1).toBeGreaterThan(0);
  });

  it('works with 65536-byte pages', () => {
    const l = leader({ wal: false, pageSize: 65536 });
    l.db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)');
    const insert = l.db.prepare('INSERT INTO t (b) VALUES (?)');
    for (let i = 0; i < 6; i++) insert.run(Buffer.alloc(150_000, i));
    const first = l.ship();
    expect(first.pageSize).toBe(65536);
    expect(Buffer.from(first.pages[0]?.data ?? []).readUInt16BE(16)).toBe(1);
    const a = applier();
    a.apply(first);
    const r = reader();
    expect(r.pragma('page_size', { simple: true })).toBe(65536);
    expect(dump(r)).toEqual(dump(l.db));

    l.db.exec('DELETE FROM t WHERE id > 2; VACUUM');
    const shrunk = l.ship();
    expect(shrunk.dbSizePages).toBeLessThan(first.dbSizePages);
    a.apply(shrunk);
    expect(dump(r)).toEqual(dump(l.db));
    expect(integrity(r)).toBe('ok');
    expectPagesMatch(followerPath, l.bytes(), 65536);
  });

  describe('crash recovery', () => {
    /** Follower at state A, and B: a changeset that shrinks the file and rewrites rows. */
    function twoStates(): { l: Leader; b: Changeset; stateA: Buffer } {
      const l = leader({ wal: true });
      l.db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
      const insert = l.db.prepare('INSERT INTO t (v) VALUES (?)');
      for (let i = 0; i < 400; i++) insert.run(`a${i} ${'a'.repeat(200)}`);
      const a = applier();
      a.apply(l.ship());
      a.close();
      l.db.exec("DELETE FROM t WHERE id > 100; UPDATE t SET v = 'b' || substr(v, 2); VACUUM");
      const b = l.ship();
      return { l, b, stateA: fs.readFileSync(followerPath) };
    }

    const steps: [ApplyStep, number][] = [
      ['redo-written', 1],
      ['page-written', 1],
      ['page-written', 3],
      ['pages-written', 1],
      ['truncated', 1],
      ['synced', 1],
    ];

    it.each(steps)('finishes an apply interrupted after %s #%i', (step, nth) => {
      const { l, b } = twoStates();
      const crashing = crashingApplier(step, nth);
      expect(() => crashing.apply(b)).toThrow(Crash);
      // The same applier refuses to go on past an unfinished apply.
      expect(() => crashing.apply(b)).toThrow(InvalidArgumentError);
      crashing.close();
      expect(fs.existsSync(`${followerPath}${REDO_SUFFIX}`)).toBe(true);

      const restarted = applier();
      expect(restarted.recover()).toBe(b.seq);
      expect(fs.existsSync(`${followerPath}${REDO_SUFFIX}`)).toBe(false);
      const r = reader();
      expect(dump(r)).toEqual(dump(l.db));
      expect(integrity(r)).toBe('ok');
      expectPagesMatch(followerPath, l.bytes(), l.pageSize);
      expect(restarted.recover()).toBeNull();

      // And replication goes on from there.
      l.db.exec("INSERT INTO t (v) VALUES ('after')");
      restarted.apply(l.ship());
      expect(dump(r)).toEqual(dump(l.db));
    });

    it('recovers in place after an apply that threw', () => {
      const { l, b } = twoStates();
      const crashing = crashingApplier('page-written', 2);
      expect(() => crashing.apply(b)).toThrow(Crash);
      expect(crashing.recover()).toBe(b.seq);
      expect(dump(reader())).toEqual(dump(l.db));
    });

    it.each([
      ['truncated', (bytes: Buffer) => bytes.subarray(0, Math.floor(bytes.length / 2))],
      ['bit-flipped', (bytes: Buffer) => Buffer.from(bytes).fill(0xff, 5000, 5001)],
      ['short', (bytes: Buffer) => bytes.subarray(0, 10)],
      ['empty', () => Buffer.alloc(0)],
    ])('discards a %s redo file and leaves the database untouched', (_, damage) => {
      const { b, stateA } = twoStates();
      const crashing = crashingApplier('redo-written');
      expect(() => crashing.apply(b)).toThrow(Crash);
      crashing.close();
      const redoPath = `${followerPath}${REDO_SUFFIX}`;
      fs.writeFileSync(redoPath, damage(fs.readFileSync(redoPath)));

      const restarted = applier();
      expect(restarted.recover()).toBeNull();
      expect(fs.existsSync(redoPath)).toBe(false);
      expect(fs.readFileSync(followerPath).equals(stateA)).toBe(true);
      // The caller refetches and applies it again.
      restarted.apply(b);
      expect(integrity(reader())).toBe('ok');
    });

    it('removes a leftover temporary redo file', () => {
      const { stateA } = twoStates();
      fs.writeFileSync(`${followerPath}${REDO_SUFFIX}.tmp`, 'half a redo');
      const a = applier();
      expect(a.recover()).toBeNull();
      expect(fs.readdirSync(dir).filter((name) => name.startsWith('follower'))).toEqual([
        'follower.db',
      ]);
      expect(fs.readFileSync(followerPath).equals(stateA)).toBe(true);
    });
  });

  describe('rejects', () => {
    function seeded(): { l: Leader; a: PageApplier; before: Buffer } {
      const l = leader({ wal: true });
      l.db.exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('x')");
      const a = applier();
      a.apply(l.ship());
      return { l, a, before: fs.readFileSync(followerPath) };
    }

    function expectUntouched(before: Buffer): void {
      expect(fs.readFileSync(followerPath).equals(before)).toBe(true);
      expect(fs.existsSync(`${followerPath}${REDO_SUFFIX}`)).toBe(false);
    }

    it('a changeset with another page size, leaving the file untouched', () => {
      const { a, before } = seeded();
      const big = leader({ wal: false, pageSize: 65536 });
      big.db.exec("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('y')");
      expect(() => a.apply(big.ship())).toThrow(InvalidArgumentError);
      expect(() => a.apply(big.ship())).toThrow(/page size 65536 but .* has 4096/);
      expectUntouched(before);
    });

    it('malformed changesets, leaving the file untouched', () => {
      const { l, a, before } = seeded();
      const page = (pgno: number, size = l.pageSize): ChangedPage => ({
        pgno,
        data: new Uint8Array(size),
      });
      const page1 = { pgno: 1, data: Uint8Array.from(l.bytes().subarray(0, l.pageSize)) };
      const bad: Changeset[] = [
        changeset(9, l.pageSize, 2, [page(0)]),
        changeset(9, l.pageSize, 2, [page(3)]),
        changeset(9, l.pageSize, 3, [page(2), page(2)]),
        changeset(9, l.pageSize, 3, [page(3), page(2)]),
        changeset(9, l.pageSize, 2, [page(2, 100)]),
        changeset(9, l.pageSize, 0, []),
        changeset(9, 1000, 2, [page(2, 1000)]),
        changeset(-1, l.pageSize, 2, [page(2)]),
        changeset(9, l.pageSize, 2, [page(1)]),
        changeset(9, 8192, 2, [{ pgno: 1, data: new Uint8Array(8192).fill(1) }]),
        changeset(9, l.pageSize, 2, [{ pgno: 1, data: page1.data.slice(0, 512) }]),
      ];
      for (const invalid of bad) {
        expect(() => a.apply(invalid), JSON.stringify(invalid.pages)).toThrow(InvalidArgumentError);
      }
      expectUntouched(before);
    });

    it('a first changeset without page 1', () => {
      const a = applier();
      const pages = [{ pgno: 2, data: new Uint8Array(4096) }];
      expect(() => a.apply(changeset(1, 4096, 2, pages))).toThrow(/no page 1/);
      expect(fs.statSync(followerPath).size).toBe(0);
    });

    it('a follower file that is not a database', () => {
      fs.writeFileSync(followerPath, Buffer.alloc(8192, 7));
      const l = leader({ wal: true });
      l.db.exec('CREATE TABLE t (v TEXT)');
      expect(() => applier().apply(l.ship())).toThrow(/not a SQLite database/);
    });

    it('use after close', () => {
      const a = applier();
      a.close();
      expect(() => a.recover()).toThrow(InvalidArgumentError);
    });
  });

  it('masks exactly the follower-owned header bytes, on a copy', () => {
    const page = new Uint8Array(512).fill(0xaa);
    const masked = maskFollowerOwnedHeader(page);
    expect(page.every((byte) => byte === 0xaa)).toBe(true);
    const zeroed = [...masked.keys()].filter((offset) => masked[offset] === 0);
    expect(zeroed).toEqual([...FOLLOWER_OWNED_HEADER_BYTES]);
  });
});
