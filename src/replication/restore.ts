import fs from 'node:fs';
import path from 'node:path';
import { syncDirectorySync } from '../adapters/fs-sync.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import type { DbChecksum } from '../api-types.ts';
import { DatabaseDivergedError, InvalidArgumentError, ReplicationGapError } from '../errors.ts';
import { pitrTempPath, redoPath, replacedPath, sqliteJournalFiles } from '../side-files.ts';
import { type Changeset, decodeChangeset, GENESIS_CHECKSUM } from '../wire/changeset.ts';
import { dbChecksumHex, hashPages, PageHashes, parseDbChecksumHex } from '../wire/db-checksum.ts';
import {
  listSnapshots,
  logKey,
  logPrefix,
  readSnapshotManifest,
  restoreSnapshot,
  type SnapshotManifest,
} from './snapshot.ts';
import { adoptAsFollowerFile, PageApplier } from './sqlite/apply.ts';
import { removeFileSync, removeLeftoverTempFiles } from './sqlite/local-file.ts';
import { hashDatabaseFile } from './sqlite/page-hashes.ts';

/** The point to restore: a sequence number, a commit time, or the latest. */
export type RestoreTarget = { seq: number } | { timeMs: number } | 'latest';

/** Options of `restoreDatabase`. */
export interface RestoreOptions {
  storage: StorageBackend;
  prefix: string;
  db: string;
  /** Where the restored database file goes. */
  destPath: string;
  target?: RestoreTarget;
  /** Replace `destPath` if it exists (default: refuse). */
  overwrite?: boolean;
  onProgress?: (progress: RestoreProgress) => void;
}

/** Progress of a restore: snapshot bytes fetched, then changesets applied. */
export type RestoreProgress =
  | { phase: 'snapshot'; seq: number; doneBytes: number; totalBytes: number }
  | { phase: 'log'; seq: number };

/** The position a restored file is at. */
export interface RestoreResult {
  seq: number;
  epoch: number;
  checksum: string;
  /** Commit time of the last changeset applied (or of the snapshot), ms since 1970. */
  commitTimeMs: number;
  fromSnapshot: number | null;
  changesetsApplied: number;
  /**
   * The restored file's database checksum, checked against every checksum the log records on the
   * way (and the file against it at the end); absent when neither log nor snapshot records one.
   */
  dbChecksum?: string;
}

/**
 * Point-in-time restore: the newest snapshot at or before the target, then the log up to it,
 * into a temporary file that replaces `destPath` only once complete and fsynced. The result is
 * a plain rollback-journal SQLite file.
 */
export async function restoreDatabase(options: RestoreOptions): Promise<RestoreResult> {
  const { storage, prefix, db, destPath } = options;
  const target = options.target ?? 'latest';
  if (
    typeof target === 'object' &&
    'seq' in target &&
    (!Number.isSafeInteger(target.seq) || target.seq < 0)
  ) {
    throw new InvalidArgumentError(
      `restore target seq must be a non-negative integer, got ${target.seq}`,
    );
  }
  if (!options.overwrite && fs.existsSync(destPath)) {
    throw new InvalidArgumentError(`${destPath} exists; pass overwrite to replace it`);
  }
  removeLeftoverTempFiles(destPath);
  const base = await chooseSnapshot(storage, prefix, db, target);
  const temp = pitrTempPath(destPath, `${process.pid}-${Date.now()}`);
  let applier: PageApplier | null = null;
  try {
    let position = {
      seq: 0,
      epoch: 0,
      checksum: Buffer.from(GENESIS_CHECKSUM).toString('hex'),
      commitTimeMs: 0,
    };
    let pageSize: number | undefined;
    // Page hashes of the file being built, from the first checksum recorded on: each changeset's
    // is checked before it is applied.
    let hashes: PageHashes | null = null;
    let checked = false;
    if (base) {
      await restoreSnapshot(storage, prefix, base, temp, {
        onProgress: (doneBytes, totalBytes) =>
          options.onProgress?.({ phase: 'snapshot', seq: base.seq, doneBytes, totalBytes }),
      });
      adoptAsFollowerFile(temp);
      position = {
        seq: base.seq,
        epoch: base.epoch,
        checksum: base.checksum,
        commitTimeMs: base.commitTimeMs,
      };
      pageSize = base.pageSize;
      // restoreSnapshot checked the image against the manifest's checksum; the log, where it
      // still holds the changeset at the snapshot's seq, says which database that must be.
      checked = base.dbChecksum !== undefined;
      const atBase = await storage.get(logKey(prefix, db, base.seq));
      const recorded =
        atBase === null ? undefined : decodeChangeset(atBase, { db, seq: base.seq }).dbChecksum;
      if (recorded !== undefined) {
        hashes = hashesOfFile(temp, base.pageSize);
        checked = true;
        if (hashes.checksum !== recorded) {
          throw new DatabaseDivergedError(
            base.seq,
            dbChecksumHex(recorded),
            dbChecksumHex(hashes.checksum),
            `snapshot ${base.seq} of ${db} is not the database the log records at its seq`,
          );
        }
      }
    }
    applier = PageApplier.open(temp);
    let applied = 0;
    for (;;) {
      const seq = position.seq + 1;
      if (typeof target === 'object' && 'seq' in target && position.seq >= target.seq) break;
      const bytes = await storage.get(logKey(prefix, db, seq));
      if (bytes === null) {
        if (await logContinuesAfter(storage, prefix, db, seq)) {
          // No snapshot at or before the target and no log from the start: retention removed
          // that history, which is not damage. Say where restoring can start instead.
          const earliest = base === null ? await oldestSnapshot(storage, prefix, db) : null;
          if (earliest !== null) {
            const at = { seq: earliest.seq, commitTimeMs: earliest.commitTimeMs };
            throw new ReplicationGapError(
              `${db} cannot be restored to ${describeTarget(target)}: the log was compacted; the ` +
                `earliest point it can be restored to is seq ${at.seq} (committed ${new Date(at.commitTimeMs).toISOString()})`,
              at,
            );
          }
          throw new ReplicationGapError(
            `changeset ${seq} of ${db} is missing from storage, though later ones exist`,
          );
        }
        break;
      }
      const changeset = decodeChangeset(bytes, {
        db,
        seq,
        prevChecksum: Buffer.from(position.checksum, 'hex'),
        ...(pageSize === undefined ? {} : { pageSize }),
      });
      if (
        typeof target === 'object' &&
        'timeMs' in target &&
        changeset.commitTimeMs > target.timeMs
      )
        break;
      if (changeset.dbChecksum !== undefined || hashes !== null) {
        hashes ??= hashesOfFile(temp, pageSize ?? changeset.pageSize);
        checkRecordedChecksum(hashes, changeset, db);
        checked ||= changeset.dbChecksum !== undefined;
      }
      applier.apply(changeset);
      applied += 1;
      pageSize = changeset.pageSize;
      position = {
        seq,
        epoch: changeset.epoch,
        checksum: Buffer.from(changeset.checksum).toString('hex'),
        commitTimeMs: changeset.commitTimeMs,
      };
      options.onProgress?.({ phase: 'log', seq });
    }
    if (typeof target === 'object' && 'seq' in target && position.seq !== target.seq) {
      throw new ReplicationGapError(
        `${db} cannot be restored to seq ${target.seq}: the log ends at ${position.seq}`,
      );
    }
    if (position.seq === 0) {
      throw new ReplicationGapError(
        `storage holds nothing for ${db} at or before the requested point`,
      );
    }
    applier.close();
    applier = null;
    let dbChecksum: DbChecksum | undefined;
    if (checked) {
      // The written file itself, against what the log says it is.
      const expected = hashes?.checksum ?? parseDbChecksumHex(base?.dbChecksum) ?? 0n;
      dbChecksum = hashesOfFile(temp, pageSize ?? 0).checksum;
      if (dbChecksum !== expected) {
        throw new DatabaseDivergedError(
          position.seq,
          dbChecksumHex(expected),
          dbChecksumHex(dbChecksum),
          `the file restored from ${db}#${position.seq} is not the database the log records`,
        );
      }
    }
    replaceDatabaseFile(temp, destPath);
    return {
      ...position,
      fromSnapshot: base?.seq ?? null,
      changesetsApplied: applied,
      ...(dbChecksum === undefined ? {} : { dbChecksum: dbChecksumHex(dbChecksum) }),
    };
  } finally {
    applier?.close();
    removeFileSync(temp);
    removeFileSync(redoPath(temp));
  }
}

/** The page hashes of the file as it is now (empty when it is). */
function hashesOfFile(file: string, pageSize: number): PageHashes {
  const size = fs.statSync(file).size;
  return size === 0 || pageSize === 0
    ? PageHashes.empty()
    : hashDatabaseFile(file, pageSize, Math.floor(size / pageSize));
}

/** Moves `hashes` on by `changeset`, refusing it when that is not the checksum it records. */
function checkRecordedChecksum(hashes: PageHashes, changeset: Changeset, db: string): void {
  const update = hashPages(changeset.pages, changeset.dbSizePages, changeset.pageSize);
  const after = hashes.checksumAfter(update);
  if (changeset.dbChecksum !== undefined && after !== changeset.dbChecksum) {
    throw new DatabaseDivergedError(
      changeset.seq,
      dbChecksumHex(changeset.dbChecksum),
      dbChecksumHex(after),
      `${db}: restoring changeset ${changeset.seq} does not give the database it records`,
    );
  }
  hashes.apply(update);
}

async function chooseSnapshot(
  storage: StorageBackend,
  prefix: string,
  db: string,
  target: RestoreTarget,
): Promise<SnapshotManifest | null> {
  const seqs = await listSnapshots(storage, prefix, db);
  for (const seq of seqs.reverse()) {
    if (typeof target === 'object' && 'seq' in target && seq > target.seq) continue;
    const manifest = await readSnapshotManifest(storage, prefix, db, seq);
    if (!manifest) continue;
    if (typeof target === 'object' && 'timeMs' in target && manifest.commitTimeMs > target.timeMs)
      continue;
    return manifest;
  }
  return null;
}

/** The oldest snapshot with a readable manifest, or null when there is none. */
async function oldestSnapshot(
  storage: StorageBackend,
  prefix: string,
  db: string,
): Promise<SnapshotManifest | null> {
  for (const seq of await listSnapshots(storage, prefix, db)) {
    const manifest = await readSnapshotManifest(storage, prefix, db, seq);
    if (manifest) return manifest;
  }
  return null;
}

function describeTarget(target: RestoreTarget): string {
  if (target === 'latest') return 'its latest state';
  return 'seq' in target ? `seq ${target.seq}` : new Date(target.timeMs).toISOString();
}

async function logContinuesAfter(
  storage: StorageBackend,
  prefix: string,
  db: string,
  seq: number,
): Promise<boolean> {
  const page = await storage.list(logPrefix(prefix, db), {
    startAfter: logKey(prefix, db, seq),
    limit: 1,
  });
  return page.objects.length > 0;
}

/**
 * Renames `source` over `destPath`. The old database's journal files are moved aside first, as
 * SQLite would otherwise apply them to the new file, and moved back if the rename fails, so the
 * old database loses nothing.
 */
function replaceDatabaseFile(source: string, destPath: string): void {
  const dir = path.dirname(destPath);
  const aside: Array<[string, string]> = [];
  for (const file of sqliteJournalFiles(destPath)) {
    if (!fs.existsSync(file)) continue;
    const parked = replacedPath(file);
    fs.renameSync(file, parked);
    aside.push([file, parked]);
  }
  syncDirectorySync(dir);
  try {
    fs.renameSync(source, destPath);
  } catch (error) {
    for (const [file, parked] of aside) fs.renameSync(parked, file);
    syncDirectorySync(dir);
    throw error;
  }
  syncDirectorySync(dir);
  for (const [, parked] of aside) removeFileSync(parked);
}
