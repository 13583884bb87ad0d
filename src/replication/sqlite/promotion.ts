import fs from 'node:fs';
import os from 'node:os';
import nodePath from 'node:path';
import Database from 'better-sqlite3';
import { urgently } from '../../adapters/pacing.ts';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import type { Position } from '../../api-types.ts';
import { FencedError } from '../../errors.ts';
import { encodeChangeset } from '../../wire/changeset.ts';
import { imageChecksum } from '../../wire/db-checksum.ts';
import { logKey } from '../snapshot.ts';
import type { SqliteFollower } from './follower.ts';

export interface EpochStartOptions {
  storage: StorageBackend;
  prefix: string;
  db: string;
  /** The epoch this node just claimed. */
  epoch: number;
  /** The follower copy that becomes the leader's file. */
  follower: SqliteFollower;
  /** Page size of a database that does not exist yet. */
  pageSize: number;
  /**
   * The copy is believed to hold the newest changeset: the record goes straight for the next slot.
   * Slots are written in order, so a free one is the next; a taken one means a pull and another try.
   */
  atTip?: boolean;
  signal?: AbortSignal;
}

/**
 * The first step of a new leadership: catch up with storage, then write a changeset of the new
 * epoch at the next sequence with `putIfAbsent`. Once it is in, any older leader's next upload
 * meets a taken slot and stops (fencing). A slot taken first by a late upload of the previous
 * leader is caught up with and the next one tried; one of a newer epoch means this claim is stale.
 *
 * Its storage requests are urgent (see {@link urgently}): the database is unavailable until the
 * record is in. The record this node wrote is applied to the copy as written, not read back.
 *
 * Returns the position the new leader starts from (the epoch-start record itself).
 */
export async function writeEpochStart(options: EpochStartOptions): Promise<Position> {
  const { storage, prefix, db, epoch, follower } = options;
  let pullFirst = options.atTip !== true;
  for (;;) {
    options.signal?.throwIfAborted();
    if (pullFirst) await follower.pull({ urgent: true });
    pullFirst = true;
    const position = follower.position;
    if (position.epoch >= epoch) {
      throw new FencedError(
        position.seq,
        `${db} changeset ${position.seq} has epoch ${position.epoch}: the claim of epoch ${epoch} is stale`,
      );
    }
    const dimensions = follower.dimensions;
    const shape = dimensions ? { ...dimensions, pages: [] } : emptyDatabaseShape(options.pageSize);
    // The database does not change: the checksum the copy holds, where the log recorded one.
    const dbChecksum = dimensions
      ? position.dbChecksum
      : imageChecksum(shape.pages.map(({ pgno, data }) => [pgno, data]));
    const { bytes, changeset } = encodeChangeset(
      {
        db,
        epoch,
        seq: position.seq + 1,
        commitTimeMs: Date.now(),
        prevChecksum: position.checksum,
        pageSize: shape.pageSize,
        dbSizePages: shape.dbSizePages,
        pages: shape.pages,
        ...(dbChecksum === undefined ? {} : { dbChecksum }),
      },
      { codec: 'none' },
    );
    const key = logKey(prefix, db, position.seq + 1);
    if (await urgently(() => storage.putIfAbsent(key, bytes))) {
      // Ours, and the next link of what the copy holds (nothing else moves it meanwhile).
      if (!follower.applyWritten(changeset)) await follower.pull({ urgent: true });
      return follower.position;
    }
  }
}

/** Page 1 of an empty database by page size: the same for every database this process creates. */
const emptyPage1 = new Map<number, Uint8Array>();

/** Page 1 of an empty SQLite database: what a new database's first epoch-start record holds. */
function emptyDatabaseShape(pageSize: number) {
  // Building it takes a temporary SQLite file and a vacuum: a quarter of opening a new database.
  let page1 = emptyPage1.get(pageSize);
  if (!page1) {
    page1 = buildEmptyPage1(pageSize);
    emptyPage1.set(pageSize, page1);
  }
  return { pageSize, dbSizePages: 1, pages: [{ pgno: 1, data: new Uint8Array(page1) }] };
}

function buildEmptyPage1(pageSize: number): Uint8Array {
  const dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), 'hadb-empty-'));
  try {
    const file = nodePath.join(dir, 'empty.db');
    const database = new Database(file);
    database.pragma(`page_size = ${Number(pageSize)}`);
    database.pragma('user_version = 0');
    database.exec('vacuum');
    database.close();
    return new Uint8Array(fs.readFileSync(file).subarray(0, pageSize));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
