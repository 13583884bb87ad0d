import { writeFileAtomic, writeFileAtomicSync } from '../../adapters/fs-sync.ts';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import type { Position } from '../../api-types.ts';
import { FencedError } from '../../errors.ts';
import { leaderStatePath } from '../../side-files.ts';
import { decodeChangeset } from '../../wire/changeset.ts';
import { logKey } from '../snapshot.ts';
import { readJsonFileSync } from './local-file.ts';
import type { WalCursor } from './wal.ts';

/** The leader's state file: where a restart of this leadership resumes. */
export interface LeaderState {
  db: string;
  epoch: number;
  seq: number;
  checksum: string;
  /** Commit time of the changeset at `seq` (0 before the first): what a snapshot at `seq` reports. */
  commitTimeMs: number;
  cursor: WalCursor | null;
  /** Written before a changeset is uploaded, so a restart can tell whether the upload landed. */
  pending: PendingShip | null;
}

/** The changeset being uploaded, and where the WAL is covered once it is in storage. */
export interface PendingShip {
  seq: number;
  checksum: string;
  commitTimeMs: number;
  cursor: WalCursor | null;
}

/**
 * Where a leader is: the last changeset shipped, its commit time, and how far the WAL is covered by
 * what storage or the outbox holds. Saved to the state file beside the database.
 */
export class LocalState {
  readonly #db: string;
  readonly #file: string;
  #position: Position;
  #commitTimeMs: number;
  #durableCursor: WalCursor | null;
  /** The state file names this leadership (written before the first commit can happen). */
  #saved = false;

  constructor(
    dbPath: string,
    db: string,
    start: { position: Position; commitTimeMs: number; cursor: WalCursor | null },
  ) {
    this.#db = db;
    this.#file = leaderStatePath(dbPath);
    this.#position = start.position;
    this.#commitTimeMs = start.commitTimeMs;
    this.#durableCursor = start.cursor;
  }

  /** The last changeset in storage (this object: copy it before handing it out). */
  get position(): Position {
    return this.#position;
  }

  /** Commit time of the changeset at {@link position}. */
  get commitTimeMs(): number {
    return this.#commitTimeMs;
  }

  /** How far the WAL is covered by what storage or the outbox holds: where the next capture reads from. */
  get durableCursor(): WalCursor | null {
    return this.#durableCursor;
  }

  /** The state file was written by this leadership. */
  get saved(): boolean {
    return this.#saved;
  }

  /** A changeset is in storage: it is the position, and the WAL is covered up to `cursor`. */
  shipped(position: Position, commitTimeMs: number, cursor: WalCursor | null): void {
    this.#position = position;
    this.#durableCursor = cursor;
    this.#commitTimeMs = commitTimeMs;
  }

  /** An earlier upload of this leadership holds the next slot: continue after it. */
  follow(position: Position, commitTimeMs: number): void {
    this.#position = position;
    this.#commitTimeMs = commitTimeMs;
  }

  /** An outbox segment holds the WAL up to `cursor`. */
  covered(cursor: WalCursor | null): void {
    this.#durableCursor = cursor;
  }

  /** WAL bytes past what storage or the outbox covers (all of a WAL restarted since). */
  unshippedWalBytes(walBytes: number): number {
    const from = this.#durableCursor?.offset ?? 0;
    return walBytes >= from ? walBytes - from : walBytes;
  }

  save(pending: PendingShip | null): void {
    writeFileAtomicSync(this.#file, JSON.stringify(this.#record(pending)));
    this.#saved = true;
  }

  /** {@link save} on the threadpool; only inside the serial queue, so no write overtakes it. */
  async saveOffThread(pending: PendingShip | null): Promise<void> {
    await writeFileAtomic(this.#file, JSON.stringify(this.#record(pending)));
    this.#saved = true;
  }

  #record(pending: PendingShip | null): LeaderState {
    return {
      db: this.#db,
      epoch: this.#position.epoch,
      seq: this.#position.seq,
      checksum: hex(this.#position.checksum),
      commitTimeMs: this.#commitTimeMs,
      cursor: this.#durableCursor,
      pending,
    };
  }
}

/** The state file an earlier run of a leader left beside `dbPath`, as written. */
export function readLeaderState(dbPath: string): LeaderState | undefined {
  return readJsonFileSync(leaderStatePath(dbPath)) as LeaderState | undefined;
}

/** The local state of an earlier run of this leader, reconciled with storage; null when starting fresh. */
export async function resolveLocalState(options: {
  path: string;
  db: string;
  storage: StorageBackend;
  prefix: string;
  epoch: number;
}): Promise<LeaderState | null> {
  const raw = readLeaderState(options.path);
  if (!raw || raw.db !== options.db || raw.epoch !== options.epoch) return null;
  if (!raw.pending) return raw;
  const stored = await options.storage.get(logKey(options.prefix, options.db, raw.pending.seq));
  if (stored === null) return { ...raw, pending: null };
  const landed = decodeChangeset(stored, { db: options.db });
  const ownOtherAttempt =
    landed.epoch === raw.epoch &&
    hex(landed.prevChecksum) === raw.checksum &&
    hex(landed.checksum) !== raw.pending.checksum;
  if (ownOtherAttempt) {
    // An earlier attempt of this leadership landed, not the last one: follow it, and capture
    // again from before it (pages shipped twice change nothing).
    return {
      ...raw,
      seq: landed.seq,
      checksum: hex(landed.checksum),
      commitTimeMs: landed.commitTimeMs,
      pending: null,
    };
  }
  if (hex(landed.checksum) !== raw.pending.checksum) {
    throw new FencedError(
      raw.pending.seq,
      `changeset ${raw.pending.seq} in storage is not the one this leader uploaded`,
    );
  }
  return {
    ...raw,
    seq: raw.pending.seq,
    checksum: raw.pending.checksum,
    commitTimeMs: raw.pending.commitTimeMs,
    cursor: raw.pending.cursor,
    pending: null,
  };
}

export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}
