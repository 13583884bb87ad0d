/**
 * Snapshots: full images of a database file at a sequence number of its changeset log, stored as
 * `{prefix}/{db}/snap/{seq16}/part-{index6}` data parts and a JSON `manifest` written last with
 * `putIfAbsent`. The manifest is the commit point: parts without one are orphans of an upload that
 * did not finish, and a later retry overwrites them or {@link deleteSnapshot} removes them.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { syncDirectory } from '../adapters/fs-sync.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import type { DbChecksum } from '../api-types.ts';
import { DatabaseDivergedError, InvalidArgumentError, SnapshotInvalidError } from '../errors.ts';
import { restoreTempPath, sqliteJournalFiles } from '../side-files.ts';
import { brotliOptions, CHECKSUM_BYTES } from '../wire/changeset.ts';
import { dbChecksumHex, ImageChecksummer, parseDbChecksumHex } from '../wire/db-checksum.ts';

const deflateRaw = promisify(zlib.deflateRaw);
const inflateRaw = promisify(zlib.inflateRaw);
const brotliCompress = promisify(zlib.brotliCompress);
const brotliDecompress = promisify(zlib.brotliDecompress);

const DEFAULT_PART_BYTES = 8 * 1024 * 1024;
const DEFAULT_CHUNK_BYTES = 1024 * 1024;
const MAX_PARTS = 1_000_000;
const MANIFEST_FORMAT = 'hadb-snapshot';
const MANIFEST_VERSION = 1;
const DB_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const CHECKSUM_HEX = new RegExp(`^[0-9a-f]{${CHECKSUM_BYTES * 2}}$`);

export type SnapshotCodec = 'brotli' | 'deflate-raw' | 'none';

const SNAPSHOT_CODECS: readonly string[] = ['brotli', 'deflate-raw', 'none'];

/** A part as stored: brotli at quality 1 (as fast as a copy to disk), or deflate at level 1. */
export async function compressSnapshotPart(
  raw: Uint8Array,
  codec: SnapshotCodec,
): Promise<Uint8Array> {
  if (codec === 'none') return raw;
  if (codec === 'deflate-raw') return deflateRaw(raw, { level: 1 });
  return brotliCompress(raw, brotliOptions(1, raw.length));
}

/**
 * A stored part back to its raw bytes, capped at the size the manifest declares so a damaged part
 * cannot grow without bound; one output chunk of that size (16 KiB chunks halve the throughput).
 */
export async function decompressSnapshotPart(
  stored: Uint8Array,
  codec: SnapshotCodec,
  rawBytes: number,
): Promise<Uint8Array> {
  if (codec === 'none') return stored;
  const options = {
    maxOutputLength: Math.max(1, rawBytes),
    chunkSize: Math.max(64, Math.min(rawBytes, 64 * 1024 * 1024)),
  };
  return codec === 'deflate-raw' ? inflateRaw(stored, options) : brotliDecompress(stored, options);
}

export interface SnapshotPart {
  index: number;
  rawBytes: number;
  storedBytes: number;
  /** Hex SHA-256 of the raw (uncompressed) part. */
  sha256: string;
}

/** What `{snapshotPrefix}/manifest` holds, JSON encoded. */
export interface SnapshotManifest {
  format: 'hadb-snapshot';
  v: 1;
  db: string;
  seq: number;
  epoch: number;
  /** Hex chain checksum of the changeset at `seq`. */
  checksum: string;
  pageSize: number;
  dbSizePages: number;
  commitTimeMs: number;
  /** Always `pageSize * dbSizePages`. */
  rawBytes: number;
  /** Hex SHA-256 of the whole raw image. */
  sha256: string;
  codec: SnapshotCodec;
  parts: SnapshotPart[];
  createdAtMs: number;
  /** Hex whole-database checksum of the image (16 digits); absent from older snapshots. */
  dbChecksum?: string;
}

export interface SnapshotInfo {
  prefix: string;
  db: string;
  seq: number;
  epoch: number;
  checksum: Uint8Array;
  pageSize: number;
  dbSizePages: number;
  commitTimeMs: number;
  /**
   * The database checksum the log records at `seq`, when known: an image that does not have it
   * is refused with {@link DatabaseDivergedError} (the leader's file diverged from what it shipped).
   */
  dbChecksum?: DbChecksum;
}

export interface WriteSnapshotOptions {
  /** Raw bytes per part (default 8 MiB); bounds memory to about twice this. */
  partBytes?: number;
  codec?: SnapshotCodec;
  /** Raw bytes uploaded so far, after each part. */
  onProgress?: (doneBytes: number) => void;
  /** Wall-clock ms for `createdAtMs` (default `Date.now`). */
  now?: () => number;
}

export interface ReadDatabaseImageOptions {
  /** Page number (1-based) → page bytes laid over the file, e.g. committed WAL frames. */
  overlay?: ReadonlyMap<number, Uint8Array>;
  pageSize: number;
  dbSizePages: number;
  /** Bytes per yielded chunk (default 1 MiB); a multiple of `pageSize`. */
  chunkBytes?: number;
}

export interface RestoreSnapshotOptions {
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** Throws {@link InvalidArgumentError} unless `db` is 1..128 of `[A-Za-z0-9._-]`, not starting with `.`. */
export function assertValidDbName(db: string): void {
  if (typeof db !== 'string' || !DB_NAME.test(db)) {
    throw new InvalidArgumentError(
      `invalid database name ${JSON.stringify(db)}: 1..128 of [A-Za-z0-9._-], not starting with "."`,
    );
  }
}

/** `n` as 16 zero-padded lowercase hex digits, so keys sort in numeric order. */
export function hex16(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new InvalidArgumentError(`expected a non-negative safe integer, got ${n}`);
  }
  return n.toString(16).padStart(16, '0');
}

/** Key of the changeset at `seq`: `{prefix}/{db}/log/{seq16}`. */
export function logKey(prefix: string, db: string, seq: number): string {
  return `${logPrefix(prefix, db)}${hex16(seq)}`;
}

/** The folder of a database's changeset log, with its trailing `/`. */
export function logPrefix(prefix: string, db: string): string {
  return `${dbRoot(prefix, db)}/log/`;
}

/** The folder of the snapshot at `seq`, without a trailing `/`: `{prefix}/{db}/snap/{seq16}`. */
export function snapshotPrefix(prefix: string, db: string, seq: number): string {
  return `${snapshotsRoot(prefix, db)}${hex16(seq)}`;
}

/** Key of data part `index` of the snapshot at `seq`. */
export function snapshotPartKey(prefix: string, db: string, seq: number, index: number): string {
  if (!Number.isSafeInteger(index) || index < 0 || index >= MAX_PARTS) {
    throw new InvalidArgumentError(`part index must be in 0..${MAX_PARTS - 1}, got ${index}`);
  }
  return `${snapshotPrefix(prefix, db, seq)}/part-${String(index).padStart(6, '0')}`;
}

/** Key of the manifest (the commit point) of the snapshot at `seq`. */
export function snapshotManifestKey(prefix: string, db: string, seq: number): string {
  return `${snapshotPrefix(prefix, db, seq)}/manifest`;
}

function dbRoot(prefix: string, db: string): string {
  if (prefix.startsWith('/') || prefix.endsWith('/')) {
    throw new InvalidArgumentError(
      `prefix must not start or end with "/": ${JSON.stringify(prefix)}`,
    );
  }
  assertValidDbName(db);
  return prefix === '' ? db : `${prefix}/${db}`;
}

function snapshotsRoot(prefix: string, db: string): string {
  return `${dbRoot(prefix, db)}/snap/`;
}

/**
 * Uploads `image` as the snapshot `info.seq`: parts first, then the manifest with `putIfAbsent`.
 * Reads the stream once, holding at most one part. Throws {@link SnapshotInvalidError} (writing no
 * manifest) when the image is not exactly `dbSizePages * pageSize` bytes, or when a different
 * image already is the snapshot at this seq (a fork); the same image again returns the existing
 * manifest. Only one writer per seq at a time: concurrent writers overwrite each other's parts.
 */
export async function writeSnapshot(
  storage: StorageBackend,
  info: SnapshotInfo,
  image: AsyncIterable<Uint8Array>,
  options: WriteSnapshotOptions = {},
): Promise<SnapshotManifest> {
  const { prefix, db, seq } = info;
  assertValidDbName(db);
  hex16(seq);
  assertPageGeometry(info.pageSize, info.dbSizePages);
  assertNonNegativeInteger('epoch', info.epoch);
  assertNonNegativeInteger('commitTimeMs', info.commitTimeMs);
  if (!(info.checksum instanceof Uint8Array) || info.checksum.length !== CHECKSUM_BYTES) {
    throw new InvalidArgumentError(`checksum must be ${CHECKSUM_BYTES} bytes`);
  }
  const partBytes = options.partBytes ?? DEFAULT_PART_BYTES;
  if (!Number.isSafeInteger(partBytes) || partBytes < 1) {
    throw new InvalidArgumentError(`partBytes must be a positive integer, got ${partBytes}`);
  }
  const codec = options.codec ?? 'brotli';
  if (!SNAPSHOT_CODECS.includes(codec)) {
    throw new InvalidArgumentError(`unknown codec ${JSON.stringify(codec)}`);
  }
  const totalBytes = info.pageSize * info.dbSizePages;
  if (Math.ceil(totalBytes / partBytes) > MAX_PARTS) {
    throw new InvalidArgumentError(`partBytes ${partBytes} gives more than ${MAX_PARTS} parts`);
  }
  const checksum = Buffer.from(info.checksum).toString('hex');
  const manifestKey = snapshotManifestKey(prefix, db, seq);

  // Uploading parts under a committed snapshot would overwrite its parts: only hash then.
  const existing = await readSnapshotManifest(storage, prefix, db, seq);
  if (existing) {
    const { sha256, dbChecksum } = await hashImage(image, totalBytes, info.pageSize, seq);
    checkImageChecksum(info, dbChecksum);
    return sameSnapshotOrFork(existing, { ...info, checksum, sha256 });
  }

  const whole = createHash('sha256');
  const pages = new ImageChecksummer(info.pageSize);
  const parts: SnapshotPart[] = [];
  let part = new Uint8Array(Math.min(partBytes, totalBytes));
  let filled = 0;
  let done = 0;

  const flush = async () => {
    const raw = part.subarray(0, filled);
    const stored = await compressSnapshotPart(raw, codec);
    const index = parts.length;
    await storage.put(snapshotPartKey(prefix, db, seq, index), stored);
    parts.push({
      index,
      rawBytes: raw.length,
      storedBytes: stored.length,
      sha256: createHash('sha256').update(raw).digest('hex'),
    });
    done += raw.length;
    options.onProgress?.(done);
    // A fresh buffer: a backend may still hold the last one.
    part = new Uint8Array(Math.min(partBytes, totalBytes - done));
    filled = 0;
  };

  let seen = 0;
  for await (const chunk of image) {
    if (seen + chunk.length > totalBytes) {
      throw new SnapshotInvalidError(
        `snapshot ${seq} of ${db}: image is longer than ${info.dbSizePages} pages of ${info.pageSize} bytes`,
      );
    }
    seen += chunk.length;
    whole.update(chunk);
    pages.update(chunk);
    let offset = 0;
    while (offset < chunk.length) {
      const take = Math.min(part.length - filled, chunk.length - offset);
      part.set(chunk.subarray(offset, offset + take), filled);
      filled += take;
      offset += take;
      if (filled === part.length) await flush();
    }
  }
  if (seen !== totalBytes) {
    throw new SnapshotInvalidError(
      `snapshot ${seq} of ${db}: image has ${seen} bytes, expected ${totalBytes} (${info.dbSizePages} pages of ${info.pageSize})`,
    );
  }

  checkImageChecksum(info, pages.checksum);
  const manifest: SnapshotManifest = {
    format: MANIFEST_FORMAT,
    v: MANIFEST_VERSION,
    db,
    seq,
    epoch: info.epoch,
    checksum,
    pageSize: info.pageSize,
    dbSizePages: info.dbSizePages,
    commitTimeMs: info.commitTimeMs,
    rawBytes: totalBytes,
    sha256: whole.digest('hex'),
    codec,
    parts,
    createdAtMs: (options.now ?? Date.now)(),
    dbChecksum: dbChecksumHex(pages.checksum),
  };
  const body = new TextEncoder().encode(JSON.stringify(manifest));
  if (await storage.putIfAbsent(manifestKey, body)) return manifest;

  // Lost a race with another writer of this seq.
  const winner = await readSnapshotManifest(storage, prefix, db, seq);
  if (!winner) {
    throw new SnapshotInvalidError(`snapshot ${seq} of ${db}: manifest exists but cannot be read`);
  }
  return sameSnapshotOrFork(winner, manifest);
}

/** An image that is not the database the log records at its seq must not become a snapshot. */
function checkImageChecksum(info: SnapshotInfo, actual: DbChecksum): void {
  if (info.dbChecksum === undefined || info.dbChecksum === actual) return;
  throw new DatabaseDivergedError(
    info.seq,
    dbChecksumHex(info.dbChecksum),
    dbChecksumHex(actual),
    `snapshot ${info.seq} of ${info.db}: the image is not the database the log records`,
  );
}

/** Hashes the image without uploading it, checking its length. */
async function hashImage(
  image: AsyncIterable<Uint8Array>,
  totalBytes: number,
  pageSize: number,
  seq: number,
): Promise<{ sha256: string; dbChecksum: DbChecksum }> {
  const hash = createHash('sha256');
  const pages = new ImageChecksummer(pageSize);
  let seen = 0;
  for await (const chunk of image) {
    seen += chunk.length;
    if (seen > totalBytes) break;
    hash.update(chunk);
    pages.update(chunk);
  }
  if (seen !== totalBytes) {
    throw new SnapshotInvalidError(
      `snapshot ${seq}: image is ${seen > totalBytes ? 'longer' : `${seen} bytes`}, expected ${totalBytes} bytes`,
    );
  }
  return { sha256: hash.digest('hex'), dbChecksum: pages.checksum };
}

function sameSnapshotOrFork(
  existing: SnapshotManifest,
  ours: {
    seq: number;
    db: string;
    sha256: string;
    checksum: string;
    pageSize: number;
    dbSizePages: number;
  },
): SnapshotManifest {
  const same =
    existing.sha256 === ours.sha256 &&
    existing.checksum === ours.checksum &&
    existing.pageSize === ours.pageSize &&
    existing.dbSizePages === ours.dbSizePages;
  if (same) return existing;
  throw new SnapshotInvalidError(
    `snapshot ${ours.seq} of ${ours.db} already exists with a different image or chain checksum: the history forked`,
  );
}

/**
 * Streams a database image of exactly `dbSizePages * pageSize` bytes from the file at `path`:
 * pages in `overlay` replace the file's, pages past the end of the file are zeros, the file past
 * `dbSizePages` is ignored. The caller keeps the file stable meanwhile (e.g. holds a read
 * transaction and no checkpoint runs). Each yielded chunk is a fresh buffer.
 */
export async function* readDatabaseImage(
  path: string,
  options: ReadDatabaseImageOptions,
): AsyncGenerator<Uint8Array, void, undefined> {
  const { pageSize, dbSizePages, overlay } = options;
  assertPageGeometry(pageSize, dbSizePages);
  const chunkBytes = options.chunkBytes ?? Math.max(pageSize, DEFAULT_CHUNK_BYTES);
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < pageSize || chunkBytes % pageSize !== 0) {
    throw new InvalidArgumentError(
      `chunkBytes must be a positive multiple of the page size ${pageSize}, got ${chunkBytes}`,
    );
  }
  if (overlay) {
    for (const [pgno, page] of overlay) {
      if (!Number.isSafeInteger(pgno) || pgno < 1) {
        throw new InvalidArgumentError(`overlay page number must be >= 1, got ${pgno}`);
      }
      if (page.length !== pageSize) {
        throw new InvalidArgumentError(
          `overlay page ${pgno} has ${page.length} bytes, expected ${pageSize}`,
        );
      }
    }
  }
  const totalBytes = pageSize * dbSizePages;
  const pagesPerChunk = chunkBytes / pageSize;
  const handle = await fsp.open(path, 'r');
  try {
    let fileEnded = false;
    for (let position = 0; position < totalBytes; position += chunkBytes) {
      const chunk = new Uint8Array(Math.min(chunkBytes, totalBytes - position));
      // A fresh buffer is zero-filled, which pads past the end of the file.
      let filled = 0;
      while (!fileEnded && filled < chunk.length) {
        const { bytesRead } = await handle.read(
          chunk,
          filled,
          chunk.length - filled,
          position + filled,
        );
        if (bytesRead === 0) fileEnded = true;
        filled += bytesRead;
      }
      if (overlay && overlay.size > 0) {
        const firstPgno = position / pageSize + 1;
        const pages = Math.min(pagesPerChunk, chunk.length / pageSize);
        for (let i = 0; i < pages; i++) {
          const page = overlay.get(firstPgno + i);
          if (page) chunk.set(page, i * pageSize);
        }
      }
      yield chunk;
    }
  } finally {
    await handle.close();
  }
}

/** Seqs (ascending) that have a committed snapshot, i.e. a manifest; orphan parts are ignored. */
export async function listSnapshots(
  storage: StorageBackend,
  prefix: string,
  db: string,
): Promise<number[]> {
  const root = snapshotsRoot(prefix, db);
  const seqs: number[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await storage.list(root, startAfter === undefined ? {} : { startAfter });
    for (const { key } of page.objects) {
      const match = /^([0-9a-f]{16})\/manifest$/.exec(key.slice(root.length));
      const seq = match?.[1] === undefined ? Number.NaN : Number.parseInt(match[1], 16);
      if (Number.isSafeInteger(seq)) seqs.push(seq);
    }
    if (page.nextStartAfter === undefined) break;
    startAfter = page.nextStartAfter;
  }
  return seqs.sort((a, b) => a - b);
}

/**
 * The manifest of the snapshot at `seq`, or null when there is none (the snapshot does not exist).
 * Throws {@link SnapshotInvalidError} when it is not a valid v1 manifest of that db and seq.
 */
export async function readSnapshotManifest(
  storage: StorageBackend,
  prefix: string,
  db: string,
  seq: number,
): Promise<SnapshotManifest | null> {
  const key = snapshotManifestKey(prefix, db, seq);
  const body = await storage.get(key);
  if (body === null) return null;
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch (error) {
    throw new SnapshotInvalidError(`${key}: not JSON`, { cause: error });
  }
  const manifest = parseManifest(value, key);
  if (manifest.db !== db || manifest.seq !== seq) {
    throw new SnapshotInvalidError(
      `${key}: describes ${JSON.stringify(manifest.db)} at seq ${manifest.seq}`,
    );
  }
  return manifest;
}

/** Checks every field of a v1 manifest and their consistency; ignores unknown fields. */
function parseManifest(value: unknown, where: string): SnapshotManifest {
  const fail = (why: string): never => {
    throw new SnapshotInvalidError(`${where}: ${why}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('not an object');
  const m = value as Record<string, unknown>;
  if (m.format !== MANIFEST_FORMAT)
    fail(`format is ${JSON.stringify(m.format)}, not "${MANIFEST_FORMAT}"`);
  if (m.v !== MANIFEST_VERSION) fail(`unknown version ${JSON.stringify(m.v)}`);
  const int = (obj: Record<string, unknown>, field: string, label = field): number => {
    const n = obj[field];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
      return fail(`${label} must be a non-negative integer, got ${JSON.stringify(n)}`);
    }
    return n;
  };
  const hex = (obj: Record<string, unknown>, field: string, pattern: RegExp, label = field) => {
    const s = obj[field];
    if (typeof s !== 'string' || !pattern.test(s))
      fail(`${label} is not lowercase hex of the right length`);
    return s as string;
  };
  if (typeof m.db !== 'string' || !DB_NAME.test(m.db)) fail('db is not a valid database name');
  const pageSize = int(m, 'pageSize');
  const dbSizePages = int(m, 'dbSizePages');
  if (!isPageSize(pageSize)) fail(`pageSize ${pageSize} is not a power of two in 512..65536`);
  const rawBytes = int(m, 'rawBytes');
  if (rawBytes !== pageSize * dbSizePages)
    fail(`rawBytes ${rawBytes} is not pageSize * dbSizePages`);
  if (typeof m.codec !== 'string' || !SNAPSHOT_CODECS.includes(m.codec))
    fail(`unknown codec ${JSON.stringify(m.codec)}`);
  if (!Array.isArray(m.parts)) fail('parts is not an array');
  const parts: SnapshotPart[] = [];
  let sum = 0;
  for (const [i, p] of (m.parts as unknown[]).entries()) {
    if (typeof p !== 'object' || p === null || Array.isArray(p))
      fail(`parts[${i}] is not an object`);
    const part = p as Record<string, unknown>;
    const index = int(part, 'index', `parts[${i}].index`);
    if (index !== i) fail(`parts[${i}] has index ${index}`);
    const partRaw = int(part, 'rawBytes', `parts[${i}].rawBytes`);
    if (partRaw === 0) fail(`parts[${i}] is empty`);
    sum += partRaw;
    parts.push({
      index,
      rawBytes: partRaw,
      storedBytes: int(part, 'storedBytes', `parts[${i}].storedBytes`),
      sha256: hex(part, 'sha256', SHA256_HEX, `parts[${i}].sha256`),
    });
  }
  if (parts.length > MAX_PARTS) fail(`more than ${MAX_PARTS} parts`);
  if (sum !== rawBytes) fail(`parts add up to ${sum} bytes, not rawBytes ${rawBytes}`);
  return {
    format: MANIFEST_FORMAT,
    v: MANIFEST_VERSION,
    db: m.db as string,
    seq: int(m, 'seq'),
    epoch: int(m, 'epoch'),
    checksum: hex(m, 'checksum', CHECKSUM_HEX),
    pageSize,
    dbSizePages,
    commitTimeMs: int(m, 'commitTimeMs'),
    rawBytes,
    sha256: hex(m, 'sha256', SHA256_HEX),
    codec: m.codec as SnapshotCodec,
    parts,
    createdAtMs: int(m, 'createdAtMs'),
    ...(m.dbChecksum === undefined ? {} : { dbChecksum: dbChecksumField(m.dbChecksum, fail) }),
  };
}

function dbChecksumField(value: unknown, fail: (why: string) => never): string {
  if (parseDbChecksumHex(value) === undefined) fail('dbChecksum is not 16 lowercase hex digits');
  return value as string;
}

/**
 * Downloads the snapshot into `destPath`, one part at a time, verifying every part and the whole
 * image, then atomically replaces `destPath`. Stale `-wal`, `-shm` and `-journal` files are deleted
 * first, as SQLite would apply them to the new file. No connection may have `destPath` open.
 * On failure `destPath` keeps its bytes and the temporary file is removed; a damaged or missing part
 * throws {@link SnapshotInvalidError} naming its key.
 */
export async function restoreSnapshot(
  storage: StorageBackend,
  prefix: string,
  manifest: SnapshotManifest,
  destPath: string,
  options: RestoreSnapshotOptions = {},
): Promise<void> {
  const where = `snapshot ${manifest.seq} of ${manifest.db}`;
  const checked = parseManifest(manifest, where);
  const { db, seq, rawBytes } = checked;
  const temp = restoreTempPath(destPath, randomBytes(6).toString('hex'));
  const handle = await fsp.open(temp, 'wx');
  let closed = false;
  try {
    const whole = createHash('sha256');
    const pages = new ImageChecksummer(checked.pageSize);
    let done = 0;
    for (const part of checked.parts) {
      const key = snapshotPartKey(prefix, db, seq, part.index);
      const stored = await storage.get(key);
      if (stored === null) throw new SnapshotInvalidError(`${where}: part ${key} is missing`);
      const raw = await decodePart(stored, part, checked.codec, key, where);
      if (createHash('sha256').update(raw).digest('hex') !== part.sha256) {
        throw new SnapshotInvalidError(`${where}: part ${key} does not match its SHA-256`);
      }
      whole.update(raw);
      pages.update(raw);
      await writeAll(handle, raw, done);
      done += raw.length;
      options.onProgress?.(done, rawBytes);
    }
    if (done !== rawBytes || whole.digest('hex') !== checked.sha256) {
      throw new SnapshotInvalidError(`${where}: the image does not match its SHA-256`);
    }
    const recorded = parseDbChecksumHex(checked.dbChecksum);
    if (recorded !== undefined && recorded !== pages.checksum) {
      throw new DatabaseDivergedError(
        seq,
        dbChecksumHex(recorded),
        dbChecksumHex(pages.checksum),
        `${where}: the image is not the database its manifest records`,
      );
    }
    await handle.sync();
    closed = true;
    await handle.close();

    const directory = path.dirname(destPath);
    let removed = false;
    for (const file of sqliteJournalFiles(destPath)) {
      removed = (await unlinkIfExists(file)) || removed;
    }
    // The deletions must be durable before the new file appears, or a crash pairs it with a stale WAL.
    if (removed) await syncDirectory(directory);
    await fsp.rename(temp, destPath);
    await syncDirectory(directory);
  } catch (error) {
    if (!closed) await handle.close().catch(() => {});
    await unlinkIfExists(temp).catch(() => {});
    throw error;
  }
}

async function decodePart(
  stored: Uint8Array,
  part: SnapshotPart,
  codec: SnapshotCodec,
  key: string,
  where: string,
): Promise<Uint8Array> {
  let raw: Uint8Array;
  try {
    raw = await decompressSnapshotPart(stored, codec, part.rawBytes);
  } catch (error) {
    throw new SnapshotInvalidError(`${where}: part ${key} does not decompress (${codec})`, {
      cause: error,
    });
  }
  if (raw.length !== part.rawBytes) {
    throw new SnapshotInvalidError(
      `${where}: part ${key} has ${raw.length} raw bytes, expected ${part.rawBytes}`,
    );
  }
  return raw;
}

/**
 * Deletes the snapshot at `seq`: the manifest first, so it stops existing before any part goes,
 * then every key under its folder, orphans included.
 */
export async function deleteSnapshot(
  storage: StorageBackend,
  prefix: string,
  db: string,
  seq: number,
): Promise<void> {
  const manifestKey = snapshotManifestKey(prefix, db, seq);
  await storage.delete([manifestKey]);
  const folder = `${snapshotPrefix(prefix, db, seq)}/`;
  // List everything before deleting, so deletions cannot disturb the pagination.
  const keys: string[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await storage.list(folder, startAfter === undefined ? {} : { startAfter });
    keys.push(...page.objects.map((object) => object.key));
    if (page.nextStartAfter === undefined) break;
    startAfter = page.nextStartAfter;
  }
  for (let i = 0; i < keys.length; i += 1000) await storage.delete(keys.slice(i, i + 1000));
}

function isPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= 512 && n <= 65536 && (n & (n - 1)) === 0;
}

function assertPageGeometry(pageSize: number, dbSizePages: number): void {
  if (!isPageSize(pageSize)) {
    throw new InvalidArgumentError(
      `pageSize must be a power of two in 512..65536, got ${pageSize}`,
    );
  }
  assertNonNegativeInteger('dbSizePages', dbSizePages);
  if (!Number.isSafeInteger(pageSize * dbSizePages)) {
    throw new InvalidArgumentError(`database of ${dbSizePages} pages is too large`);
  }
}

function assertNonNegativeInteger(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${n}`);
  }
}

async function writeAll(handle: fsp.FileHandle, bytes: Uint8Array, position: number) {
  let offset = 0;
  while (offset < bytes.length) {
    const { bytesWritten } = await handle.write(
      bytes,
      offset,
      bytes.length - offset,
      position + offset,
    );
    offset += bytesWritten;
  }
}

async function unlinkIfExists(file: string): Promise<boolean> {
  try {
    await fsp.unlink(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
