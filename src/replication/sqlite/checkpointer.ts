import { CHECKPOINT_EVERY_BYTES, WAL_TRUNCATE_BYTES } from '../../defaults.ts';
import { walPath } from '../../side-files.ts';
import { type SetAsideJob, setAsideSegment } from './capture.ts';
import { captureWorker } from './capture-pool.ts';
import type { LeaderConnections } from './connections.ts';
import { fileSize } from './local-file.ts';
import type { LocalState } from './local-state.ts';
import { type Outbox, segmentPositionOf } from './outbox.ts';
import type { WalCursor } from './wal.ts';

/** Restarting the WAL sets aside at most this many unshipped bytes on the leader's thread. */
const SET_ASIDE_BYTES = 4 * 1024 * 1024;
/** Background set-asides before one restart: a writer outrunning the worker still gets one. */
const SET_ASIDE_ROUNDS = 4;

/** The leader's options the checkpointer reads (see `LeaderOptions`). */
export interface CheckpointerOptions {
  path: string;
  db: string;
  checkpointEveryBytes?: number;
  walTruncateBytes?: number;
  setAsideBytes?: number;
  workerCaptureBytes?: number;
}

/** What the checkpointer works with: the leader's connections, where it is, and its outbox. */
export interface CheckpointerParts {
  connections: LeaderConnections;
  local: LocalState;
  outbox: Outbox;
  /** Asks the leader to flush again at once. */
  shipSoon: () => void;
  /** The leader is closing: stop setting aside. */
  closed: () => boolean;
}

/** `workerCaptureBytes: Infinity` keeps every capture and checkpoint on this thread. */
export function workerAllowed(options: { workerCaptureBytes?: number }): boolean {
  return options.workerCaptureBytes !== Number.POSITIVE_INFINITY;
}

/**
 * The leader's checkpoints: the only ones that copy WAL frames into the database file, and only
 * frames storage holds (under the flush's pin) or the outbox holds (set aside first).
 */
export class Checkpointer {
  readonly #options: CheckpointerOptions;
  readonly #parts: CheckpointerParts;
  readonly #walPath: string;
  /** Snapshots reading the database file: no checkpoint may change it meanwhile. */
  #holds = 0;
  #walBytesSinceCheckpoint = 0;

  constructor(options: CheckpointerOptions, parts: CheckpointerParts) {
    this.#options = options;
    this.#parts = parts;
    this.#walPath = walPath(options.path);
  }

  /** A snapshot reads the database file until {@link release}. */
  hold(): void {
    this.#holds += 1;
  }

  release(): void {
    this.#holds -= 1;
  }

  get held(): boolean {
    return this.#holds > 0;
  }

  /** A changeset covering `walBytes` of the WAL is in storage. */
  shipped(walBytes: number): void {
    this.#walBytesSinceCheckpoint += walBytes;
  }

  /** The connections closed (hibernation): SQLite checkpointed everything. */
  reset(): void {
    this.#walBytesSinceCheckpoint = 0;
  }

  /**
   * Backfills the WAL into the database file once enough of it was written, like SQLite's own
   * autocheckpoint. Under the flush's pin only shipped frames can be backfilled, and the capture
   * worker does it. Past the truncate size everything committed is set aside first, so the whole
   * WAL can be backfilled and SQLite starts it over at the next write. While much is unshipped
   * that waits for shipping to catch up, up to 4× the truncate size; past it the bulk goes to
   * outbox segments on the worker (each followed by a backfill up to a pin at its end) while the
   * application keeps writing, and this thread sets aside and restarts only what came in
   * meanwhile.
   */
  async run(pinned: boolean, backfill: Promise<boolean> | null): Promise<void> {
    const { connections, local } = this.#parts;
    // A snapshot is reading the database file: it must not change under it.
    if (this.#holds > 0 || connections.app === null) return;
    const truncateBytes = this.#walTruncateBytes;
    const oversized = fileSize(this.#walPath) > truncateBytes;
    const due = this.#walBytesSinceCheckpoint >= this.#checkpointEveryBytes;
    if (!due && !oversized && backfill === null) return;
    // Unpinned, only a restart is worth the synchronous step; the next flush pins and does it.
    if (!pinned && !oversized) return;
    if (pinned) {
      // Everything up to the pin is in storage: the bulk of the copying, off this thread.
      const done = (await backfill) || (await this.#backfillOnWorker());
      if (!done) this.#checkpointHere(false);
      this.#walBytesSinceCheckpoint = 0;
      if (!oversized) return;
      const walBytes = fileSize(this.#walPath);
      if (local.unshippedWalBytes(walBytes) > this.#setAsideBytes) {
        // Shipping catches up with most writers: flush again at once rather than set aside.
        if (walBytes <= 4 * truncateBytes) {
          this.#parts.shipSoon();
          return;
        }
        await this.#setAsideInBackground();
      }
    }
    // One synchronous block from here on: no commit can slip in before the checkpoint.
    connections.unpin();
    this.setAsideUnshipped();
    this.#checkpointHere(oversized);
  }

  /**
   * Starts the flush's backfill on the capture worker as soon as its changeset is sealed, so the
   * copying overlaps the upload instead of following it. Only frames up to the pin, taken before the
   * capture read the WAL, are copied: all of them are in this changeset. The pin stays until they
   * are in storage, so SQLite cannot restart the WAL over frames only the file holds. Null when no
   * backfill is due yet.
   */
  backfillWhileUploading(capturedWalBytes: number): Promise<boolean> | null {
    if (this.#holds > 0 || this.#parts.connections.app === null) return null;
    const due = this.#due(fileSize(this.#walPath), capturedWalBytes);
    return due ? this.#backfillOnWorker() : null;
  }

  /** A PASSIVE checkpoint up to the pin on the capture worker; false when it could not run there. */
  async #backfillOnWorker(): Promise<boolean> {
    if (!workerAllowed(this.#options)) return false;
    return captureWorker.checkpoint(this.#options.path);
  }

  /**
   * Sets aside unshipped WAL into new outbox segments on the capture worker until what is left is
   * small, each time re-pinning at the WAL's end first so the worker's backfill stops there (frames
   * after it are in no segment yet). Stops early when the worker cannot do it.
   */
  async #setAsideInBackground(): Promise<void> {
    const { connections, local, outbox } = this.#parts;
    if (!workerAllowed(this.#options)) return;
    for (let round = 0; round < SET_ASIDE_ROUNDS; round++) {
      const walBytes = fileSize(this.#walPath);
      if (local.unshippedWalBytes(walBytes) <= this.#setAsideBytes) return;
      connections.unpin();
      if (!connections.pin()) return;
      const segmentPath = outbox.next();
      // Up to where the pin's snapshot ends: no commit came between the two.
      const done = await captureWorker.setAside(this.#setAsideJob(segmentPath, walBytes));
      if (done === undefined || this.#parts.closed()) return;
      if (done === null) continue;
      this.#addOutboxSegment(segmentPath, done);
      if (!(await this.#backfillOnWorker())) return;
      this.#walBytesSinceCheckpoint = 0;
    }
  }

  get #setAsideBytes(): number {
    return this.#options.setAsideBytes ?? SET_ASIDE_BYTES;
  }

  /** This flush may end with a checkpoint: it needs the pin (a connection of its own). */
  mayBeDue(): boolean {
    const walBytes = fileSize(this.#walPath);
    return this.#due(walBytes, this.#parts.local.unshippedWalBytes(walBytes));
  }

  /** A WAL of `walBytes` past the truncate size, or enough written since the last checkpoint. */
  #due(walBytes: number, walBytesToShip: number): boolean {
    if (walBytes > this.#walTruncateBytes) return true;
    return this.#walBytesSinceCheckpoint + walBytesToShip >= this.#checkpointEveryBytes;
  }

  get #walTruncateBytes(): number {
    return this.#options.walTruncateBytes ?? WAL_TRUNCATE_BYTES;
  }

  get #checkpointEveryBytes(): number {
    return this.#options.checkpointEveryBytes ?? CHECKPOINT_EVERY_BYTES;
  }

  #checkpointHere(restart: boolean): void {
    const { connections } = this.#parts;
    try {
      connections.checkpointer.pragma('wal_checkpoint(PASSIVE)');
      this.#walBytesSinceCheckpoint = 0;
      if (restart) connections.checkpointer.pragma('wal_checkpoint(RESTART)');
    } catch (error) {
      // SQLITE_BUSY: a reader is in the way; the next tick tries again.
      if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
    }
  }

  /**
   * Everything committed that storage lacks goes to the outbox, which a restart ships first: the
   * WAL frames no segment holds yet become a new segment.
   */
  setAsideUnshipped(): void {
    const segmentPath = this.#parts.outbox.next();
    const setAside = setAsideSegment(this.#setAsideJob(segmentPath));
    if (setAside) this.#addOutboxSegment(segmentPath, setAside);
  }

  /** The WAL frames no segment holds yet (up to `until`), for a new segment at `segmentPath`. */
  #setAsideJob(segmentPath: string, until?: number): SetAsideJob {
    const { local } = this.#parts;
    return {
      // What a segment is tied to: the changeset after the last shipped one.
      ...segmentPositionOf(this.#options.db, local.position),
      walPath: this.#walPath,
      from: local.durableCursor,
      ...(until !== undefined ? { until } : {}),
      segmentPath,
    };
  }

  /** A segment is durable: the WAL up to `cursor` is covered, and a restart resumes there. */
  #addOutboxSegment(segmentPath: string, covered: { cursor: WalCursor | null; walBytes: number }) {
    this.#parts.outbox.add(segmentPath);
    this.#parts.local.covered(covered.cursor);
    this.#walBytesSinceCheckpoint += covered.walBytes;
    this.#parts.local.save(null);
  }
}
