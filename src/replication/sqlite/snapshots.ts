import fs from 'node:fs';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import type { Position } from '../../api-types.ts';
import { SNAPSHOT_EVERY_BYTES, SNAPSHOT_EVERY_CHANGESETS } from '../../defaults.ts';
import { readDatabaseImage, type SnapshotManifest, writeSnapshot } from '../snapshot.ts';
import type { CommittedFrames } from './wal.ts';

/** The leader's options that say when a snapshot is due (see `LeaderOptions`). */
export interface SnapshotScheduleOptions {
  snapshotEveryChangesets?: number;
  snapshotEveryBytes?: number;
  changesetsSinceSnapshot?: number | (() => Promise<number>);
}

/**
 * When a leader takes its next automatic snapshot: after so many changesets or so many changeset
 * bytes since the last one (or since the newest in storage when this leadership began).
 */
export class SnapshotSchedule {
  readonly #options: SnapshotScheduleOptions;
  #changesetsSinceSnapshot = 0;
  #askChangesetsSinceSnapshot: (() => Promise<number>) | null = null;
  #snapshotsTaken = 0;
  #bytesSinceSnapshot = 0;
  /** The database's size as of the last changeset shipped. */
  #dbBytes = 0;
  #autoSnapshotQueued = false;

  constructor(options: SnapshotScheduleOptions) {
    this.#options = options;
    const sinceSnapshot = options.changesetsSinceSnapshot ?? 0;
    if (typeof sinceSnapshot === 'number') this.#changesetsSinceSnapshot = sinceSnapshot;
    else this.#askChangesetsSinceSnapshot = sinceSnapshot;
  }

  /** The connections opened: storage is asked how far back the newest snapshot is, once. */
  opened(): void {
    const ask = this.#askChangesetsSinceSnapshot;
    if (ask === null) return;
    this.#askChangesetsSinceSnapshot = null;
    const snapshots = this.#snapshotsTaken;
    ask().then(
      (count) => {
        // A snapshot taken meanwhile already reset the count.
        if (this.#snapshotsTaken === snapshots) this.#changesetsSinceSnapshot += count;
      },
      // Counting from this leadership's first changeset only delays the next snapshot.
      () => {},
    );
  }

  /** A snapshot is being taken at the position just shipped: counting starts again. */
  taken(): void {
    this.#snapshotsTaken += 1;
    this.#changesetsSinceSnapshot = 0;
    this.#bytesSinceSnapshot = 0;
  }

  /** A changeset of `bytes` was shipped; the database is now `dbBytes` large. */
  shipped(bytes: number, dbBytes: number): void {
    this.#changesetsSinceSnapshot += 1;
    this.#bytesSinceSnapshot += bytes;
    this.#dbBytes = dbBytes;
  }

  /** An automatic snapshot is due and none is queued yet. */
  get due(): boolean {
    const {
      snapshotEveryChangesets = SNAPSHOT_EVERY_CHANGESETS,
      snapshotEveryBytes = SNAPSHOT_EVERY_BYTES,
    } = this.#options;
    if (this.#autoSnapshotQueued) return false;
    if (this.#changesetsSinceSnapshot >= snapshotEveryChangesets) return true;
    // Never more snapshot than log: a database larger than the threshold waits for its size.
    return this.#bytesSinceSnapshot >= Math.max(snapshotEveryBytes, this.#dbBytes);
  }

  /** Runs `take` as the automatic snapshot: none other is due until it settles. */
  takeAutomatic(take: () => Promise<unknown>, failed: (error: unknown) => void): void {
    this.#autoSnapshotQueued = true;
    take()
      .catch(failed)
      .finally(() => {
        this.#autoSnapshotQueued = false;
      });
  }
}

/** A consistent image to upload: the database file plus these WAL pages, at `seq`. */
export interface SnapshotSource {
  overlay: ReadonlyMap<number, Uint8Array>;
  dbSizePages: number;
  pageSize: number;
  position: Position;
  commitTimeMs: number;
}

/**
 * The image at `position`: the file at `dbPath` with `overlay` (the WAL's committed frames, all
 * shipped) on top. `pageSize` is asked only when neither the overlay nor the cursor knows it.
 */
export function snapshotSource(
  dbPath: string,
  overlay: CommittedFrames | null,
  pageSize: () => number,
  position: Position,
  commitTimeMs: number,
): SnapshotSource {
  const size = overlay?.cursor.pageSize ?? pageSize();
  const dbSizePages = overlay?.dbSizePages ?? Math.floor(fs.statSync(dbPath).size / size);
  return {
    overlay: overlay?.pages ?? new Map(),
    dbSizePages,
    pageSize: size,
    position,
    commitTimeMs,
  };
}

/** Writes the image of `source` (read from `path`) as a snapshot of `db` to storage. */
export function uploadSnapshot(
  target: { storage: StorageBackend; prefix: string; db: string; path: string },
  source: SnapshotSource,
): Promise<SnapshotManifest> {
  const { overlay, pageSize, dbSizePages, position, commitTimeMs } = source;
  return writeSnapshot(
    target.storage,
    {
      prefix: target.prefix,
      db: target.db,
      seq: position.seq,
      epoch: position.epoch,
      checksum: position.checksum,
      pageSize,
      dbSizePages,
      commitTimeMs,
      // The image must be the database the log records at this position.
      ...(position.dbChecksum === undefined ? {} : { dbChecksum: position.dbChecksum }),
    },
    readDatabaseImage(target.path, { overlay, pageSize, dbSizePages }),
  );
}
