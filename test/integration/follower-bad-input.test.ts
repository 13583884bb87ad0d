import fs from 'node:fs';
import path from 'node:path';
import { brotliCompressSync, brotliDecompressSync, crc32 } from 'node:zlib';
import type Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMemoryStorage, type MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import {
  ChangesetError,
  type ChangesetErrorCode,
  LineageAheadError,
  ReplicationGapError,
} from '../../src/errors.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import { SqliteFollower } from '../../src/replication/sqlite/follower.ts';
import type { SqliteLeader } from '../../src/replication/sqlite/leader.ts';
import { decodeChangeset, encodeChangeset } from '../../src/wire/changeset.ts';
import {
  logicalContent,
  openNewLeader,
  rejection,
  tempDirs,
  withReadOnly,
} from './support/replication.ts';

const PREFIX = 'tenant';
const DB = 'app';
/** Frame header: magic(4) version(1) codec(1) body length(4) CRC32(4). */
const FRAME_HEADER_BYTES = 14;

const freshDir = tempDirs('hadb-bad-input-');

/** The logical content of `file`, once its integrity check passed. */
function contentOf(file: string): unknown {
  return withReadOnly(file, (db) => {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    return logicalContent(db);
  });
}

/** Step `seq` of a workload; `flavor` makes another database's history differ from this one. */
function writeStep(db: Database.Database, seq: number, flavor = 'main'): void {
  if (seq === 1) {
    db.exec('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, data BLOB)');
    return;
  }
  const insert = db.prepare('INSERT INTO notes (body, data) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = 0; i < 5; i++) {
      insert.run(`${flavor} ${seq}.${i}`, Buffer.alloc(i === 0 ? 6000 : 50, seq + i));
    }
  })();
}

function flipBit(bytes: Uint8Array, offset: number, bit: number): Uint8Array {
  const copy = bytes.slice();
  copy[offset] = (copy[offset] ?? 0) ^ (1 << bit);
  return copy;
}

/** A frame whose CRC is right for a body changed after decompressing: only the checksum can tell. */
function reframeWithChangedBody(bytes: Uint8Array, change: (body: Buffer) => void): Uint8Array {
  expect(bytes[5], 'codec is brotli').toBe(2);
  const body = brotliDecompressSync(bytes.subarray(FRAME_HEADER_BYTES));
  change(body);
  const compressed = brotliCompressSync(body);
  const out = Buffer.alloc(FRAME_HEADER_BYTES + compressed.length);
  out.set(bytes.subarray(0, 6), 0);
  out.writeUInt32BE(compressed.length, 6);
  out.writeUInt32BE(crc32(compressed), 10);
  out.set(compressed, FRAME_HEADER_BYTES);
  return out;
}

interface Cluster {
  storage: MemoryStorage;
  leader: SqliteLeader;
  follower: SqliteFollower;
  followerPath: string;
  /** Steps written so far. */
  steps: number;
}

async function openLeader(
  storage: StorageBackend,
  options: { db?: string; flavor?: string; steps: number },
): Promise<SqliteLeader> {
  const leader = await openNewLeader({
    path: path.join(freshDir('leader'), 'leader.db'),
    db: options.db ?? DB,
    storage,
    prefix: PREFIX,
  });
  for (let seq = 1; seq <= options.steps; seq++) {
    writeStep(leader.database, seq, options.flavor);
    await leader.flush();
  }
  return leader;
}

/** Changeset `seq` of another leader: of another database (`db`) or another history (`flavor`). */
async function foreignChangeset(
  seq: number,
  options: { db?: string; flavor?: string },
): Promise<Uint8Array> {
  const otherStorage = createMemoryStorage();
  const other = await openLeader(otherStorage, { ...options, steps: seq });
  try {
    const foreign = await otherStorage.get(logKey(PREFIX, options.db ?? DB, seq));
    if (!foreign) throw new Error('foreign changeset missing');
    return foreign;
  } finally {
    await other.close();
  }
}

/** Files next to the follower's copy, its bytes, state file and position. */
function followerSnapshot(cluster: Cluster) {
  const dir = path.dirname(cluster.followerPath);
  return {
    files: fs.readdirSync(dir).sort(),
    bytes: fs.readFileSync(cluster.followerPath),
    state: fs.readFileSync(`${cluster.followerPath}-hadb-follower.json`, 'utf8'),
    position: cluster.follower.position,
  };
}

function expectUntouched(cluster: Cluster, before: ReturnType<typeof followerSnapshot>): void {
  const after = followerSnapshot(cluster);
  expect(after.files).toEqual(before.files);
  expect(after.bytes.equals(before.bytes), 'follower file bytes unchanged').toBe(true);
  expect(after.state).toBe(before.state);
  expect(after.position).toEqual(before.position);
}

describe('a follower rejects bad input and stays untouched', () => {
  let cluster: Cluster;

  beforeEach(async () => {
    const storage = createMemoryStorage();
    const leader = await openLeader(storage, { steps: 3 });
    const followerPath = path.join(freshDir('follower'), 'follower.db');
    const follower = await SqliteFollower.open({
      path: followerPath,
      db: DB,
      storage,
      prefix: PREFIX,
    });
    expect(await follower.pull()).toBe(3);
    cluster = { storage, leader, follower, followerPath, steps: 3 };
  });

  afterEach(async () => {
    cluster.follower.close();
    await cluster.leader.close();
  });

  /** The leader ships the next changeset; returns its seq and genuine bytes. */
  async function leaderShipsNext(): Promise<{ seq: number; genuine: Uint8Array }> {
    cluster.steps += 1;
    writeStep(cluster.leader.database, cluster.steps);
    const { seq } = await cluster.leader.flush();
    expect(seq).toBe(cluster.steps);
    const genuine = await cluster.storage.get(logKey(PREFIX, DB, seq));
    if (!genuine) throw new Error(`changeset ${seq} missing`);
    return { seq, genuine };
  }

  /** Stores `bad` at `seq`, expects pull() to fail without touching the follower. */
  async function expectRejected(seq: number, bad: Uint8Array): Promise<unknown> {
    await cluster.storage.put(logKey(PREFIX, DB, seq), bad);
    const before = followerSnapshot(cluster);
    const error = await rejection(cluster.follower.pull());
    expectUntouched(cluster, before);
    return error;
  }

  function expectChangesetError(error: unknown, codes: ChangesetErrorCode[], label: string): void {
    expect(error, label).toBeInstanceOf(ChangesetError);
    expect(codes, `${label}: ${(error as Error).message}`).toContain(
      (error as ChangesetError).code,
    );
  }

  /** Puts the genuine bytes back: the follower applies them and converges with the leader. */
  async function expectRecovers(seq: number, genuine: Uint8Array): Promise<void> {
    await cluster.storage.put(logKey(PREFIX, DB, seq), genuine);
    expect(await cluster.follower.pull()).toBe(cluster.leader.position.seq - seq + 1);
    expect(cluster.follower.position.seq).toBe(cluster.leader.position.seq);
    expect(Buffer.from(cluster.follower.position.checksum)).toEqual(
      Buffer.from(cluster.leader.position.checksum),
    );
    expect(contentOf(cluster.followerPath)).toEqual(logicalContent(cluster.leader.database));
  }

  it('single bit flips anywhere in the frame: CHANGESET_CORRUPT (or UNKNOWN_VERSION in the version and codec bytes)', async () => {
    const { seq, genuine } = await leaderShipsNext();
    const bodyOffsets = [
      0,
      1,
      2,
      17,
      Math.floor(genuine.length / 2),
      genuine.length - 2,
      genuine.length - 1,
    ].map((offset) => Math.min(genuine.length - 1, FRAME_HEADER_BYTES + offset));
    const offsets = [...Array(FRAME_HEADER_BYTES).keys(), ...new Set(bodyOffsets)];
    for (const offset of offsets) {
      for (const bit of [0, 3, 7]) {
        const error = await expectRejected(seq, flipBit(genuine, offset, bit));
        const codes: ChangesetErrorCode[] =
          offset === 4 || offset === 5
            ? ['CHANGESET_CORRUPT', 'CHANGESET_UNKNOWN_VERSION']
            : ['CHANGESET_CORRUPT'];
        expectChangesetError(error, codes, `bit ${bit} of byte ${offset}`);
      }
    }
    await expectRecovers(seq, genuine);
  });

  it('content changed under an intact frame: CHANGESET_CHECKSUM_MISMATCH', async () => {
    const { seq, genuine } = await leaderShipsNext();
    const decoded = decodeChangeset(genuine);
    const flipAt = (needle: Uint8Array) => (body: Buffer) => {
      const at = body.indexOf(Buffer.from(needle));
      expect(at).toBeGreaterThanOrEqual(0);
      body[at] = (body[at] ?? 0) ^ 0x01;
    };
    const variants: [string, (body: Buffer) => void][] = [
      // Pages are the last field: the final byte of the body is the last byte of the last page.
      [
        'a page byte',
        (body) => {
          body[body.length - 1] = (body[body.length - 1] ?? 0) ^ 0x40;
        },
      ],
      ['the checksum', flipAt(decoded.checksum)],
      ['the previous checksum', flipAt(decoded.prevChecksum)],
    ];
    for (const [what, change] of variants) {
      const error = await expectRejected(seq, reframeWithChangedBody(genuine, change));
      expectChangesetError(error, ['CHANGESET_CHECKSUM_MISMATCH'], what);
    }
    await expectRecovers(seq, genuine);
  });

  it('truncated or extended bytes: CHANGESET_CORRUPT', async () => {
    const { seq, genuine } = await leaderShipsNext();
    const lengths = [0, 1, 4, 5, 13, 14, 15, Math.floor(genuine.length / 2), genuine.length - 1];
    for (const length of lengths) {
      const error = await expectRejected(seq, genuine.slice(0, length));
      expectChangesetError(error, ['CHANGESET_CORRUPT'], `first ${length} bytes`);
    }
    const extended = Buffer.concat([genuine, Buffer.from([0])]);
    expectChangesetError(await expectRejected(seq, extended), ['CHANGESET_CORRUPT'], 'extended');
    await expectRecovers(seq, genuine);
  });

  it('a changeset of another database at the same seq: CHANGESET_WRONG_DATABASE', async () => {
    const { seq, genuine } = await leaderShipsNext();
    const foreign = await foreignChangeset(seq, { db: 'other-app' });
    const error = await expectRejected(seq, foreign);
    expectChangesetError(error, ['CHANGESET_WRONG_DATABASE'], 'other database');
    await expectRecovers(seq, genuine);
  });

  it('the same database name with another history (another tenant): CHANGESET_CHAIN_BROKEN', async () => {
    const { seq, genuine } = await leaderShipsNext();
    const foreign = await foreignChangeset(seq, { flavor: 'elsewhere' });
    const error = await expectRejected(seq, foreign);
    expectChangesetError(error, ['CHANGESET_CHAIN_BROKEN'], 'other history');
    await expectRecovers(seq, genuine);
  });

  it('a replayed older changeset, or a later one, at seq N: CHANGESET_CHAIN_BROKEN', async () => {
    const { seq, genuine } = await leaderShipsNext();
    const older = await cluster.storage.get(logKey(PREFIX, DB, seq - 1));
    if (!older) throw new Error('older changeset missing');
    expectChangesetError(await expectRejected(seq, older), ['CHANGESET_CHAIN_BROKEN'], 'replay');
    const first = await cluster.storage.get(logKey(PREFIX, DB, 1));
    if (!first) throw new Error('first changeset missing');
    expectChangesetError(await expectRejected(seq, first), ['CHANGESET_CHAIN_BROKEN'], 'seq 1');

    // The next changeset stored one slot early.
    await cluster.storage.put(logKey(PREFIX, DB, seq), genuine);
    const { seq: nextSeq, genuine: next } = await leaderShipsNext();
    expect(nextSeq).toBe(seq + 1);
    expectChangesetError(await expectRejected(seq, next), ['CHANGESET_CHAIN_BROKEN'], 'later');
    await expectRecovers(seq, genuine);
  });

  it('a changeset with another page size: CHANGESET_WRONG_PAGE_SIZE', async () => {
    const { seq, genuine } = await leaderShipsNext();
    const decoded = decodeChangeset(genuine);
    expect(decoded.pageSize).toBe(4096);
    for (const pageSize of [1024, 8192, 65536]) {
      const page1 = Buffer.alloc(pageSize);
      page1.write('SQLite format 3\0', 0, 'latin1');
      page1.writeUInt16BE(pageSize === 65536 ? 1 : pageSize, 16);
      const { bytes } = encodeChangeset({
        db: DB,
        epoch: decoded.epoch,
        seq,
        commitTimeMs: decoded.commitTimeMs,
        prevChecksum: cluster.follower.position.checksum,
        pageSize,
        dbSizePages: 1,
        pages: [{ pgno: 1, data: page1 }],
      });
      const error = await expectRejected(seq, bytes);
      expectChangesetError(error, ['CHANGESET_WRONG_PAGE_SIZE'], `page size ${pageSize}`);
    }
    await expectRecovers(seq, genuine);
  });

  it('a gap (N missing, N+1 present, no snapshot covering N): ReplicationGapError', async () => {
    const { seq, genuine } = await leaderShipsNext();
    await leaderShipsNext();
    await cluster.storage.delete([logKey(PREFIX, DB, seq)]);
    const before = followerSnapshot(cluster);
    const error = await rejection(cluster.follower.pull());
    expect(error).toBeInstanceOf(ReplicationGapError);
    expect((error as ReplicationGapError).code).toBe('REPLICATION_GAP');
    expectUntouched(cluster, before);
    await expectRecovers(seq, genuine);
  });

  it('N missing with nothing after it is no error: nothing to apply yet', async () => {
    const { seq, genuine } = await leaderShipsNext();
    await cluster.storage.delete([logKey(PREFIX, DB, seq)]);
    const before = followerSnapshot(cluster);
    expect(await cluster.follower.pull()).toBe(0);
    expectUntouched(cluster, before);
    await expectRecovers(seq, genuine);
  });

  it('a valid but different link at N is applied; the fork is caught on the next pull and at open', async () => {
    // A changeset that links correctly but is not the leader's: storage decides what is true.
    const { seq, genuine } = await leaderShipsNext();
    const decoded = decodeChangeset(genuine);
    const { bytes: forked } = encodeChangeset({
      db: decoded.db,
      epoch: decoded.epoch,
      seq,
      commitTimeMs: decoded.commitTimeMs + 1,
      prevChecksum: decoded.prevChecksum,
      pageSize: decoded.pageSize,
      dbSizePages: decoded.dbSizePages,
      pages: decoded.pages,
    });
    await cluster.storage.put(logKey(PREFIX, DB, seq), forked);
    expect(await cluster.follower.pull()).toBe(1);
    expect(cluster.follower.position.seq).toBe(seq);

    // Storage is repaired and moves on: the follower's history is no longer storage's.
    await cluster.storage.put(logKey(PREFIX, DB, seq), genuine);
    await leaderShipsNext();
    const before = followerSnapshot(cluster);
    const error = await rejection(cluster.follower.pull());
    expectChangesetError(error, ['CHANGESET_CHAIN_BROKEN'], 'after a fork');
    expectUntouched(cluster, before);

    cluster.follower.close();
    const reopened = await rejection(
      SqliteFollower.open({
        path: cluster.followerPath,
        db: DB,
        storage: cluster.storage,
        prefix: PREFIX,
      }),
    );
    expect(reopened).toBeInstanceOf(LineageAheadError);
    expect(fs.readFileSync(cluster.followerPath).equals(before.bytes)).toBe(true);
    expect(fs.readFileSync(`${cluster.followerPath}-hadb-follower.json`, 'utf8')).toBe(
      before.state,
    );
  });
});

describe('a follower whose local history storage does not have refuses to open', () => {
  let storage: MemoryStorage;
  let leader: SqliteLeader;
  let followerPath: string;

  beforeEach(async () => {
    storage = createMemoryStorage();
    leader = await openLeader(storage, { steps: 5 });
    followerPath = path.join(freshDir('follower'), 'follower.db');
    const follower = await SqliteFollower.open({
      path: followerPath,
      db: DB,
      storage,
      prefix: PREFIX,
    });
    await follower.pull();
    expect(follower.position.seq).toBe(5);
    follower.close();
  });

  afterEach(async () => {
    await leader.close();
  });

  function localState() {
    return {
      bytes: fs.readFileSync(followerPath),
      state: fs.readFileSync(`${followerPath}-hadb-follower.json`, 'utf8'),
      files: fs.readdirSync(path.dirname(followerPath)).sort(),
    };
  }

  function expectSameLocalState(before: ReturnType<typeof localState>): void {
    const after = localState();
    expect(after.bytes.equals(before.bytes), 'follower file bytes unchanged').toBe(true);
    expect(after.state).toBe(before.state);
    expect(after.files).toEqual(before.files);
  }

  async function expectConverges(on: StorageBackend): Promise<void> {
    const follower = await SqliteFollower.open({
      path: followerPath,
      db: DB,
      storage: on,
      prefix: PREFIX,
    });
    try {
      await follower.pull();
      expect(follower.position.seq).toBe(leader.position.seq);
    } finally {
      follower.close();
    }
    expect(contentOf(followerPath)).toEqual(logicalContent(leader.database));
  }

  it('storage with a different history of the same database (a fork): LineageAheadError', async () => {
    const forkStorage = createMemoryStorage();
    const other = await openLeader(forkStorage, { flavor: 'fork', steps: 6 });
    await other.close();
    const before = localState();
    const error = await rejection(
      SqliteFollower.open({ path: followerPath, db: DB, storage: forkStorage, prefix: PREFIX }),
    );
    expect(error).toBeInstanceOf(LineageAheadError);
    expect((error as LineageAheadError).code).toBe('LINEAGE_AHEAD');
    expect((error as Error).message).toContain('forked');
    expectSameLocalState(before);
    // Against the right storage it carries on.
    writeStep(leader.database, 6);
    await leader.flush();
    await expectConverges(storage);
  });

  it('storage behind the local copy: LineageAheadError, then fine once storage has the history', async () => {
    const behind = createMemoryStorage();
    const keys = (await storage.list('')).objects.map((object) => object.key);
    const missing = [4, 5].map((seq) => logKey(PREFIX, DB, seq));
    for (const key of keys) {
      if (missing.includes(key)) continue;
      const body = await storage.get(key);
      if (body) await behind.put(key, body);
    }
    const before = localState();
    const error = await rejection(
      SqliteFollower.open({ path: followerPath, db: DB, storage: behind, prefix: PREFIX }),
    );
    expect(error).toBeInstanceOf(LineageAheadError);
    expect((error as Error).message).toContain('refusing to replace it');
    expectSameLocalState(before);

    // Storage catches up (the leader's changesets arrive, and one more).
    writeStep(leader.database, 6);
    await leader.flush();
    for (const seq of [4, 5, 6]) {
      const body = await storage.get(logKey(PREFIX, DB, seq));
      if (!body) throw new Error(`changeset ${seq} missing`);
      await behind.put(logKey(PREFIX, DB, seq), body);
    }
    await expectConverges(behind);
  });
});
