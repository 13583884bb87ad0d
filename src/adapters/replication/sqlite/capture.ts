import fs from 'node:fs';
import { type ChangesetCodec, decodeChangeset, encodeChangeset } from '../../../wire/changeset.ts';
import { readCommittedFrames, type WalCursor } from './wal.ts';

/**
 * What a leader has committed but storage does not hold: the pages of its outbox (set aside before
 * a checkpoint) with the WAL frames committed after `from` laid over them. Pure functions of files,
 * so they run the same on the leader's thread and in the capture worker.
 */
export interface UnshippedSource {
  walPath: string;
  /** How far the WAL is covered by storage or the outbox (null: from its start). */
  from: WalCursor | null;
  /** No frame past this offset: a retry encodes exactly the frames of the first attempt. */
  until?: number;
  /** The outbox, when it holds pages of the current position. */
  outboxPath: string | null;
  db: string;
}

export interface Unshipped {
  /** The last version of each page, by page number. */
  pages: Map<number, Uint8Array>;
  dbSizePages: number;
  pageSize: number;
  /** Where the WAL was read to (`from` when only the outbox had pages). */
  cursor: WalCursor | null;
  /** WAL bytes read. */
  walBytes: number;
  /** SQLite restarted the WAL since `from`. */
  restarted: boolean;
}

export interface CaptureJob extends UnshippedSource {
  epoch: number;
  /** The sequence this changeset takes, and the checksum of the one before it. */
  seq: number;
  prevChecksum: Uint8Array;
  commitTimeMs: number;
  codec?: ChangesetCodec;
  level?: number;
}

/** A sealed changeset and what the leader needs to know of it. */
export interface Capture {
  bytes: Uint8Array;
  seq: number;
  checksum: Uint8Array;
  commitTimeMs: number;
  pages: number;
  /** The database's size after this changeset. */
  dbBytes: number;
  cursor: WalCursor | null;
  walBytes: number;
  restarted: boolean;
  /** The outbox's pages are part of it: the outbox can go once it is durable. */
  includesOutbox: boolean;
}

export function collectUnshipped(source: UnshippedSource): Unshipped | null {
  const outbox = source.outboxPath === null ? null : readOutboxPages(source.outboxPath, source.db);
  const frames = readCommittedFrames(source.walPath, source.from, source.until);
  if (!outbox && !frames) return null;
  const pages = new Map(outbox?.pages);
  let dbSizePages = outbox?.dbSizePages ?? 0;
  let pageSize = outbox?.pageSize ?? 0;
  if (frames) {
    for (const [pgno, data] of frames.pages) pages.set(pgno, data);
    dbSizePages = frames.dbSizePages;
    pageSize = frames.cursor.pageSize;
    // Pages past the final size belong to commits the database later shrank away from.
    for (const pgno of pages.keys()) if (pgno > dbSizePages) pages.delete(pgno);
  }
  const readFrom = frames?.restarted || source.from === null ? 32 : source.from.offset;
  return {
    pages,
    dbSizePages,
    pageSize,
    cursor: frames?.cursor ?? source.from,
    walBytes: frames ? frames.cursor.offset - readFrom : 0,
    restarted: frames?.restarted ?? false,
  };
}

/** Collects what is unshipped and seals it into the changeset `job.seq`; null when nothing is. */
export function encodeCapture(job: CaptureJob): Capture | null {
  const unshipped = collectUnshipped(job);
  if (!unshipped) return null;
  const { bytes, changeset } = encodeChangeset(
    {
      db: job.db,
      epoch: job.epoch,
      seq: job.seq,
      commitTimeMs: job.commitTimeMs,
      prevChecksum: job.prevChecksum,
      pageSize: unshipped.pageSize,
      dbSizePages: unshipped.dbSizePages,
      pages: sortedPages(unshipped.pages),
    },
    {
      ...(job.codec !== undefined ? { codec: job.codec } : {}),
      ...(job.level !== undefined ? { level: job.level } : {}),
    },
  );
  return {
    bytes,
    seq: changeset.seq,
    checksum: changeset.checksum,
    commitTimeMs: changeset.commitTimeMs,
    pages: changeset.pages.length,
    dbBytes: unshipped.dbSizePages * unshipped.pageSize,
    cursor: unshipped.cursor,
    walBytes: unshipped.walBytes,
    restarted: unshipped.restarted,
    includesOutbox: job.outboxPath !== null,
  };
}

export function sortedPages(pages: ReadonlyMap<number, Uint8Array>) {
  return [...pages].sort(([a], [b]) => a - b).map(([pgno, data]) => ({ pgno, data }));
}

/** The outbox's pages; the leader checked it belongs to its position before naming it. */
function readOutboxPages(file: string, db: string) {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const changeset = decodeChangeset(bytes, { db });
  return {
    pages: new Map(changeset.pages.map(({ pgno, data }) => [pgno, data])),
    dbSizePages: changeset.dbSizePages,
    pageSize: changeset.pageSize,
  };
}
