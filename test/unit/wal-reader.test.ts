import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidArgumentError, SqliteTooOldError, WalInvalidError } from '../../src/errors.ts';
import {
  assertSqliteVersion,
  type CommittedFrames,
  parseWalHeader,
  readCommittedFrames,
  readWalHeader,
  WAL_FRAME_HEADER_SIZE,
  WAL_HEADER_SIZE,
  type WalCursor,
  walChecksum,
} from '../../src/replication/sqlite/wal.ts';

type Db = Database.Database;

let dir: string;
let open: Db[];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-wal-'));
  open = [];
});

afterEach(() => {
  for (const db of open) if (db.open) db.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function openLeader(name = 'leader.db', pageSize?: number): { db: Db; file: string; wal: string } {
  const file = path.join(dir, name);
  const db = new Database(file);
  open.push(db);
  // Page size only takes effect before the database has content.
  if (pageSize !== undefined) db.pragma(`page_size = ${pageSize}`);
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.pragma('synchronous = NORMAL');
  return { db, file, wal: `${file}-wal` };
}

function insertRows(db: Db, count: number, bodyBytes = 300): void {
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < count; i++) insert.run(`${i}:${'x'.repeat(bodyBytes)}`);
  })();
}

/** Writes the pages into `replica` (created empty when missing) as a follower would. */
function apply(replica: string, frames: CommittedFrames): void {
  if (!fs.existsSync(replica)) fs.writeFileSync(replica, '');
  const fd = fs.openSync(replica, 'r+');
  try {
    const { pageSize } = frames.cursor;
    for (const [pgno, page] of frames.pages) {
      expect(page.byteLength).toBe(pageSize);
      fs.writeSync(fd, page, 0, page.byteLength, (pgno - 1) * pageSize);
    }
    fs.ftruncateSync(fd, frames.dbSizePages * pageSize);
  } finally {
    fs.closeSync(fd);
  }
}

function rows(db: Db): unknown[] {
  return db.prepare('SELECT id, body FROM t ORDER BY id').all();
}

/** Opens a copy of the replica so that checking it cannot change it. */
function expectReplicaMatches(replica: string, leader: Db): void {
  const copy = path.join(dir, `check-${Math.random().toString(36).slice(2)}.db`);
  fs.copyFileSync(replica, copy);
  const db = new Database(copy);
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    expect(rows(db)).toEqual(rows(leader));
  } finally {
    db.close();
  }
}

function mustRead(wal: string, cursor: WalCursor | null): CommittedFrames {
  const frames = readCommittedFrames(wal, cursor);
  if (frames === null) throw new Error('expected committed frames');
  return frames;
}

function frameSize(cursor: WalCursor): number {
  return WAL_FRAME_HEADER_SIZE + cursor.pageSize;
}

function flipBit(file: string, offset: number): void {
  const bytes = fs.readFileSync(file);
  bytes[offset] = (bytes[offset] ?? 0) ^ 0x10;
  fs.writeFileSync(file, bytes);
}

/** Page maps equal page by page (`toEqual` compares large byte arrays slowly). */
function samePages(a: Map<number, Uint8Array>, b: Map<number, Uint8Array>): boolean {
  if (a.size !== b.size) return false;
  for (const [pgno, page] of a) {
    const other = b.get(pgno);
    if (other === undefined || Buffer.compare(page, other) !== 0) return false;
  }
  return true;
}

/** The WAL rewritten with checksum words in the other byte order (magic and every checksum). */
function withChecksumOrder(wal: Buffer, bigEndian: boolean): Buffer {
  const out = Buffer.from(wal);
  const frame = WAL_FRAME_HEADER_SIZE + out.readUInt32BE(8);
  out.writeUInt32BE(bigEndian ? 0x377f0683 : 0x377f0682, 0);
  let [s0, s1] = walChecksum(out.subarray(0, 24), bigEndian);
  out.writeUInt32BE(s0, 24);
  out.writeUInt32BE(s1, 28);
  for (let at = WAL_HEADER_SIZE; at + frame <= out.byteLength; at += frame) {
    if (out.readUInt32BE(at + 8) !== out.readUInt32BE(16)) break;
    [s0, s1] = walChecksum(out.subarray(at, at + 8), bigEndian, s0, s1);
    [s0, s1] = walChecksum(out.subarray(at + WAL_FRAME_HEADER_SIZE, at + frame), bigEndian, s0, s1);
    out.writeUInt32BE(s0, at + 16);
    out.writeUInt32BE(s1, at + 20);
  }
  return out;
}

describe('readCommittedFrames', () => {
  it('reads committed pages that rebuild the database, then only new frames', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 200);

    const first = mustRead(wal, null);
    expect(first.restarted).toBe(false);
    expect(first.commits).toBe(2);
    expect(first.dbSizePages).toBe(db.pragma('page_count', { simple: true }));
    expect(first.cursor.offset).toBe(fs.statSync(wal).size);
    expect(readCommittedFrames(wal, first.cursor)).toBeNull();

    const replica = path.join(dir, 'replica.db');
    apply(replica, first);
    expectReplicaMatches(replica, db);

    db.prepare('UPDATE t SET body = ? WHERE id = 7').run('changed');
    insertRows(db, 50);
    const second = mustRead(wal, first.cursor);
    expect(second.restarted).toBe(false);
    expect(second.commits).toBe(2);
    expect(second.dbSizePages).toBe(db.pragma('page_count', { simple: true }));
    // Only the frames after the cursor, each page at most once.
    const newFrames = (second.cursor.offset - first.cursor.offset) / frameSize(first.cursor);
    expect(second.pages.size).toBeLessThanOrEqual(newFrames);
    expect(second.pages.size).toBeLessThan(first.dbSizePages);
    expect(readCommittedFrames(wal, second.cursor)).toBeNull();

    apply(replica, second);
    expectReplicaMatches(replica, db);
  });

  it('matches what a full read gives when read incrementally', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 100);
    const a = mustRead(wal, null);
    insertRows(db, 100);
    const b = mustRead(wal, a.cursor);
    const all = mustRead(wal, null);
    expect(all.cursor).toEqual(b.cursor);
    expect(all.commits).toBe(a.commits + b.commits);
    expect(all.pages).toEqual(new Map([...a.pages, ...b.pages]));
  });

  it('does not return the spilled frames of an open transaction', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 10);
    const committed = mustRead(wal, null);

    // A tiny cache makes SQLite spill dirty pages into the WAL before COMMIT.
    db.pragma('cache_size = 1');
    db.exec('BEGIN');
    const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
    for (let i = 0; i < 2000; i++) insert.run('y'.repeat(500));
    expect(fs.statSync(wal).size).toBeGreaterThan(committed.cursor.offset + 10 * 4096);

    expect(readCommittedFrames(wal, committed.cursor)).toBeNull();
    const again = mustRead(wal, null);
    expect(again.cursor).toEqual(committed.cursor);
    expect(again.commits).toBe(committed.commits);
    const replica = path.join(dir, 'replica.db');
    apply(replica, again);
    const check = new Database(replica, { readonly: true });
    expect(check.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 10 });
    check.close();

    db.exec('COMMIT');
    const after = mustRead(wal, committed.cursor);
    expect(after.commits).toBe(1);
    apply(replica, after);
    expectReplicaMatches(replica, db);
    expect(rows(db)).toHaveLength(2010);
  });

  it('reports a restart after wal_checkpoint(TRUNCATE) and reads from offset 32', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 100);
    const before = mustRead(wal, null);
    const replica = path.join(dir, 'replica.db');
    apply(replica, before);

    db.pragma('wal_checkpoint(TRUNCATE)');
    expect(fs.statSync(wal).size).toBe(0);
    expect(readWalHeader(wal)).toBeNull();
    expect(readCommittedFrames(wal, before.cursor)).toBeNull();

    insertRows(db, 20);
    const after = mustRead(wal, before.cursor);
    expect(after.restarted).toBe(true);
    expect(after.commits).toBe(1);
    expect(after.cursor.offset).toBe(fs.statSync(wal).size);
    expect(after.cursor.checkpointSeq).toBe(before.cursor.checkpointSeq + 1);
    expect(after.cursor.salt1).toBe((before.cursor.salt1 + 1) >>> 0);
    expect(readCommittedFrames(wal, after.cursor)).toBeNull();

    apply(replica, after);
    expectReplicaMatches(replica, db);
  });

  it('ignores the stale tail left by wal_checkpoint(RESTART)', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 500);
    const before = mustRead(wal, null);
    const replica = path.join(dir, 'replica.db');
    apply(replica, before);
    const oldSize = fs.statSync(wal).size;

    db.pragma('wal_checkpoint(RESTART)');
    // The new header is written only with the next frame.
    expect(readWalHeader(wal)?.salt1).toBe(before.cursor.salt1);
    expect(readCommittedFrames(wal, before.cursor)).toBeNull();

    db.prepare('INSERT INTO t (body) VALUES (?)').run('after restart');
    expect(fs.statSync(wal).size).toBe(oldSize);
    const after = mustRead(wal, before.cursor);
    expect(after.restarted).toBe(true);
    expect(after.commits).toBe(1);
    expect(after.cursor.offset).toBeLessThan(oldSize);
    expect((after.cursor.offset - WAL_HEADER_SIZE) % frameSize(after.cursor)).toBe(0);
    expect(readCommittedFrames(wal, after.cursor)).toBeNull();
    expect(mustRead(wal, null).cursor).toEqual(after.cursor);

    apply(replica, after);
    expectReplicaMatches(replica, db);
  });

  it('stops before a damaged frame, at the last valid commit', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    const cursors: WalCursor[] = [];
    for (let i = 0; i < 3; i++) {
      insertRows(db, 100);
      cursors.push(mustRead(wal, cursors.at(-1) ?? null).cursor);
    }
    const [c1, c2, c3] = cursors as [WalCursor, WalCursor, WalCursor];
    const size = frameSize(c1);
    const damaged = path.join(dir, 'damaged.db-wal');
    const cases: { offset: number; expected: WalCursor | null }[] = [
      // Page data of the first frame after c1.
      { offset: c1.offset + WAL_FRAME_HEADER_SIZE + 100, expected: c1 },
      // Page data of the commit frame ending c2.
      { offset: c2.offset - 1, expected: c1 },
      // Salt in a frame header after c2.
      { offset: c2.offset + size + 9, expected: c2 },
      // Page number of the commit frame ending c3.
      { offset: c3.offset - size + 3, expected: c2 },
      // Stored checksum of the very first frame: nothing is valid.
      { offset: WAL_HEADER_SIZE + 17, expected: null },
    ];
    for (const { offset, expected } of cases) {
      fs.copyFileSync(wal, damaged);
      flipBit(damaged, offset);
      const frames = readCommittedFrames(damaged, null);
      if (expected === null) {
        expect(frames).toBeNull();
        continue;
      }
      expect(frames?.cursor).toEqual(expected);
      expect(readCommittedFrames(damaged, expected)).toBeNull();
    }
  });

  it('throws when the WAL is shorter than the cursor with the same salts', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 100);
    const frames = mustRead(wal, null);
    const copy = path.join(dir, 'copy.db-wal');
    fs.copyFileSync(wal, copy);
    fs.truncateSync(copy, frames.cursor.offset - 1000);
    expect(() => readCommittedFrames(copy, frames.cursor)).toThrow(WalInvalidError);
    // A cursor with another page size does not belong to this WAL.
    fs.copyFileSync(wal, copy);
    const otherPageSize = { ...frames.cursor, pageSize: 1024, offset: WAL_HEADER_SIZE };
    expect(() => readCommittedFrames(copy, otherPageSize)).toThrow(WalInvalidError);
  });

  it('rejects a malformed cursor', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    const { cursor } = mustRead(wal, null);
    expect(() => readCommittedFrames(wal, { ...cursor, offset: cursor.offset + 1 })).toThrow(
      InvalidArgumentError,
    );
    expect(() => readCommittedFrames(wal, { ...cursor, offset: 0 })).toThrow(InvalidArgumentError);
  });

  it('returns null for a missing or header-less WAL', () => {
    const missing = path.join(dir, 'missing.db-wal');
    expect(readCommittedFrames(missing, null)).toBeNull();
    expect(readWalHeader(missing)).toBeNull();
    const short = path.join(dir, 'short.db-wal');
    fs.writeFileSync(short, new Uint8Array(31));
    expect(readCommittedFrames(short, null)).toBeNull();
    expect(readWalHeader(short)).toBeNull();
  });

  it('returns null for a WAL with a header but no frames', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    const header = path.join(dir, 'header.db-wal');
    fs.writeFileSync(header, fs.readFileSync(wal).subarray(0, WAL_HEADER_SIZE));
    expect(readWalHeader(header)).not.toBeNull();
    expect(readCommittedFrames(header, null)).toBeNull();
  });

  it.each([512, 4096, 65536])('works with page size %i', (pageSize) => {
    const { db, wal } = openLeader('leader.db', pageSize);
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 300, 1000);
    expect(readWalHeader(wal)?.pageSize).toBe(pageSize);
    const frames = mustRead(wal, null);
    expect(frames.cursor.pageSize).toBe(pageSize);
    expect(frames.dbSizePages).toBe(db.pragma('page_count', { simple: true }));
    const replica = path.join(dir, 'replica.db');
    apply(replica, frames);
    expectReplicaMatches(replica, db);
  });

  it('reads a WAL of many read chunks, with a transaction across a chunk boundary', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
    const single = (count: number) => {
      for (let i = 0; i < count; i++) insert.run(`single ${i}`);
    };
    // About one frame per commit: the first 4 MiB read ends at frame 1018, inside the batch,
    // whose pages no later commit rewrites (but the last).
    single(800);
    db.prepare('UPDATE t SET body = ? WHERE id % 3 = 0').run('updated');
    insertRows(db, 1500, 1000);
    single(1700);
    const middle = mustRead(wal, null);
    // Spilled frames of an open transaction after the last commit are left out.
    db.pragma('cache_size = 1');
    db.exec('BEGIN');
    for (let i = 0; i < 500; i++) insert.run('y'.repeat(800));
    expect(fs.statSync(wal).size).toBeGreaterThan(2 * 4 * 1024 * 1024);
    const again = mustRead(wal, null);
    expect(again.cursor).toEqual(middle.cursor);
    expect(samePages(again.pages, middle.pages)).toBe(true);
    db.exec('COMMIT');
    single(300);

    const all = mustRead(wal, null);
    expect(all.cursor.offset).toBe(fs.statSync(wal).size);
    expect(all.commits).toBe(middle.commits + 301);
    const rest = mustRead(wal, middle.cursor);
    expect(samePages(all.pages, new Map([...middle.pages, ...rest.pages]))).toBe(true);
    const replica = path.join(dir, 'replica.db');
    apply(replica, all);
    expectReplicaMatches(replica, db);
  });

  it('reads a WAL with big-endian checksums like the same WAL with little-endian ones', () => {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    insertRows(db, 300);
    for (let i = 0; i < 1200; i++) db.prepare('INSERT INTO t (body) VALUES (?)').run(`${i}`);
    const original = fs.readFileSync(wal);
    const bigEndian = readWalHeader(wal)?.bigEndianChecksum ?? false;
    const swapped = path.join(dir, 'swapped.db-wal');
    fs.writeFileSync(swapped, withChecksumOrder(original, !bigEndian));
    expect(readWalHeader(swapped)?.bigEndianChecksum).toBe(!bigEndian);

    const expected = mustRead(wal, null);
    const frames = mustRead(swapped, null);
    expect(samePages(frames.pages, expected.pages)).toBe(true);
    expect(frames.commits).toBe(expected.commits);
    expect(frames.dbSizePages).toBe(expected.dbSizePages);
    expect(frames.cursor.offset).toBe(expected.cursor.offset);
    const replica = path.join(dir, 'replica.db');
    apply(replica, frames);
    expectReplicaMatches(replica, db);

    // Damage is detected in that byte order too.
    const half = WAL_HEADER_SIZE + Math.floor(expected.commits / 2) * frameSize(expected.cursor);
    flipBit(swapped, half + WAL_FRAME_HEADER_SIZE + 5);
    const damaged = readCommittedFrames(swapped, null);
    expect(damaged?.cursor.offset).toBeLessThanOrEqual(half);
    expect(damaged?.commits).toBeLessThan(expected.commits);
  });

  it('keeps a replica equal to the leader through random writes and checkpoints', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('insert' as const), count: fc.integer({ min: 1, max: 80 }) }),
      fc.record({ kind: fc.constant('update' as const), id: fc.integer({ min: 1, max: 400 }) }),
      fc.record({ kind: fc.constant('delete' as const), below: fc.integer({ min: 1, max: 400 }) }),
      fc.record({ kind: fc.constant('read' as const) }),
      fc.record({
        kind: fc.constant('checkpoint' as const),
        mode: fc.constantFrom('PASSIVE', 'FULL', 'RESTART', 'TRUNCATE'),
      }),
      fc.record({ kind: fc.constant('vacuum' as const) }),
    );
    let run = 0;
    fc.assert(
      fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
        run++;
        const { db, wal } = openLeader(`leader-${run}.db`);
        const replica = path.join(dir, `replica-${run}.db`);
        let cursor: WalCursor | null = null;
        const sync = () => {
          const frames = readCommittedFrames(wal, cursor);
          if (frames === null) return;
          apply(replica, frames);
          cursor = frames.cursor;
        };
        try {
          db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
          for (const o of ops) {
            if (o.kind === 'insert') insertRows(db, o.count, 200);
            else if (o.kind === 'update') {
              db.prepare('UPDATE t SET body = ? WHERE id = ?').run('u'.repeat(900), o.id);
            } else if (o.kind === 'delete') db.prepare('DELETE FROM t WHERE id < ?').run(o.below);
            else if (o.kind === 'read') sync();
            else if (o.kind === 'vacuum') db.exec('VACUUM');
            else {
              // Frames not read before a checkpoint may be overwritten: read them first.
              sync();
              db.pragma(`wal_checkpoint(${o.mode})`);
            }
          }
          sync();
          expectReplicaMatches(replica, db);
        } finally {
          db.close();
        }
      }),
      { numRuns: 30 },
    );
  });
});

describe('WAL header', () => {
  function realHeader(): Buffer {
    const { db, wal } = openLeader();
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
    return fs.readFileSync(wal).subarray(0, WAL_HEADER_SIZE);
  }

  /** Rewrites field `at` and recomputes the header checksum, so only that field is wrong. */
  function withField(header: Buffer, at: number, value: number): Buffer {
    const copy = Buffer.from(header);
    copy.writeUInt32BE(value, at);
    const [c1, c2] = walChecksum(copy.subarray(0, 24), copy.readUInt32BE(0) === 0x377f0683);
    copy.writeUInt32BE(c1, 24);
    copy.writeUInt32BE(c2, 28);
    return copy;
  }

  it('parses the header SQLite writes', () => {
    const bytes = realHeader();
    const header = parseWalHeader(bytes);
    expect(header.pageSize).toBe(4096);
    expect(header.bigEndianChecksum).toBe(bytes.readUInt32BE(0) === 0x377f0683);
    expect(header.checksum1).toBe(bytes.readUInt32BE(24));
    // Recomputing with the flipped byte order must produce a valid header too.
    const flipped = withField(bytes, 0, header.bigEndianChecksum ? 0x377f0682 : 0x377f0683);
    expect(parseWalHeader(flipped).bigEndianChecksum).toBe(!header.bigEndianChecksum);
  });

  it('rejects garbage and invalid fields with WalInvalidError', () => {
    const bytes = realHeader();
    const bad = [
      Buffer.from('this is not a write-ahead log, it is just text'),
      withField(bytes, 0, 0x377f0684),
      withField(bytes, 4, 3007001),
      withField(bytes, 8, 256),
      withField(bytes, 8, 3000),
      withField(bytes, 8, 131072),
      Buffer.concat([bytes.subarray(0, 20), Buffer.from([1]), bytes.subarray(21)]),
    ];
    for (const header of bad) {
      expect(() => parseWalHeader(header)).toThrow(WalInvalidError);
      const file = path.join(dir, 'bad.db-wal');
      fs.writeFileSync(file, Buffer.concat([header, Buffer.alloc(4096 + 24)]));
      expect(() => readWalHeader(file)).toThrow(WalInvalidError);
      expect(() => readCommittedFrames(file, null)).toThrow(WalInvalidError);
    }
  });
});

describe('walChecksum', () => {
  it('follows s0 += x[i] + s1; s1 += x[i+1] + s0 in uint32', () => {
    const words = [0xffffffff, 0x00000001, 0x80000000, 0x7fffffff];
    const be = Buffer.alloc(16);
    const le = Buffer.alloc(16);
    words.forEach((w, i) => {
      be.writeUInt32BE(w, i * 4);
      le.writeUInt32LE(w, i * 4);
    });
    let s0 = 0;
    let s1 = 0;
    for (let i = 0; i < words.length; i += 2) {
      s0 = (s0 + (words[i] ?? 0) + s1) >>> 0;
      s1 = (s1 + (words[i + 1] ?? 0) + s0) >>> 0;
    }
    expect(walChecksum(be, true)).toEqual([s0, s1]);
    expect(walChecksum(le, false)).toEqual([s0, s1]);
    // Continuing from a state equals checksumming the concatenation.
    const [a, b] = walChecksum(be.subarray(0, 8), true);
    expect(walChecksum(be.subarray(8), true, a, b)).toEqual([s0, s1]);
    expect(() => walChecksum(new Uint8Array(12), true)).toThrow(InvalidArgumentError);
    // Data at any byte offset, in either byte order, continuing from a state.
    const bytes = new Uint8Array(1 + 4096);
    for (let i = 0; i < bytes.byteLength; i++) bytes[i] = (i * 151) & 0xff;
    for (const bigEndian of [true, false]) {
      const unaligned = bytes.subarray(1);
      const aligned = new Uint8Array(unaligned);
      expect(unaligned.byteOffset % 4).not.toBe(0);
      const expected = walChecksum(aligned, bigEndian, 0xdeadbeef, 0x12345678);
      expect(walChecksum(unaligned, bigEndian, 0xdeadbeef, 0x12345678)).toEqual(expected);
      const view = new DataView(aligned.buffer);
      let a = 0xdeadbeef;
      let b = 0x12345678;
      for (let i = 0; i < aligned.byteLength; i += 8) {
        a = (a + view.getUint32(i, !bigEndian) + b) >>> 0;
        b = (b + view.getUint32(i + 4, !bigEndian) + a) >>> 0;
      }
      expect(expected).toEqual([a, b]);
    }
  });
});

describe('assertSqliteVersion', () => {
  it('accepts 3.51.3 and later only', () => {
    expect(() => assertSqliteVersion('3.51.2')).toThrow(SqliteTooOldError);
    expect(() => assertSqliteVersion('3.9.9')).toThrow(SqliteTooOldError);
    expect(() => assertSqliteVersion('2.99.99')).toThrow(SqliteTooOldError);
    expect(() => assertSqliteVersion('3.51.3')).not.toThrow();
    expect(() => assertSqliteVersion('3.53.2')).not.toThrow();
    expect(() => assertSqliteVersion('3.100.0')).not.toThrow();
    expect(() => assertSqliteVersion('3.52')).not.toThrow();
    expect(() => assertSqliteVersion('3.51')).toThrow(SqliteTooOldError);
    expect(() => assertSqliteVersion('3.8.0', '3.8')).not.toThrow();
    expect(() => assertSqliteVersion('3.51.x')).toThrow(InvalidArgumentError);
  });

  it('accepts the bundled SQLite', () => {
    const db = new Database(':memory:');
    const { version } = db.prepare('SELECT sqlite_version() AS version').get() as {
      version: string;
    };
    db.close();
    expect(() => assertSqliteVersion(version)).not.toThrow();
  });
});
