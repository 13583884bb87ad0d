import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import { InvalidArgumentError, SnapshotInvalidError } from '../../src/errors.ts';
import {
  assertValidDbName,
  deleteSnapshot,
  hex16,
  listSnapshots,
  logKey,
  readDatabaseImage,
  readSnapshotManifest,
  restoreSnapshot,
  type SnapshotInfo,
  type SnapshotManifest,
  snapshotManifestKey,
  snapshotPartKey,
  snapshotPrefix,
  writeSnapshot,
} from '../../src/replication/snapshot.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const PREFIX = 'backups';
const DB = 'app.db';
const execFileAsync = promisify(execFile);

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-snap-'));
});

afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Source {
  file: string;
  pageSize: number;
  dbSizePages: number;
}

/** A closed rollback-journal database of about `bytes`, with text, reals and blobs. */
function makeDatabase(file: string, bytes: number, seed = 1): Source {
  const db = new Database(file);
  db.pragma('journal_mode = DELETE');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n REAL, data BLOB)');
  const insert = db.prepare('INSERT INTO t (name, n, data) VALUES (?, ?, ?)');
  let written = 0;
  let i = 0;
  db.transaction(() => {
    while (written < bytes) {
      // Half random (incompressible), half repetitive; some larger than a page (overflow pages).
      const size = 100 + ((i * 7919 + seed) % 9000);
      const data = i % 2 === 0 ? randomBytes(size) : Buffer.alloc(size, i % 251);
      insert.run(`row ${i} of ${seed}`, i * 1.5 + seed, data);
      written += size;
      i++;
    }
  })();
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const dbSizePages = db.pragma('page_count', { simple: true }) as number;
  db.close();
  return { file, pageSize, dbSizePages };
}

function infoFor(source: Source, seq: number, overrides: Partial<SnapshotInfo> = {}): SnapshotInfo {
  return {
    prefix: PREFIX,
    db: DB,
    seq,
    epoch: 3,
    checksum: new Uint8Array(32).fill(seq % 256),
    pageSize: source.pageSize,
    dbSizePages: source.dbSizePages,
    commitTimeMs: 1_700_000_000_000,
    ...overrides,
  };
}

function imageOf(source: Source, overlay?: ReadonlyMap<number, Uint8Array>) {
  return readDatabaseImage(source.file, {
    pageSize: source.pageSize,
    dbSizePages: source.dbSizePages,
    ...(overlay ? { overlay } : {}),
  });
}

async function collect(image: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of image) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function* chunksOf(bytes: Uint8Array, size = 10_000): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** Row count and a digest of every row: deep-equalling megabytes of blobs is slow. */
function rowsOf(file: string): { count: number; digest: string } {
  const db = new Database(file, { readonly: true });
  try {
    const hash = createHash('sha256');
    let count = 0;
    for (const row of db.prepare('SELECT id, name, n, data FROM t ORDER BY id').iterate()) {
      const { id, name, n, data } = row as { id: number; name: string; n: number; data: Buffer };
      hash.update(`${id}|${name}|${n}|${data.length}|`).update(data);
      count++;
    }
    return { count, digest: hash.digest('hex') };
  } finally {
    db.close();
  }
}

function tempFilesIn(directory: string): string[] {
  return fs.readdirSync(directory).filter((name) => name.includes('.hadb-restore-'));
}

async function allKeys(storage: StorageBackend, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await storage.list(prefix, startAfter === undefined ? {} : { startAfter });
    keys.push(...page.objects.map((object) => object.key));
    if (page.nextStartAfter === undefined) return keys;
    startAfter = page.nextStartAfter;
  }
}

function expectIncreasingTo(values: number[], total: number): void {
  expect(values.length).toBeGreaterThan(1);
  for (let i = 1; i < values.length; i++) expect(values[i]).toBeGreaterThan(values[i - 1] ?? 0);
  expect(values.at(-1)).toBe(total);
}

describe('keys', () => {
  it('formats log and snapshot keys, with or without a prefix', () => {
    expect(hex16(0)).toBe('0000000000000000');
    expect(hex16(0xabc)).toBe('0000000000000abc');
    expect(logKey('p/q', 'db1', 255)).toBe('p/q/db1/log/00000000000000ff');
    expect(logKey('', 'db1', 1)).toBe('db1/log/0000000000000001');
    expect(snapshotPrefix('', 'db1', 16)).toBe('db1/snap/0000000000000010');
    expect(snapshotPartKey('p', 'db1', 16, 7)).toBe('p/db1/snap/0000000000000010/part-000007');
    expect(snapshotManifestKey('p', 'db1', 16)).toBe('p/db1/snap/0000000000000010/manifest');
  });

  it('rejects bad seqs and database names', () => {
    expect(() => hex16(-1)).toThrow(InvalidArgumentError);
    expect(() => hex16(1.5)).toThrow(InvalidArgumentError);
    expect(() => hex16(2 ** 53)).toThrow(InvalidArgumentError);
    for (const bad of ['', '.hidden', 'a/b', 'a b', 'x'.repeat(129), 'é', '..']) {
      expect(() => assertValidDbName(bad), bad).toThrow(InvalidArgumentError);
      expect(() => logKey('', bad, 1), bad).toThrow(InvalidArgumentError);
    }
    for (const good of ['a', 'app.db', 'A-b_c.9', 'x'.repeat(128), '-x']) {
      expect(() => assertValidDbName(good), good).not.toThrow();
    }
  });
});

describe.each([
  ['fs', () => createFsStorage({ root: path.join(dir, 'store') })],
  ['memory', () => createMemoryStorage()],
])('snapshot round trip (%s storage)', (_name, makeStorage) => {
  it('restores a byte-identical, valid database from many parts', async () => {
    const storage = makeStorage();
    const source = makeDatabase(path.join(dir, 'source.db'), 3 * MiB);
    const total = source.pageSize * source.dbSizePages;
    expect(fs.statSync(source.file).size).toBe(total);

    const written: number[] = [];
    const manifest = await writeSnapshot(storage, infoFor(source, 42), imageOf(source), {
      partBytes: 64 * KiB,
      onProgress: (done) => written.push(done),
    });
    expectIncreasingTo(written, total);
    expect(manifest.parts.length).toBe(Math.ceil(total / (64 * KiB)));
    expect(manifest).toMatchObject({
      format: 'hadb-snapshot',
      v: 1,
      db: DB,
      seq: 42,
      epoch: 3,
      checksum: '2a'.repeat(32),
      rawBytes: total,
      codec: 'brotli',
    });
    // Half the rows are repetitive, so compression pays.
    const stored = manifest.parts.reduce((sum, part) => sum + part.storedBytes, 0);
    expect(stored).toBeLessThan(total);
    expect(await readSnapshotManifest(storage, PREFIX, DB, 42)).toEqual(manifest);
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([42]);

    const dest = path.join(dir, 'restored.db');
    const restored: number[] = [];
    await restoreSnapshot(storage, PREFIX, manifest, dest, {
      onProgress: (done, totalBytes) => {
        expect(totalBytes).toBe(total);
        restored.push(done);
      },
    });
    expectIncreasingTo(restored, total);
    expect(fs.readFileSync(dest).equals(fs.readFileSync(source.file))).toBe(true);
    expect(tempFilesIn(dir)).toEqual([]);

    const db = new Database(dest, { readonly: true });
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    db.close();
    const rows = rowsOf(source.file);
    expect(rows.count).toBeGreaterThan(500);
    expect(rowsOf(dest)).toEqual(rows);
  });

  it('restores parts stored with deflate-raw, the codec of earlier versions', async () => {
    const storage = makeStorage();
    const source = makeDatabase(path.join(dir, 'source.db'), 300 * KiB);
    const manifest = await writeSnapshot(storage, infoFor(source, 1), imageOf(source), {
      partBytes: 50_000,
      codec: 'deflate-raw',
    });
    expect(manifest.codec).toBe('deflate-raw');
    expect(manifest.parts.reduce((sum, part) => sum + part.storedBytes, 0)).toBeLessThan(
      manifest.rawBytes,
    );
    const dest = path.join(dir, 'restored.db');
    await restoreSnapshot(storage, PREFIX, manifest, dest);
    expect(fs.readFileSync(dest).equals(fs.readFileSync(source.file))).toBe(true);
  });

  it('stores uncompressed parts with codec none', async () => {
    const storage = makeStorage();
    const source = makeDatabase(path.join(dir, 'source.db'), 300 * KiB);
    const manifest = await writeSnapshot(storage, infoFor(source, 1), imageOf(source), {
      partBytes: 50_000,
      codec: 'none',
    });
    expect(manifest.codec).toBe('none');
    for (const part of manifest.parts) expect(part.storedBytes).toBe(part.rawBytes);
    const dest = path.join(dir, 'restored.db');
    await restoreSnapshot(storage, PREFIX, manifest, dest);
    expect(fs.readFileSync(dest).equals(fs.readFileSync(source.file))).toBe(true);
  });
});

describe('readDatabaseImage', () => {
  it('lays overlay pages over the file, exactly there', async () => {
    const a = makeDatabase(path.join(dir, 'a.db'), 200 * KiB, 1);
    // Larger, so its root page (page 2) holds other child pointers.
    const b = makeDatabase(path.join(dir, 'b.db'), 600 * KiB, 2);
    const { pageSize } = a;
    const fileA = fs.readFileSync(a.file);
    const page2 = fs.readFileSync(b.file).subarray(pageSize, 2 * pageSize);
    expect(page2.equals(fileA.subarray(pageSize, 2 * pageSize))).toBe(false);

    const image = await collect(imageOf(a, new Map([[2, new Uint8Array(page2)]])));
    expect(image.length).toBe(fileA.length);
    expect(image.subarray(pageSize, 2 * pageSize).equals(page2)).toBe(true);
    expect(image.subarray(0, pageSize).equals(fileA.subarray(0, pageSize))).toBe(true);
    expect(image.subarray(2 * pageSize).equals(fileA.subarray(2 * pageSize))).toBe(true);
    expect((await collect(imageOf(a))).equals(fileA)).toBe(true);
  });

  it('pads with zero pages, stops at dbSizePages and yields chunks of chunkBytes', async () => {
    const source = makeDatabase(path.join(dir, 'a.db'), 100 * KiB);
    const { pageSize, dbSizePages } = source;
    const file = fs.readFileSync(source.file);
    const overlay = new Map([[dbSizePages + 2, new Uint8Array(pageSize).fill(7)]]);

    const chunks: Uint8Array[] = [];
    for await (const chunk of readDatabaseImage(source.file, {
      pageSize,
      dbSizePages: dbSizePages + 3,
      chunkBytes: 3 * pageSize,
      overlay,
    })) {
      chunks.push(chunk);
    }
    for (const chunk of chunks.slice(0, -1)) expect(chunk.length).toBe(3 * pageSize);
    const longer = Buffer.concat(chunks);
    expect(longer.length).toBe((dbSizePages + 3) * pageSize);
    expect(longer.subarray(0, file.length).equals(file)).toBe(true);
    const tail = longer.subarray(file.length);
    expect(tail.subarray(0, pageSize).every((byte) => byte === 0)).toBe(true);
    expect(tail.subarray(pageSize, 2 * pageSize).every((byte) => byte === 7)).toBe(true);
    expect(tail.subarray(2 * pageSize).every((byte) => byte === 0)).toBe(true);

    const shorter = await collect(
      readDatabaseImage(source.file, { pageSize, dbSizePages: 5, chunkBytes: 2 * pageSize }),
    );
    expect(shorter.equals(file.subarray(0, 5 * pageSize))).toBe(true);
  });

  it('rejects bad geometry and overlay pages', async () => {
    const source = makeDatabase(path.join(dir, 'a.db'), 10 * KiB);
    const { pageSize } = source;
    const bad = [
      { pageSize: 1000, dbSizePages: 1 },
      { pageSize, dbSizePages: -1 },
      { pageSize, dbSizePages: 1, chunkBytes: pageSize + 1 },
      { pageSize, dbSizePages: 1, overlay: new Map([[0, new Uint8Array(pageSize)]]) },
      { pageSize, dbSizePages: 1, overlay: new Map([[1, new Uint8Array(10)]]) },
    ];
    for (const options of bad) {
      await expect(collect(readDatabaseImage(source.file, options))).rejects.toThrow(
        InvalidArgumentError,
      );
    }
  });
});

describe('restore failures', () => {
  let storage: StorageBackend;
  let source: Source;
  let manifest: SnapshotManifest;
  let dest: string;
  const oldBytes = Buffer.from('old database bytes');

  beforeEach(async () => {
    storage = createFsStorage({ root: path.join(dir, 'store') });
    source = makeDatabase(path.join(dir, 'source.db'), 500 * KiB);
    manifest = await writeSnapshot(storage, infoFor(source, 9), imageOf(source), {
      partBytes: 64 * KiB,
    });
    expect(manifest.parts.length).toBeGreaterThan(4);
    dest = path.join(dir, 'dest.db');
    fs.writeFileSync(dest, oldBytes);
  });

  async function expectRestoreFails(partKey: string): Promise<void> {
    const error = await restoreSnapshot(storage, PREFIX, manifest, dest).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SnapshotInvalidError);
    expect((error as Error).message).toContain(partKey);
    expect(fs.readFileSync(dest)).toEqual(oldBytes);
    expect(tempFilesIn(dir)).toEqual([]);
  }

  it('names a missing part and leaves the destination alone', async () => {
    const key = snapshotPartKey(PREFIX, DB, 9, 3);
    await storage.delete([key]);
    await expectRestoreFails(key);
  });

  it('names a corrupted part, whether decompression or the hash catches it', async () => {
    const key = snapshotPartKey(PREFIX, DB, 9, 2);
    const stored = await storage.get(key);
    if (!stored) throw new Error('part missing');
    for (const at of [0, Math.floor(stored.length / 2), stored.length - 1]) {
      const damaged = stored.slice();
      damaged[at] = (damaged[at] ?? 0) ^ 0x01;
      await storage.put(key, damaged);
      await expectRestoreFails(key);
    }
    await storage.put(key, stored.subarray(0, stored.length - 100));
    await expectRestoreFails(key);
  });

  it('catches a raw part swapped for another valid one', async () => {
    const other = await storage.get(snapshotPartKey(PREFIX, DB, 9, 1));
    if (!other) throw new Error('part missing');
    const key = snapshotPartKey(PREFIX, DB, 9, 4);
    await storage.put(key, other);
    await expectRestoreFails(key);
  });

  it('deletes stale -wal, -shm and -journal files on success', async () => {
    for (const suffix of ['-wal', '-shm', '-journal'])
      fs.writeFileSync(`${dest}${suffix}`, 'stale');
    await restoreSnapshot(storage, PREFIX, manifest, dest);
    for (const suffix of ['-wal', '-shm', '-journal']) {
      expect(fs.existsSync(`${dest}${suffix}`)).toBe(false);
    }
    expect(fs.readFileSync(dest).equals(fs.readFileSync(source.file))).toBe(true);
    expect(fs.readdirSync(dir).sort()).toEqual(['dest.db', 'source.db', 'store']);
  });

  it('rejects a manifest that does not add up', async () => {
    const broken = { ...manifest, parts: manifest.parts.slice(1) };
    await expect(restoreSnapshot(storage, PREFIX, broken, dest)).rejects.toThrow(
      SnapshotInvalidError,
    );
    expect(fs.readFileSync(dest)).toEqual(oldBytes);
    expect(tempFilesIn(dir)).toEqual([]);
  });
});

describe('writeSnapshot', () => {
  it('returns the existing manifest for the same image, refuses a different one', async () => {
    const storage = createMemoryStorage();
    const a = makeDatabase(path.join(dir, 'a.db'), 200 * KiB, 1);
    const b = makeDatabase(path.join(dir, 'b.db'), 200 * KiB, 2);
    const first = await writeSnapshot(storage, infoFor(a, 5), imageOf(a), {
      partBytes: 64 * KiB,
      now: () => 1,
    });
    const again = await writeSnapshot(storage, infoFor(a, 5), imageOf(a), {
      partBytes: 64 * KiB,
      now: () => 2,
    });
    expect(again).toEqual(first);
    expect(again.createdAtMs).toBe(1);

    await expect(
      writeSnapshot(storage, infoFor(b, 5), imageOf(b), { partBytes: 64 * KiB }),
    ).rejects.toThrow(SnapshotInvalidError);
    // Same image under another chain checksum is a fork as well.
    await expect(
      writeSnapshot(storage, infoFor(a, 5, { checksum: new Uint8Array(32) }), imageOf(a)),
    ).rejects.toThrow(SnapshotInvalidError);

    // The committed snapshot's parts were left alone.
    const dest = path.join(dir, 'dest.db');
    await restoreSnapshot(storage, PREFIX, first, dest);
    expect(fs.readFileSync(dest).equals(fs.readFileSync(a.file))).toBe(true);
  });

  it('detects a fork when another writer commits the seq during the upload', async () => {
    const inner = createMemoryStorage();
    const a = makeDatabase(path.join(dir, 'a.db'), 100 * KiB, 1);
    const b = makeDatabase(path.join(dir, 'b.db'), 100 * KiB, 2);
    const first = await writeSnapshot(inner, infoFor(a, 5), imageOf(a));
    // Hide the manifest from the first look, as if the other writer committed meanwhile.
    const racing = (): StorageBackend => {
      let hidden = true;
      return {
        put: (key, body) => inner.put(key, body),
        putIfAbsent: (key, body) => inner.putIfAbsent(key, body),
        list: (prefix, options) => inner.list(prefix, options),
        delete: (keys) => inner.delete(keys),
        get: async (key, range) => {
          if (hidden && key.endsWith('/manifest')) {
            hidden = false;
            return null;
          }
          return inner.get(key, range);
        },
      };
    };
    expect(await writeSnapshot(racing(), infoFor(a, 5), imageOf(a))).toEqual(first);
    await expect(writeSnapshot(racing(), infoFor(b, 5), imageOf(b))).rejects.toThrow(
      SnapshotInvalidError,
    );
  });

  it('writes no manifest when the image is shorter or longer than dbSizePages', async () => {
    const storage = createMemoryStorage();
    const source = makeDatabase(path.join(dir, 'a.db'), 200 * KiB);
    const file = fs.readFileSync(source.file);
    const info = infoFor(source, 7);
    const short = file.subarray(0, file.length - source.pageSize);
    await expect(
      writeSnapshot(storage, info, chunksOf(short), { partBytes: 64 * KiB }),
    ).rejects.toThrow(SnapshotInvalidError);
    const long = Buffer.concat([file, Buffer.alloc(1)]);
    await expect(
      writeSnapshot(storage, info, chunksOf(long), { partBytes: 64 * KiB }),
    ).rejects.toThrow(SnapshotInvalidError);
    expect(await readSnapshotManifest(storage, PREFIX, DB, 7)).toBeNull();
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([]);

    // A retry overwrites the orphan parts and commits.
    await writeSnapshot(storage, info, chunksOf(file), { partBytes: 64 * KiB });
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([7]);
  });

  it('rejects bad arguments before uploading', async () => {
    const storage = createMemoryStorage();
    const image = chunksOf(new Uint8Array(4096));
    const base = { ...infoFor({ file: '', pageSize: 4096, dbSizePages: 1 }, 1) };
    const bad: Array<[Partial<SnapshotInfo>, { partBytes?: number }]> = [
      [{ checksum: new Uint8Array(31) }, {}],
      [{ pageSize: 3000 }, {}],
      [{ db: '.x' }, {}],
      [{ seq: -1 }, {}],
      [{}, { partBytes: 0 }],
    ];
    for (const [info, options] of bad) {
      await expect(writeSnapshot(storage, { ...base, ...info }, image, options)).rejects.toThrow(
        InvalidArgumentError,
      );
    }
    expect(await allKeys(storage, '')).toEqual([]);
  });
});

describe('listing, reading and deleting manifests', () => {
  const tiny = { pageSize: 512, dbSizePages: 4 };
  const tinyImage = () => chunksOf(new Uint8Array(2048).fill(1), 700);
  const tinyInfo = (seq: number): SnapshotInfo => ({
    prefix: PREFIX,
    db: DB,
    seq,
    epoch: 1,
    checksum: new Uint8Array(32),
    commitTimeMs: 0,
    ...tiny,
  });

  it('lists committed seqs ascending across pages, ignoring orphan parts', async () => {
    const storage = createMemoryStorage();
    // 3 parts + manifest each: well over one 1000-key page.
    const seqs = Array.from({ length: 300 }, (_, i) => (i * 7919) % 300).map((i) =>
      i === 299 ? 2 ** 40 : i * 1000 + 17,
    );
    for (const seq of seqs) {
      await writeSnapshot(storage, tinyInfo(seq), tinyImage(), { partBytes: 700 });
    }
    await storage.put(snapshotPartKey(PREFIX, DB, 500, 0), new Uint8Array(3));
    await storage.put(`${snapshotPrefix(PREFIX, DB, 1)}/part-000000`, new Uint8Array(3));
    await storage.put(`${PREFIX}/${DB}/snap/not-a-seq/manifest`, new Uint8Array(3));
    expect((await allKeys(storage, '')).length).toBeGreaterThan(1200);

    const listed = await listSnapshots(storage, PREFIX, DB);
    expect(listed).toEqual([...seqs].sort((x, y) => x - y));
    expect(await listSnapshots(storage, PREFIX, 'other')).toEqual([]);
  });

  it('reads manifests strictly', async () => {
    const storage = createMemoryStorage();
    expect(await readSnapshotManifest(storage, PREFIX, DB, 3)).toBeNull();
    const good = await writeSnapshot(storage, tinyInfo(3), tinyImage(), { partBytes: 700 });
    const key = snapshotManifestKey(PREFIX, DB, 3);
    const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    const variants: Uint8Array[] = [
      new Uint8Array([0xff, 0x00, 0x12]),
      new TextEncoder().encode('{"format":'),
      encode(null),
      encode([good]),
      encode({ ...good, format: 'other' }),
      encode({ ...good, v: 2 }),
      encode({ ...good, seq: 4 }),
      encode({ ...good, db: 'other' }),
      encode({ ...good, checksum: 'zz' }),
      encode({ ...good, sha256: good.sha256.toUpperCase() }),
      encode({ ...good, codec: 'gzip' }),
      encode({ ...good, pageSize: 1000 }),
      encode({ ...good, rawBytes: good.rawBytes + 1 }),
      encode({ ...good, parts: good.parts.slice(1) }),
      encode({ ...good, parts: [...good.parts].reverse() }),
      encode({ ...good, createdAtMs: undefined }),
      encode({ ...good, epoch: -1 }),
      encode({ ...good, parts: good.parts.map((p) => ({ ...p, storedBytes: '1' })) }),
    ];
    for (const body of variants) {
      await storage.put(key, body);
      await expect(readSnapshotManifest(storage, PREFIX, DB, 3)).rejects.toThrow(
        SnapshotInvalidError,
      );
    }
    await storage.put(key, encode({ ...good, futureField: true }));
    expect(await readSnapshotManifest(storage, PREFIX, DB, 3)).toEqual(good);
  });

  it('deletes the manifest and every part, orphans included', async () => {
    const storage = createFsStorage({ root: path.join(dir, 'store') });
    await writeSnapshot(storage, tinyInfo(1), tinyImage(), { partBytes: 700 });
    await writeSnapshot(storage, tinyInfo(2), tinyImage(), { partBytes: 700 });
    await storage.put(snapshotPartKey(PREFIX, DB, 1, 99), new Uint8Array(3));
    await deleteSnapshot(storage, PREFIX, DB, 1);
    expect(await listSnapshots(storage, PREFIX, DB)).toEqual([2]);
    expect(await allKeys(storage, `${snapshotPrefix(PREFIX, DB, 1)}/`)).toEqual([]);
    expect((await allKeys(storage, `${snapshotPrefix(PREFIX, DB, 2)}/`)).length).toBe(4);
    // Deleting what is not there is fine.
    await deleteSnapshot(storage, PREFIX, DB, 1);
  });
});

/**
 * Runs one snapshot operation in a fresh Node process and returns how far its peak RSS (as the
 * kernel counted it) rose above its RSS just before: in this process, memory freed by earlier tests
 * would hide the growth. It collects garbage after each part, so the peak is what the code keeps
 * alive, not the garbage V8 lets pile up (tens of MB of buffers) before collecting.
 */
async function peakGrowthOf(mode: 'write' | 'restore', args: Record<string, unknown>) {
  const script = path.join(dir, 'measure.mjs');
  const moduleUrl = (file: string) => pathToFileURL(path.resolve(file)).href;
  fs.writeFileSync(
    script,
    `
const snap = await import(${JSON.stringify(moduleUrl('src/replication/snapshot.ts'))});
const { createFsStorage } = await import(${JSON.stringify(moduleUrl('src/adapters/storage/fs.ts'))});
const args = JSON.parse(process.argv[2]);
const storage = createFsStorage({ root: args.root });
const manifest = await snap.readSnapshotManifest(storage, args.prefix, args.db, args.seq);
const before = process.memoryUsage().rss;
if (${JSON.stringify(mode)} === 'write') {
  const image = snap.readDatabaseImage(args.file, args);
  await snap.writeSnapshot(storage, { ...args, checksum: new Uint8Array(32) }, image, { ...args, onProgress: gc });
} else {
  await snap.restoreSnapshot(storage, args.prefix, manifest, args.dest, { onProgress: gc });
}
console.log(JSON.stringify({ growth: process.resourceUsage().maxRSS * 1024 - before }));
`,
  );
  const { stdout } = await execFileAsync(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', script, JSON.stringify(args)],
    { cwd: process.cwd() },
  );
  return (JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as { growth: number }).growth;
}

describe('memory', () => {
  it('writes and restores a ~50 MB database with bounded memory', async () => {
    const root = path.join(dir, 'store');
    const source = makeDatabase(path.join(dir, 'big.db'), 50 * MiB);
    const total = source.pageSize * source.dbSizePages;
    expect(total).toBeGreaterThan(48 * MiB);
    const args = {
      ...infoFor(source, 1),
      checksum: undefined,
      root,
      file: source.file,
      dest: path.join(dir, 'restored.db'),
      partBytes: 2 * MiB,
    };

    // About 15 MB measured (one part, its compressed form, warm-up); holding the image adds 50 MB.
    expect(await peakGrowthOf('write', args)).toBeLessThan(40 * MiB);
    expect(await peakGrowthOf('restore', args)).toBeLessThan(40 * MiB);

    expect(fs.readFileSync(args.dest).equals(fs.readFileSync(source.file))).toBe(true);
    const db = new Database(args.dest, { readonly: true });
    expect(db.pragma('quick_check', { simple: true })).toBe('ok');
    db.close();
  });
});
