/**
 * The path of one ship, in order: capture the WAL's committed frames (and any outbox segments)
 * and encode them as the next changeset → record it as pending → ask the write gate → put it,
 * once, at its slot in storage → decide on a lost slot (our retry, our own earlier attempt, or
 * another leader: fenced) → advance the position. After a flush, the self-check compares the file
 * with what was shipped (diverged).
 */
import type { StorageBackend } from '../../adapters/storage/types.ts';
import type { Clock } from '../../clock.ts';
import { SELF_CHECK_BUDGET } from '../../defaults.ts';
import { DatabaseDivergedError, FencedError, InternalError, NotLeaderError } from '../../errors.ts';
import { walPath } from '../../side-files.ts';
import { type Changeset, type ChangesetCodec, decodeChangeset } from '../../wire/changeset.ts';
import { dbChecksumHex, PageHashes } from '../../wire/db-checksum.ts';
import { logKey } from '../snapshot.ts';
import {
  type Capture,
  type CaptureJob,
  encodeCapture,
  type SelfCheckJob,
  shippedStateChecksum,
} from './capture.ts';
import { captureWorker } from './capture-pool.ts';
import { workerAllowed } from './checkpointer.ts';
import type { LeaderConnections } from './connections.ts';
import { fileSize } from './local-file.ts';
import { hex, type LocalState } from './local-state.ts';
import type { Outbox } from './outbox.ts';

/** Smaller captures are built on the leader's thread: a round trip to the worker would cost more. */
const WORKER_CAPTURE_BYTES = 256 * 1024;
/** Captures at least this large mean the writer outpaces shipping (see `lightCaptureBytes`). */
const LIGHT_CAPTURE_BYTES = 4 * 1024 * 1024;
/** What compression must save of a capture that large to be worth its time. */
const LIGHT_CAPTURE_MIN_SAVINGS = 1 / 3;
/** How long a due self-check may wait for a moment when no flush is queued behind it. */
const SELF_CHECK_MAX_DEFERRAL_MS = 60_000;

/** The leader's options the shipper reads (see `LeaderOptions`). */
export interface ShipperOptions {
  path: string;
  db: string;
  storage: StorageBackend;
  prefix: string;
  codec?: ChangesetCodec;
  lightCaptureBytes?: number;
  workerCaptureBytes?: number;
  wallClockMs?: () => number;
  canShip?: () => boolean;
  selfCheckBudget?: number;
  onEvent?: (
    event:
      | { type: 'shipped'; seq: number; bytes: number; pages: number }
      | { type: 'ship-failed'; seq: number; error: unknown }
      | { type: 'fenced'; seq: number }
      | { type: 'wal-restarted' },
  ) => void;
}

/** What the shipper works with: the leader's connections, where it is, and its outbox. */
export interface ShipperParts {
  connections: LeaderConnections;
  local: LocalState;
  outbox: Outbox;
  /** Another leader holds the slot: recorded before it is reported, so nothing ships after it. */
  fence: (error: FencedError) => void;
  /** A changeset is in storage and the position advanced (checkpoint and snapshot counts). */
  shipped: (captured: Capture) => void;
}

/** Captures what is committed and ships it as changesets, one at a time (the leader's queue). */
export class Shipper {
  readonly #options: ShipperOptions;
  readonly #parts: ShipperParts;
  readonly #walPath: string;
  /** The last upload failed: the tick retries even if the WAL did not change. */
  #failed = false;
  /**
   * Every page's hash as of the last changeset shipped: each capture adds its pages' hashes to
   * make the next database checksum. Built by the first capture (a takeover never used does no
   * file work for it).
   */
  #pageHashes: PageHashes | null = null;

  constructor(options: ShipperOptions, parts: ShipperParts) {
    this.#options = options;
    this.#parts = parts;
    this.#walPath = walPath(options.path);
  }

  get failed(): boolean {
    return this.#failed;
  }

  get pageHashes(): PageHashes | null {
    return this.#pageHashes;
  }

  /** What storage lacks: the outbox segments, then the WAL after the covered cursor. */
  unshippedSource() {
    return {
      walPath: this.#walPath,
      from: this.#parts.local.durableCursor,
      outboxPaths: [...this.#parts.outbox.segments],
      db: this.#options.db,
    };
  }

  /**
   * Ships everything committed (up to `until`), as one changeset. Again at the next sequence when
   * an earlier attempt turns out to have landed: the same frames go out once more, which changes
   * nothing (each page is its latest version).
   */
  async shipUnshipped(until?: number, onCaptured?: (captured: Capture) => void): Promise<void> {
    // Before the capture: it reads the WAL as these settings make SQLite write it.
    this.#parts.connections.reassertSettings();
    try {
      let captured = await this.#capture(until);
      if (!captured) {
        this.#failed = false;
        return;
      }
      onCaptured?.(captured);
      while (!(await this.#ship(captured))) {
        const again: Capture | null = await this.#capture(captured.cursor?.offset ?? until);
        if (!again)
          throw new InternalError('the frames of a changeset vanished before it was shipped');
        captured = again;
      }
      this.#failed = false;
    } catch (error) {
      this.#failed = true;
      throw error;
    }
  }

  #captureJob(until: number | undefined, pending: number): CaptureJob {
    const { position } = this.#parts.local;
    const light = pending >= (this.#options.lightCaptureBytes ?? LIGHT_CAPTURE_BYTES);
    return {
      ...this.unshippedSource(),
      ...(until !== undefined ? { until } : {}),
      epoch: position.epoch,
      seq: position.seq + 1,
      prevChecksum: position.checksum,
      commitTimeMs: (this.#options.wallClockMs ?? Date.now)(),
      ...(this.#options.codec !== undefined ? { codec: this.#options.codec } : {}),
      ...(light ? { minSavings: LIGHT_CAPTURE_MIN_SAVINGS } : {}),
      dbPath: this.#options.path,
      hashes: this.#pageHashes?.shared() ?? null,
    };
  }

  /** Seals what is unshipped into the next changeset (encoded): large ones on the capture worker. */
  #capture(until?: number): Promise<Capture | null> {
    const { local, outbox } = this.#parts;
    const pending = local.unshippedWalBytes(fileSize(this.#walPath)) + outbox.bytes();
    const job = this.#captureJob(until, pending);
    const threshold = this.#options.workerCaptureBytes ?? WORKER_CAPTURE_BYTES;
    // The first capture hashes the whole database: on the worker unless that is small too.
    const hashing = job.hashes === null ? fileSize(this.#options.path) : 0;
    if (pending + hashing >= threshold) return captureWorker.run(job);
    // From a macrotask: with storage that answers in microtasks, commit → flush → commit would
    // otherwise never let timers and sockets run.
    return new Promise((resolve, reject) => {
      setImmediate(() => {
        try {
          resolve(encodeCapture(job));
        } catch (error) {
          reject(error);
        }
      });
    });
  }

  /** Uploads one changeset; false when the slot held an earlier upload of ours instead. */
  async #ship(captured: Capture): Promise<boolean> {
    const { local, outbox } = this.#parts;
    const { bytes, cursor } = captured;
    const changeset = captured;
    const key = logKey(this.#options.prefix, this.#options.db, changeset.seq);
    // Pending first: a crash after the put leaves a restart able to ask storage whether it landed.
    // Off this thread: its fsyncs wait for the WAL's dirty pages, and the application keeps writing.
    await local.saveOffThread({
      seq: changeset.seq,
      checksum: hex(changeset.checksum),
      commitTimeMs: changeset.commitTimeMs,
      cursor: cursor ?? local.durableCursor,
    });
    // The write gate, as late as possible: right before the put, after every await but its own.
    if (this.#options.canShip && !this.#options.canShip()) {
      const error = new NotLeaderError(
        `${this.#options.db} epoch ${local.position.epoch}: the lease is no longer valid, changeset ${changeset.seq} stays local`,
      );
      this.#options.onEvent?.({ type: 'ship-failed', seq: changeset.seq, error });
      throw error;
    }
    // The slot is written once: by this leader, or by whoever got there first.
    let written: boolean;
    let earlier: Changeset | null = null;
    try {
      written = await this.#options.storage.putIfAbsent(key, bytes);
      if (!written) {
        // Our own earlier attempt may have landed without us hearing of it.
        const existing = await this.#options.storage.get(key);
        written = existing !== null && Buffer.from(existing).equals(Buffer.from(bytes));
        if (!written && existing !== null) earlier = this.#ownEarlierUpload(existing);
      }
    } catch (error) {
      this.#options.onEvent?.({ type: 'ship-failed', seq: changeset.seq, error });
      throw error;
    }
    if (earlier) {
      // It holds older versions of pages we still hold: follow it, then ship ours after it.
      local.follow(
        { epoch: earlier.epoch, seq: earlier.seq, checksum: earlier.checksum },
        earlier.commitTimeMs,
      );
      return false;
    }
    if (!written) {
      // Someone else's changeset holds our slot: another leader took over. Stop before the
      // position moves, so nothing of ours follows theirs.
      const error = new FencedError(
        changeset.seq,
        `${key} was already written by another leader; this one (epoch ${local.position.epoch}) must stop`,
      );
      this.#parts.fence(error);
      this.#options.onEvent?.({ type: 'fenced', seq: changeset.seq });
      throw error;
    }
    // In storage: only now does the position advance.
    local.shipped(
      {
        epoch: local.position.epoch,
        seq: changeset.seq,
        checksum: changeset.checksum,
        dbChecksum: captured.dbChecksum,
      },
      changeset.commitTimeMs,
      cursor,
    );
    if (captured.full || this.#pageHashes === null) {
      this.#pageHashes = PageHashes.empty();
    }
    this.#pageHashes.apply(captured.hashUpdate);
    if (captured.restarted) this.#options.onEvent?.({ type: 'wal-restarted' });
    if (captured.outboxSegments > 0) outbox.dropShipped(captured.outboxSegments);
    // No state write here: the pending record already says where a restart resumes once
    // storage confirms this upload, and the next capture's write records it anyway.
    this.#options.onEvent?.({
      type: 'shipped',
      seq: changeset.seq,
      bytes: bytes.length,
      pages: changeset.pages,
    });
    this.#parts.shipped(captured);
    return true;
  }

  /**
   * The changeset in our next slot, if an earlier attempt of this leadership put it there: same
   * epoch (only this leader writes it) and linked to our position. Null for anyone else's.
   */
  #ownEarlierUpload(bytes: Uint8Array): Changeset | null {
    const { position } = this.#parts.local;
    try {
      const landed = decodeChangeset(bytes, {
        db: this.#options.db,
        seq: position.seq + 1,
        prevChecksum: position.checksum,
      });
      return landed.epoch === position.epoch ? landed : null;
    } catch {
      return null;
    }
  }
}

/**
 * Compares the file, as of the last changeset shipped, with the database checksum that changeset
 * records, when due (see `LeaderOptions.selfCheckBudget`). Run inside the leader's queue: no
 * checkpoint changes the file meanwhile. On the capture worker when it can.
 */
export class SelfCheck {
  readonly #options: Pick<ShipperOptions, 'path' | 'db' | 'selfCheckBudget' | 'workerCaptureBytes'>;
  readonly #clock: Clock;
  readonly #parts: Pick<ShipperParts, 'connections' | 'local' | 'outbox'>;
  readonly #walPath: string;
  /** The self-check runs again from this time on (clock ms), once something new was shipped. */
  #dueAt = 0;
  #checkedSeq = -1;

  constructor(
    options: Pick<ShipperOptions, 'path' | 'db' | 'selfCheckBudget' | 'workerCaptureBytes'>,
    clock: Clock,
    parts: Pick<ShipperParts, 'connections' | 'local' | 'outbox'>,
  ) {
    this.#options = options;
    this.#clock = clock;
    this.#parts = parts;
    this.#walPath = walPath(options.path);
  }

  /**
   * The file's mismatch with what was shipped, or null (also when not due). `hashes` are the
   * shipper's; `flushWaiting`: a flush is queued behind this one.
   */
  async run(
    hashes: PageHashes | null,
    flushWaiting: boolean,
  ): Promise<DatabaseDivergedError | null> {
    const { connections, local, outbox } = this.#parts;
    const budget = this.#options.selfCheckBudget ?? SELF_CHECK_BUDGET;
    const expected = local.position.dbChecksum;
    const database = connections.app;
    if (!(budget > 0) || expected === undefined || hashes === null || database === null)
      return null;
    // Outbox pages are in the file but not in storage yet: the file is ahead of what was shipped.
    if (!outbox.empty || local.position.seq === this.#checkedSeq) return null;
    const now = this.#clock.now();
    if (now < this.#dueAt) return null;
    // Flushes wait while it hashes: with one queued behind it, it waits for a quieter moment,
    // unless it is long overdue (a writer that never pauses still gets checked).
    if (flushWaiting && now < this.#dueAt + SELF_CHECK_MAX_DEFERRAL_MS) return null;
    const seq = local.position.seq;
    const job: SelfCheckJob = {
      dbPath: this.#options.path,
      walPath: this.#walPath,
      cursor: local.durableCursor,
      pageSize:
        local.durableCursor?.pageSize ?? (database.pragma('page_size', { simple: true }) as number),
      dbSizePages: hashes.dbSizePages,
    };
    const started = performance.now();
    const actual =
      (workerAllowed(this.#options) ? await captureWorker.selfCheck(job) : undefined) ??
      shippedStateChecksum(job);
    const tookMs = performance.now() - started;
    this.#dueAt = this.#clock.now() + tookMs / budget;
    this.#checkedSeq = seq;
    if (actual === expected) return null;
    return new DatabaseDivergedError(
      seq,
      dbChecksumHex(expected),
      dbChecksumHex(actual),
      `${this.#options.path} is not the database ${this.#options.db} shipped up to seq ${seq} (epoch ${local.position.epoch}): changed outside hadb; it stops leading`,
    );
  }
}
