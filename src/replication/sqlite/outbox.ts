import fs from 'node:fs';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import type { ParkedTail, Position } from '../../api-types.ts';
import { FencedError } from '../../errors.ts';
import {
  leaderStatePath,
  outboxSegmentNumber,
  outboxSegmentPath,
  parkedTailPath,
  walPath,
} from '../../side-files.ts';
import { decodeChangeset } from '../../wire/changeset.ts';
import { collectUnshipped, type Unshipped, writeOutboxSegment } from './capture.ts';
import { fileSize, removeFileSync } from './local-file.ts';
import { type LeaderState, readLeaderState, resolveLocalState } from './local-state.ts';

/**
 * A leader's outbox: segments holding pages storage lacks, set aside before WAL restarts, oldest
 * first. The next capture ships them before the WAL.
 */
export class Outbox {
  readonly #dbPath: string;
  readonly #segments: string[];

  /** The segments left beside `dbPath` for the changeset after `position` (stale ones removed). */
  constructor(dbPath: string, db: string, position: Position) {
    this.#dbPath = dbPath;
    this.#segments = matchingOutboxSegments(dbPath, db, position);
  }

  get segments(): readonly string[] {
    return this.#segments;
  }

  get empty(): boolean {
    return this.#segments.length === 0;
  }

  /** What the segments hold on disk. */
  bytes(): number {
    return this.#segments.reduce((bytes, file) => bytes + fileSize(file), 0);
  }

  /** The next segment's file: one past the newest. */
  next(): string {
    const last = this.#segments.at(-1);
    const n = last === undefined ? 1 : outboxSegmentNumber(this.#dbPath, last) + 1;
    return outboxSegmentPath(this.#dbPath, n);
  }

  /** A segment written at {@link next} is durable. */
  add(segmentPath: string): void {
    this.#segments.push(segmentPath);
  }

  /** Removes the oldest `count` segments (shipped), newest first: a crash leaves the oldest. */
  dropShipped(count: number): void {
    const shipped = this.#segments.splice(0, count);
    for (const file of shipped.reverse()) removeFileSync(file);
  }
}

type OutboxPages = Pick<Unshipped, 'pages' | 'dbSizePages' | 'pageSize'>;

/** The changeset an outbox segment (or a parked tail) becomes part of: the one after `position`. */
export function segmentPositionOf(db: string, position: Position) {
  return { db, epoch: position.epoch, seq: position.seq + 1, prevChecksum: position.checksum };
}

/**
 * The outbox segments of `dbPath` (numbered from 1 with no gap), oldest first. Shipped ones are
 * removed newest first, so a crash part way leaves a run from the first.
 */
export function outboxSegmentsOf(dbPath: string): string[] {
  const segments: string[] = [];
  for (let n = 1; fs.existsSync(outboxSegmentPath(dbPath, n)); n++)
    segments.push(outboxSegmentPath(dbPath, n));
  return segments;
}

/**
 * The segments holding pages of this position, oldest first. Any left from an earlier position
 * (shipped before a crash could remove them) is stale: all of them are removed.
 */
function matchingOutboxSegments(dbPath: string, db: string, position: Position): string[] {
  const segments = outboxSegmentsOf(dbPath);
  const matches = segments.every((file) => {
    try {
      const bytes = fs.readFileSync(file);
      decodeChangeset(bytes, { db, seq: position.seq + 1, prevChecksum: position.checksum });
      return true;
    } catch {
      return false;
    }
  });
  if (matches) return segments;
  for (const file of segments.reverse()) removeFileSync(file);
  return [];
}

/** Writes what storage lacks, after `position`, to a parked tail in `parkDir`. */
export function parkTail(
  parkDir: string,
  db: string,
  position: Position,
  unshipped: OutboxPages,
): ParkedTail {
  fs.mkdirSync(parkDir, { recursive: true });
  const file = parkedTailPath(parkDir, db, position.epoch, position.seq, Date.now());
  writeOutboxSegment(file, segmentPositionOf(db, position), unshipped);
  return { file, epoch: position.epoch, afterSeq: position.seq, pages: unshipped.pages.size };
}

/**
 * After a crash: whatever an earlier leadership on `path` committed that storage lacks (its outbox
 * and the WAL after its last durable point) goes to a side file in `parkDir`. Null when it left
 * nothing behind. The caller then rebuilds the local copy from storage.
 */
export async function salvageLeaderTail(options: {
  path: string;
  db: string;
  storage: StorageBackend;
  prefix: string;
  parkDir: string;
}): Promise<ParkedTail | null> {
  const raw = readLeaderState(options.path);
  if (!raw || raw.db !== options.db) return null;
  let state: LeaderState = raw;
  try {
    state = (await resolveLocalState({ ...options, epoch: raw.epoch })) ?? raw;
  } catch (error) {
    // The pending upload lost its slot to another leader: it is part of the tail below.
    if (!(error instanceof FencedError)) throw error;
  }
  const position: Position = {
    epoch: state.epoch,
    seq: state.seq,
    checksum: Buffer.from(state.checksum, 'hex'),
  };
  const unshipped = collectUnshipped({
    walPath: walPath(options.path),
    from: state.cursor,
    outboxPaths: matchingOutboxSegments(options.path, options.db, position),
    db: options.db,
  });
  if (!unshipped || unshipped.pages.size === 0) return null;
  return parkTail(options.parkDir, options.db, position, unshipped);
}

/** Every file a leader keeps beside the database. */
export function leaderSideFiles(path: string): string[] {
  // Newest segment first, like a shipped outbox's removal.
  return [leaderStatePath(path), ...outboxSegmentsOf(path).reverse()];
}
