import fs from 'node:fs';
import { writeFileAtomicSync } from '../../adapters/fs-sync.ts';
import type { DbChecksum } from '../../api-types.ts';
import {
  type ChangesetCodec,
  decodeChangeset,
  type EncodeChangesetOptions,
  encodeChangeset,
} from '../../wire/changeset.ts';
import {
  hashPages,
  PageHashes,
  type PageHashUpdate,
  type SharedPageHashes,
} from '../../wire/db-checksum.ts';
import { hashDatabaseFile } from './page-hashes.ts';
import { readCommittedFrames, WAL_HEADER_SIZE, type WalCursor } from './wal.ts';

/**
 * What a leader has committed but storage does not hold: the pages of its outbox segments (set
 * aside before checkpoints, oldest first) with the WAL frames committed after `from` laid over
 * them. Pure functions of files, so they run the same on the leader's thread and in the capture
 * worker.
 */
export interface UnshippedSource {
  walPath: string;
  /** How far the WAL is covered by storage or the outbox (null: from its start). */
  from: WalCursor | null;
  /** No frame past this offset: a retry encodes exactly the frames of the first attempt. */
  until?: number;
  /** The outbox segments holding pages of the current position, oldest first. */
  outboxPaths: readonly string[];
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
  /** See {@link EncodeChangesetOptions.minSavings}. */
  minSavings?: number;
  /** The database file (its pages are hashed whole when `hashes` is null). */
  dbPath: string;
  /** Page hashes of the last shipped state; null: not known yet, hash the whole database. */
  hashes: SharedPageHashes | null;
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
  /** How many outbox segments it includes: they can go once it is durable. */
  outboxSegments: number;
  /** The database checksum the changeset records. */
  dbChecksum: DbChecksum;
  /** New page hashes: of the changed pages, or of every page when `full`. */
  hashUpdate: PageHashUpdate;
  full: boolean;
}

export function collectUnshipped(source: UnshippedSource): Unshipped | null {
  const outbox = readOutboxPages(source.outboxPaths, source.db);
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
  const full = job.hashes === null;
  let hashUpdate: PageHashUpdate;
  let dbChecksum: DbChecksum;
  if (full) {
    const all = hashWholeDatabase(job, unshipped);
    dbChecksum = all.checksum;
    hashUpdate = {
      dbSizePages: unshipped.dbSizePages,
      pageSize: unshipped.pageSize,
      pgnos: Uint32Array.from({ length: unshipped.dbSizePages }, (_, i) => i + 1),
      hashes: all.hashes,
    };
  } else {
    hashUpdate = hashPages(unshipped.pages, unshipped.dbSizePages, unshipped.pageSize);
    dbChecksum = PageHashes.view(job.hashes as SharedPageHashes).checksumAfter(hashUpdate);
  }
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
      dbChecksum,
    },
    {
      ...(job.codec !== undefined ? { codec: job.codec } : {}),
      ...(job.level !== undefined ? { level: job.level } : {}),
      ...(job.minSavings !== undefined ? { minSavings: job.minSavings } : {}),
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
    outboxSegments: job.outboxPaths.length,
    dbChecksum,
    hashUpdate,
    full,
  };
}

/**
 * Every page's hash in the state the capture ships: its pages over the committed WAL frames (up to
 * where it read) over the file. The leader checkpoints only what it captured, so the file holds
 * nothing newer.
 */
function hashWholeDatabase(job: CaptureJob, unshipped: Unshipped) {
  const overlay = new Map(
    readCommittedFrames(job.walPath, null, unshipped.cursor?.offset ?? WAL_HEADER_SIZE)?.pages,
  );
  for (const [pgno, data] of unshipped.pages) overlay.set(pgno, data);
  const hashes = hashDatabaseFile(job.dbPath, unshipped.pageSize, unshipped.dbSizePages, overlay);
  const all = new BigUint64Array(unshipped.dbSizePages);
  const view = new BigUint64Array(hashes.shared().buffer, 0, unshipped.dbSizePages);
  all.set(view);
  return { checksum: hashes.checksum, hashes: all };
}

export function sortedPages(pages: ReadonlyMap<number, Uint8Array>) {
  return [...pages].sort(([a], [b]) => a - b).map(([pgno, data]) => ({ pgno, data }));
}

/** The outbox segments' pages, later ones over earlier ones; null when there are none. */
function readOutboxPages(files: readonly string[], db: string) {
  if (files.length === 0) return null;
  const pages = new Map<number, Uint8Array>();
  let dbSizePages = 0;
  let pageSize = 0;
  for (const file of files) {
    // The leader checked each belongs to its position before naming it.
    const changeset = decodeChangeset(fs.readFileSync(file), { db });
    for (const { pgno, data } of changeset.pages) pages.set(pgno, data);
    dbSizePages = changeset.dbSizePages;
    pageSize = changeset.pageSize;
  }
  for (const pgno of pages.keys()) if (pgno > dbSizePages) pages.delete(pgno);
  return { pages, dbSizePages, pageSize };
}

/** A set-aside done on the capture worker (see {@link setAsideSegment}). */
export interface SetAsideJob {
  walPath: string;
  from: WalCursor | null;
  /** No frame past this offset (default: up to the last commit). */
  until?: number;
  db: string;
  /** The position the segment belongs to: the changeset after it is what it will become part of. */
  epoch: number;
  seq: number;
  prevChecksum: Uint8Array;
  segmentPath: string;
}

export interface SetAside {
  cursor: WalCursor | null;
  walBytes: number;
}

/**
 * Writes the WAL frames committed after `from` (up to `until`) into a new outbox segment, durably;
 * null when there were none. It holds only those frames: earlier segments stay as they are.
 */
export function setAsideSegment(job: SetAsideJob): SetAside | null {
  const unshipped = collectUnshipped({ ...job, outboxPaths: [] });
  if (!unshipped) return null;
  writeOutboxSegment(job.segmentPath, job, unshipped);
  return { cursor: unshipped.cursor, walBytes: unshipped.walBytes };
}

/** An outbox segment: pages storage lacks, as an uncompressed changeset of the next sequence. */
export function writeOutboxSegment(
  file: string,
  position: { db: string; epoch: number; seq: number; prevChecksum: Uint8Array },
  unshipped: Pick<Unshipped, 'pages' | 'dbSizePages' | 'pageSize'>,
): void {
  const { bytes } = encodeChangeset(
    {
      db: position.db,
      epoch: position.epoch,
      seq: position.seq,
      commitTimeMs: 0,
      prevChecksum: position.prevChecksum,
      pageSize: unshipped.pageSize,
      dbSizePages: unshipped.dbSizePages,
      pages: sortedPages(unshipped.pages),
    },
    { codec: 'none' },
  );
  writeFileAtomicSync(file, bytes);
}

/** A leader's self-check: its file against the database checksum of what it shipped. */
export interface SelfCheckJob {
  dbPath: string;
  walPath: string;
  /** Where the last changeset shipped ended in the WAL (null: nothing of this WAL is shipped). */
  cursor: WalCursor | null;
  pageSize: number;
  dbSizePages: number;
}

/**
 * The database checksum of the leader's shipped state: the file with the WAL frames up to the
 * cursor over it. A WAL started over since holds nothing shipped (SQLite restarts it only once the
 * file holds every frame), and a torn read of one ends early, where the file holds the same pages.
 */
export function shippedStateChecksum(job: SelfCheckJob): DbChecksum {
  const { cursor } = job;
  let overlay: ReadonlyMap<number, Uint8Array> = new Map();
  if (cursor !== null) {
    const frames = readCommittedFrames(job.walPath, null, cursor.offset);
    const sameWal =
      frames !== null &&
      frames.cursor.salt1 === cursor.salt1 &&
      frames.cursor.salt2 === cursor.salt2;
    if (sameWal) overlay = frames.pages;
  }
  return hashDatabaseFile(job.dbPath, job.pageSize, job.dbSizePages, overlay).checksum;
}
