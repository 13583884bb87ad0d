/** Read-only views of a database's objects in storage, shared by the operations commands. */
import { createHash } from 'node:crypto';
import type { ListedObject, StorageBackend } from '../../adapters/storage/types.ts';
import type { DbChecksum } from '../../api-types.ts';
import { DatabaseDivergedError, SnapshotInvalidError, UnknownDatabaseError } from '../../errors.ts';
import {
  assertValidDbName,
  decompressSnapshotPart,
  listSnapshots,
  logPrefix,
  type SnapshotManifest,
  snapshotPartKey,
} from '../../replication/snapshot.ts';
import { dbChecksumHex, ImageChecksummer, parseDbChecksumHex } from '../../wire/db-checksum.ts';

export interface LogEntry {
  seq: number;
  key: string;
  size: number;
}

export interface LogListing {
  /** In ascending seq. */
  entries: LogEntry[];
  /** Keys under `log/` that are not a 16-hex-digit sequence number. */
  strayKeys: string[];
}

/** Every changeset key of `db`, page by page. */
export async function listLog(
  storage: StorageBackend,
  prefix: string,
  db: string,
): Promise<LogListing> {
  const folder = logPrefix(prefix, db);
  const entries: LogEntry[] = [];
  const strayKeys: string[] = [];
  for await (const object of listAll(storage, folder)) {
    const name = object.key.slice(folder.length);
    if (/^[0-9a-f]{16}$/.test(name)) {
      entries.push({ seq: Number.parseInt(name, 16), key: object.key, size: object.size });
    } else {
      strayKeys.push(object.key);
    }
  }
  // Zero-padded hex sorts like the numbers, but say so rather than rely on the backend's order.
  entries.sort((a, b) => a.seq - b.seq);
  return { entries, strayKeys };
}

/** Every object under `prefix`, following `nextStartAfter` page by page. */
export async function* listAll(
  storage: StorageBackend,
  prefix: string,
): AsyncGenerator<ListedObject, void, undefined> {
  let startAfter: string | undefined;
  for (;;) {
    const page = await storage.list(prefix, startAfter === undefined ? {} : { startAfter });
    yield* page.objects;
    if (page.nextStartAfter === undefined) return;
    startAfter = page.nextStartAfter;
  }
}

/** Throws {@link UnknownDatabaseError} unless storage holds a changeset or a snapshot of `db`. */
export async function assertDatabaseExists(
  storage: StorageBackend,
  prefix: string,
  db: string,
): Promise<void> {
  assertValidDbName(db);
  const log = await storage.list(logPrefix(prefix, db), { limit: 1 });
  if (log.objects.length > 0) return;
  if ((await listSnapshots(storage, prefix, db)).length > 0) return;
  throw new UnknownDatabaseError(
    db,
    `storage holds nothing for database ${JSON.stringify(db)} under prefix ${JSON.stringify(prefix)}`,
  );
}

/**
 * Downloads every part of a snapshot and checks it against the manifest's SHA-256s, one part in
 * memory at a time. Throws {@link SnapshotInvalidError} naming the first bad part.
 */
export async function checkSnapshotImage(
  storage: StorageBackend,
  prefix: string,
  manifest: SnapshotManifest,
  onProgress?: (doneBytes: number) => void,
): Promise<DbChecksum> {
  const where = `snapshot ${manifest.seq} of ${manifest.db}`;
  const whole = createHash('sha256');
  const pages = new ImageChecksummer(manifest.pageSize);
  let done = 0;
  for (const part of manifest.parts) {
    const key = snapshotPartKey(prefix, manifest.db, manifest.seq, part.index);
    const stored = await storage.get(key);
    if (stored === null) throw new SnapshotInvalidError(`${where}: part ${key} is missing`);
    let raw: Uint8Array;
    try {
      raw = await decompressSnapshotPart(stored, manifest.codec, part.rawBytes);
    } catch (error) {
      throw new SnapshotInvalidError(`${where}: part ${key} does not decompress`, { cause: error });
    }
    if (raw.length !== part.rawBytes) {
      throw new SnapshotInvalidError(
        `${where}: part ${key} has ${raw.length} bytes, the manifest says ${part.rawBytes}`,
      );
    }
    if (createHash('sha256').update(raw).digest('hex') !== part.sha256) {
      throw new SnapshotInvalidError(`${where}: part ${key} does not match its SHA-256`);
    }
    whole.update(raw);
    pages.update(raw);
    done += raw.length;
    onProgress?.(done);
  }
  if (done !== manifest.rawBytes || whole.digest('hex') !== manifest.sha256) {
    throw new SnapshotInvalidError(`${where}: the image does not match its SHA-256`);
  }
  const recorded = parseDbChecksumHex(manifest.dbChecksum);
  if (recorded !== undefined && recorded !== pages.checksum) {
    throw new DatabaseDivergedError(
      manifest.seq,
      dbChecksumHex(recorded),
      dbChecksumHex(pages.checksum),
      `${where}: the image is not the database its manifest records`,
    );
  }
  return pages.checksum;
}

/** The first `pageSize` bytes of a snapshot's image (page 1), from its first part. */
export async function readSnapshotPage1(
  storage: StorageBackend,
  prefix: string,
  manifest: SnapshotManifest,
): Promise<Uint8Array> {
  const where = `snapshot ${manifest.seq} of ${manifest.db}`;
  const part = manifest.parts[0];
  if (part === undefined || part.rawBytes < manifest.pageSize) {
    throw new SnapshotInvalidError(`${where}: its first part does not hold page 1`);
  }
  const key = snapshotPartKey(prefix, manifest.db, manifest.seq, part.index);
  const stored = await storage.get(key);
  if (stored === null) throw new SnapshotInvalidError(`${where}: part ${key} is missing`);
  let raw: Uint8Array;
  try {
    raw = await decompressSnapshotPart(stored, manifest.codec, part.rawBytes);
  } catch (error) {
    throw new SnapshotInvalidError(`${where}: part ${key} does not decompress`, { cause: error });
  }
  if (createHash('sha256').update(raw).digest('hex') !== part.sha256) {
    throw new SnapshotInvalidError(`${where}: part ${key} does not match its SHA-256`);
  }
  return raw.slice(0, manifest.pageSize);
}
