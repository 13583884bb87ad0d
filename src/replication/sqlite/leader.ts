import fs from 'node:fs';
import type Database from 'better-sqlite3';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import type { ParkedTail, Position } from '../../api-types.ts';
import { type Clock, systemClock, type TimerId } from '../../clock.ts';
import { SHIP_INTERVAL_MS, WAL_TRUNCATE_BYTES } from '../../defaults.ts';
import {
  ClosedError,
  DatabaseDivergedError,
  type FencedError,
  InvalidArgumentError,
} from '../../errors.ts';
import { walPath } from '../../side-files.ts';
import type { ChangesetCodec } from '../../wire/changeset.ts';
import type { SnapshotManifest } from '../snapshot.ts';
import { type Capture, collectUnshipped } from './capture.ts';
import { Checkpointer, type CheckpointerParts } from './checkpointer.ts';
import { type ConnectionOptions, LeaderConnections } from './connections.ts';
import { fileSize, removeLeftoverTempFilesOnce } from './local-file.ts';
import { type LeaderState, LocalState, resolveLocalState } from './local-state.ts';
import { Outbox, outboxSegmentsOf, parkTail } from './outbox.ts';
import { SelfCheck, Shipper, type ShipperParts } from './shipper.ts';
import { SnapshotSchedule, snapshotSource, uploadSnapshot } from './snapshots.ts';
import { readCommittedFrames, WAL_HEADER_SIZE } from './wal.ts';

export { leaderSideFiles, salvageLeaderTail } from './outbox.ts';

/** Options of `SqliteLeader.open`. */
export interface LeaderOptions {
  /** The database file. The leader owns it: the app writes through `leader.database`. */
  path: string;
  db: string;
  storage: StorageBackend;
  /** Key prefix in storage ('' for none). */
  prefix: string;
  /** This leadership's epoch: written into every changeset. */
  epoch: number;
  /** The last changeset in storage when this leadership began (seq 0 and 32 zero bytes for a new database). */
  position: { seq: number; checksum: Uint8Array; commitTimeMs?: number };
  clock?: Clock;
  /** How often committed transactions are captured and shipped (default 100 ms). */
  shipIntervalMs?: number;
  /**
   * Keep ticking while nothing changes (default true). `false` when every commit is followed by
   * `flush()` or `shipSoon()`: an idle leader then has no timer at all, and the tick runs again
   * only to retry a failed upload.
   */
  tickWhenIdle?: boolean;
  codec?: ChangesetCodec;
  /**
   * Captures of at least this many unshipped bytes (default 4 MiB; Infinity: never) are shipped
   * uncompressed when compressing a sample of them saves less than a third: a writer producing
   * that much between ships would otherwise leave shipping further behind with every round, and
   * such data (random, already compressed) gains little from it.
   */
  lightCaptureBytes?: number;
  /**
   * Captures of at least this many WAL bytes are read, encoded and compressed on the process's
   * capture worker thread, off the application's (default 256 KiB; Infinity: never).
   */
  workerCaptureBytes?: number;
  /** Checkpoint once this many WAL bytes were shipped since the last checkpoint (default 4 MiB). */
  checkpointEveryBytes?: number;
  /**
   * Past this `-wal` size the leader sets aside what is unshipped and has SQLite start the WAL over;
   * the file is then cut back to this size at the next commit (default 64 MiB).
   */
  walTruncateBytes?: number;
  /**
   * Before a restart of the WAL, unshipped WAL beyond this many bytes is first set aside into an outbox
   * segment on the capture worker, so the synchronous step copies only the rest (default 4 MiB).
   */
  setAsideBytes?: number;
  /**
   * Take a snapshot after this many changesets (default 1000) or changeset bytes (default 256 MiB,
   * or the database file's size when that is larger) since the last.
   */
  snapshotEveryChangesets?: number;
  snapshotEveryBytes?: number;
  /**
   * Changesets in storage since the newest snapshot when this leadership began, so frequent
   * failovers still lead to snapshots (default 0). A function is asked when the connections first
   * open: a takeover that is never used asks storage nothing.
   */
  changesetsSinceSnapshot?: number | (() => Promise<number>);
  /** Page size of a new database (ignored for an existing one). */
  pageSize?: number;
  /** Wall-clock source for commit times (point-in-time restore only). */
  wallClockMs?: () => number;
  /**
   * The write gate, asked right before each upload: false means this node may no longer make
   * anything durable (its lease lapsed), so the changeset stays local.
   */
  canShip?: () => boolean;
  onEvent?: (event: LeaderEvent) => void;
  /** Page cache of the writer connection in KiB (SQLite's `cache_size`); default SQLite's. */
  pageCacheKiB?: number;
  /** Called whenever the connections open: at open, and on waking from hibernation. */
  onOpen?: () => void;
  /**
   * Start hibernated when taking over a copy with nothing to reconcile (no local state, no
   * unshipped WAL, no outbox): the files are switched to WAL mode by the first use instead. A node
   * taking over thousands of mostly idle databases then does no file work for them at all.
   */
  openOnFirstUse?: boolean;
  /**
   * Share of elapsed time the self-check may take (default 0.01; 0: never). After a flush, the
   * leader hashes its file as of the last changeset shipped and compares it with the database
   * checksum that changeset records; the next check waits until its cost is this share of the
   * time since. Flushes wait while it runs, so a due check waits (up to a minute) for a moment
   * when no flush is queued behind it. A mismatch stops the leader (see the `diverged` event).
   */
  selfCheckBudget?: number;
}

/** What a leader reports: changesets shipped, failures, fencing, snapshots. */
export type LeaderEvent =
  | { type: 'shipped'; seq: number; bytes: number; pages: number }
  | { type: 'ship-failed'; seq: number; error: unknown }
  | { type: 'fenced'; seq: number }
  | { type: 'snapshot'; seq: number; bytes: number }
  | { type: 'snapshot-failed'; error: unknown }
  /** After a flush shipped (and resolved): the next flush tries again. */
  | { type: 'checkpoint-failed'; error: unknown }
  | { type: 'wal-restarted' }
  | { type: 'parked'; tail: ParkedTail }
  /** Its file is not what it shipped: it stopped leading (flushes fail with this error). */
  | { type: 'diverged'; error: DatabaseDivergedError }
  /**
   * A setting of the app's connection the replicator depends on was found changed (by SQL that
   * got past the statement gate, or code using {@link SqliteLeader.database} directly) and was
   * set back before the capture.
   */
  | { type: 'setting-reset'; pragma: string; expected: string; actual: string };

/**
 * The leader side of SQLite replication. The app writes through `database` (WAL mode, automatic
 * checkpoints off); every tick the committed frames added to the `-wal` file since the last capture
 * become one checksummed changeset, written once to `{prefix}/{db}/log/{seq}`. The leader is the
 * only checkpointer, and a checkpoint copies into the file only frames storage holds (see
 * {@link Checkpointer}). To start the WAL over, the frames storage lacks go to local outbox segments first.
 */
export class SqliteLeader {
  /**
   * The app's, the checkpointer's and the pin's: all closed while hibernated. The pin holds a read
   * transaction while a flush ships: SQLite cannot checkpoint frames past its snapshot, so the
   * flush's checkpoint copies into the file only frames already in storage.
   */
  readonly #connections: LeaderConnections;
  readonly #options: LeaderOptions;
  /**
   * A backfill ran while its changeset was uploading and the upload failed: the file may hold
   * frames storage lacks, and only the pin stops SQLite from restarting the WAL over them. It stays
   * until a flush ships them.
   */
  #pinGuardsUnshipped = false;
  /** Hibernation stopped the ship ticks: waking restarts them. */
  #ticksStoppedByHibernation = false;
  readonly #clock: Clock;
  readonly #walPath: string;
  /** The last changeset shipped, and how far the WAL is covered; saved beside the database. */
  readonly #local: LocalState;
  /** Outbox segments holding pages storage lacks, set aside before WAL restarts, oldest first. */
  readonly #outbox: Outbox;
  #queue: Promise<unknown> = Promise.resolve();
  #queued = 0;
  #timer: TimerId | undefined;
  #tick: (() => void) | undefined;
  /** A tick is scheduled or running. */
  #tickArmed = false;
  #soonTimer: TimerId | undefined;
  #waitingFlush: Promise<Position> | null = null;
  /** Why this leader stopped: another took over, or its file diverged from what it shipped. */
  #fenced: FencedError | DatabaseDivergedError | null = null;
  #closed = false;
  readonly #snapshots: SnapshotSchedule;
  #lastWalSignature = '';
  /** The only one that copies WAL frames into the database file: shipped or set-aside ones. */
  readonly #checkpointer: Checkpointer;
  readonly #uploads = new Set<Promise<unknown>>();
  /** Captures and ships changesets; the fencing decision is there. */
  readonly #shipper: Shipper;
  /** Compares the file with what was shipped after a flush. */
  readonly #selfCheck: SelfCheck;

  /**
   * What the leader's parts ask of it, one object per leader with its methods on the prototype
   * (thousands of idle leaders: a context of closures per part adds up).
   */
  static readonly #Parts = class implements ConnectionOptions, CheckpointerParts, ShipperParts {
    readonly #leader: SqliteLeader;

    constructor(leader: SqliteLeader) {
      this.#leader = leader;
    }

    get path() {
      return this.#leader.#options.path;
    }
    get pageSize() {
      return this.#leader.#options.pageSize;
    }
    get pageCacheKiB() {
      return this.#leader.#options.pageCacheKiB;
    }
    get walTruncateBytes() {
      return this.#leader.#options.walTruncateBytes ?? WAL_TRUNCATE_BYTES;
    }
    get connections() {
      return this.#leader.#connections;
    }
    get local() {
      return this.#leader.#local;
    }
    get outbox() {
      return this.#leader.#outbox;
    }
    onSettingReset(reset: { pragma: string; expected: string; actual: string }) {
      this.#leader.#options.onEvent?.({ type: 'setting-reset', ...reset });
    }
    shipSoon() {
      this.#leader.shipSoon();
    }
    closed() {
      return this.#leader.#closed;
    }
    fence(error: FencedError) {
      this.#leader.#fenced = error;
    }
    shipped(captured: Capture) {
      this.#leader.#shipped(captured);
    }
  };

  private constructor(options: LeaderOptions, state: LeaderState | null, openNow: boolean) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#walPath = walPath(options.path);
    const parts = new SqliteLeader.#Parts(this);
    this.#connections = new LeaderConnections(parts);
    if (openNow) this.#connections.open();
    this.#local = new LocalState(options.path, options.db, {
      position: state
        ? { epoch: options.epoch, seq: state.seq, checksum: Buffer.from(state.checksum, 'hex') }
        : { epoch: options.epoch, ...options.position },
      commitTimeMs: state?.commitTimeMs ?? options.position.commitTimeMs ?? 0,
      cursor: state?.cursor ?? null,
    });
    this.#outbox = new Outbox(options.path, options.db, this.#local.position);
    this.#checkpointer = new Checkpointer(options, parts);
    this.#shipper = new Shipper(options, parts);
    this.#selfCheck = new SelfCheck(options, this.#clock, parts);
    this.#snapshots = new SnapshotSchedule(options);
    if (openNow) this.#opened();
  }

  /** The connections opened: at open, or at first use, or on waking from hibernation. */
  #opened(): void {
    this.#snapshots.opened();
    this.#options.onOpen?.();
  }

  /** The app's connection: writes go through it. Reopened by the first use after hibernation. */
  get database(): Database.Database {
    return this.#connections.app ?? this.#wake();
  }

  /** The checkpointer connection, waking the leader first when hibernated. */
  get #checkpointDb(): Database.Database {
    if (this.#connections.app === null) this.#wake();
    return this.#connections.checkpointer;
  }

  /** True while the connections are closed (see {@link hibernate}). */
  get hibernated(): boolean {
    return this.#connections.app === null;
  }

  /**
   * Opened on first use and never used: the file is still the follower copy it took over, and
   * nothing beside it belongs to this leadership.
   */
  get neverOpened(): boolean {
    return !this.#local.saved;
  }

  /**
   * Closes the connections when everything committed is in storage: SQLite then checkpoints and
   * removes the WAL. The next use of {@link database} reopens them in the same epoch, at the same
   * position. False, with nothing closed, when that is not safe: commits not shipped yet, a flush
   * or an upload under way, an open transaction.
   */
  hibernate(): boolean {
    const database = this.#connections.app;
    if (database === null) return true;
    if (this.#closed || this.#fenced || database.inTransaction) return false;
    if (this.#queued > 0 || this.#uploads.size > 0 || this.#soonTimer !== undefined) return false;
    if (!this.#outbox.empty || readCommittedFrames(this.#walPath, this.#local.durableCursor))
      return false;
    this.#ticksStoppedByHibernation = this.#timer !== undefined;
    this.#clearTimers();
    this.#connections.release();
    // The cursor stays: a WAL recreated on wake has new salts and is read from its start.
    this.#checkpointer.reset();
    return true;
  }

  #wake(): Database.Database {
    if (this.#closed) throw new ClosedError(`the leader of ${this.#options.db}`);
    const database = this.#connections.open();
    if (!this.#local.saved) {
      try {
        this.#local.save(null);
      } catch (error) {
        this.#connections.release();
        throw error;
      }
    }
    this.#lastWalSignature = '';
    if (this.#ticksStoppedByHibernation) {
      this.#ticksStoppedByHibernation = false;
      this.start();
    }
    this.#opened();
    return database;
  }

  /**
   * Opens the database as leader. A leader restarting on its own file resumes from its local
   * state, after checking with storage whether its last upload landed.
   */
  static async open(options: LeaderOptions): Promise<SqliteLeader> {
    if (!Number.isSafeInteger(options.epoch) || options.epoch < 1) {
      throw new InvalidArgumentError(`epoch must be a positive integer, got ${options.epoch}`);
    }
    removeLeftoverTempFilesOnce(options.path);
    const state = await resolveLocalState(options);
    const openNow =
      options.openOnFirstUse !== true ||
      state !== null ||
      options.position.seq === 0 ||
      fs.existsSync(walPath(options.path)) ||
      outboxSegmentsOf(options.path).length > 0;
    const leader = new SqliteLeader(options, state, openNow);
    if (!openNow) return leader;
    try {
      if (!state) await leader.#adoptLocalFile();
      leader.#local.save(null);
    } catch (error) {
      leader.#connections.close();
      throw error;
    }
    return leader;
  }

  /**
   * Starting without local state: frames in the WAL were never shipped by this leadership. A new
   * database (seq 0) adopts the file as it is, with a snapshot at seq 0; past seq 0 such frames
   * would fork the log, so the file must come from storage instead.
   */
  async #adoptLocalFile(): Promise<void> {
    const unshipped = readCommittedFrames(this.#walPath, null);
    if (this.#local.position.seq > 0) {
      if (unshipped) {
        throw new InvalidArgumentError(
          `${this.#walPath} holds commits this leader never shipped; restore ${this.#options.path} from storage first`,
        );
      }
      return;
    }
    if (unshipped) this.#checkpointDb.pragma('wal_checkpoint(TRUNCATE)');
    if (fileSize(this.#options.path) > 0) await this.snapshot();
  }

  get position(): Position {
    return { ...this.#local.position };
  }

  /** Ships on an interval until closed; a tick where the `-wal` file did not change costs one stat. */
  start(): void {
    // Connections closed (opened on first use): nothing to ship until then; waking starts ticks.
    if (this.#connections.app === null) {
      this.#ticksStoppedByHibernation = true;
      return;
    }
    const tick = () => {
      this.#timer = undefined;
      if (this.#closed || this.#fenced) return;
      // A failed upload leaves frames unshipped: retry them even if the WAL is unchanged.
      if (!this.#walChangedSinceLastTick() && !this.#shipper.failed && this.#outbox.empty) {
        if (this.#options.tickWhenIdle === false) this.#tickArmed = false;
        else this.#schedule(tick);
        return;
      }
      const startedAt = this.#clock.now();
      // The interval runs from the start of a flush: one that took longer is followed at once.
      this.flush().then(
        () => this.#schedule(tick, this.#clock.now() - startedAt),
        () => this.#schedule(tick),
      );
    };
    this.#tick = tick;
    this.#tickArmed = true;
    this.#schedule(tick);
  }

  /** Restarts a tick that went to sleep while idle: an upload failed and must be retried. */
  #wakeTick(): void {
    if (!this.#tick || this.#tickArmed || this.#closed || this.#fenced) return;
    this.#tickArmed = true;
    this.#schedule(this.#tick);
  }

  /**
   * The highest sequence that can hold a commit made now: the next changeset, or the one after
   * when a capture is already under way (it may have read the WAL before this commit).
   */
  get commitSeqBound(): number {
    return this.#local.position.seq + (this.#queued > 0 ? 2 : 1);
  }

  /** Ships within `delayMs`, coalescing calls: the leader's answer to "something was committed". */
  shipSoon(delayMs = 0): void {
    if (this.#soonTimer !== undefined || this.#closed || this.#fenced) return;
    this.#soonTimer = this.#clock.setTimeout(() => {
      this.#soonTimer = undefined;
      this.flush().catch(() => {});
    }, delayMs);
  }

  /**
   * Captures what is committed now and resolves once it is durable in storage. Callers arriving
   * while a flush waits its turn join it (its capture has not run yet, so it covers their
   * commits too): concurrent writers share one upload. A checkpoint may follow; it runs before
   * the next flush, not before this one resolves.
   */
  flush(): Promise<Position> {
    if (this.#waitingFlush !== null) return this.#waitingFlush;
    let shipped: (position: Position) => void = () => {};
    let failed: (error: unknown) => void = () => {};
    const flush = new Promise<Position>((resolve, reject) => {
      shipped = resolve;
      failed = reject;
    });
    const run = this.#serial(async () => {
      if (this.#waitingFlush === flush) this.#waitingFlush = null;
      // Before the capture reads the WAL: every frame the pin's snapshot holds gets shipped.
      const pinned = this.#checkpointer.mayBeDue() && this.#connections.pin();
      let backfill: Promise<boolean> | null = null;
      try {
        await this.#shipper.shipUnshipped(undefined, (captured) => {
          if (pinned) backfill = this.#checkpointer.backfillWhileUploading(captured.walBytes);
        });
      } catch (error) {
        if (backfill !== null && (await backfill)) this.#pinGuardsUnshipped = true;
        if (!this.#pinGuardsUnshipped) this.#connections.unpin();
        failed(error);
        return;
      }
      this.#pinGuardsUnshipped = false;
      // Durable now: the caller need not wait for the checkpoint, which still runs before the
      // next flush.
      shipped(this.position);
      try {
        await this.#checkpointer.run(pinned, backfill);
      } catch (error) {
        this.#options.onEvent?.({ type: 'checkpoint-failed', error });
      } finally {
        this.#connections.unpin();
      }
      await this.#checkShippedState();
    });
    // Rejects only when the flush could not start (fenced, closed).
    run.catch(failed);
    this.#waitingFlush = flush;
    const forget = () => {
      if (this.#waitingFlush === flush) this.#waitingFlush = null;
    };
    flush.then(forget, () => {
      forget();
      this.#wakeTick();
    });
    return flush;
  }

  /** Resolves once what is committed is shipped and no upload (an automatic snapshot) is under way. */
  async settled(): Promise<void> {
    await this.flush();
    while (this.#uploads.size > 0) await Promise.all(this.#uploads);
  }

  /**
   * Ships what is committed, then stores a full image of the database at that position. Shipping
   * goes on during the upload; only checkpoints wait, so the database file stays as it was read.
   */
  snapshot(): Promise<SnapshotManifest> {
    const upload = this.#serial(async () => {
      const overlay = readCommittedFrames(this.#walPath, null);
      // Ships exactly up to the overlay's last commit, so the image and its position agree.
      await this.#shipper.shipUnshipped(overlay?.cursor.offset ?? WAL_HEADER_SIZE);
      this.#checkpointer.hold();
      this.#snapshots.taken();
      return snapshotSource(
        this.#options.path,
        overlay,
        () =>
          this.#local.durableCursor?.pageSize ??
          (this.database.pragma('page_size', { simple: true }) as number),
        this.position,
        this.#local.commitTimeMs,
      );
    }).then(async (source) => {
      try {
        const manifest = await uploadSnapshot(this.#options, source);
        const { seq } = source.position;
        this.#options.onEvent?.({ type: 'snapshot', seq, bytes: manifest.rawBytes });
        return manifest;
      } finally {
        this.#checkpointer.release();
      }
    });
    const tracked = upload.catch(() => {});
    this.#uploads.add(tracked);
    void tracked.then(() => this.#uploads.delete(tracked));
    return upload;
  }

  /**
   * Stops at once without shipping: what storage lacks is written to a side file in `parkDir`
   * (a changeset following the last shipped one) and reported, never merged or dropped.
   */
  async abandon(parkDir: string): Promise<ParkedTail | null> {
    if (this.#closed) return null;
    this.#closed = true;
    this.#clearTimers();
    await this.#queue.catch(() => {});
    await Promise.all(this.#uploads);
    let tail: ParkedTail | null = null;
    try {
      const unshipped = collectUnshipped(this.#shipper.unshippedSource());
      if (unshipped) {
        tail = parkTail(parkDir, this.#options.db, this.#local.position, unshipped);
        this.#options.onEvent?.({ type: 'parked', tail });
      }
    } finally {
      this.#connections.close();
    }
    return tail;
  }

  /** Flushes, stops shipping and closes every connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      if (!this.#fenced) {
        await this.flush();
        // What was committed during that flush.
        await this.#serial(() => this.#shipper.shipUnshipped());
      }
    } finally {
      this.#closed = true;
      this.#clearTimers();
      await this.#queue.catch(() => {});
      await Promise.all(this.#uploads);
      // Closing lets SQLite backfill and drop the WAL: whatever is still unshipped (a failed
      // upload, a commit made while closing) goes to the outbox first. Closed connections
      // (hibernated, or never opened) have nothing unshipped and no state to update.
      if (!this.#fenced && this.#connections.app !== null) {
        this.#checkpointer.setAsideUnshipped();
        this.#local.save(null);
      }
      this.#connections.close();
    }
  }

  #clearTimers(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    if (this.#soonTimer !== undefined) this.#clock.clearTimeout(this.#soonTimer);
    this.#timer = undefined;
    this.#soonTimer = undefined;
  }

  #walChangedSinceLastTick(): boolean {
    let signature: string;
    try {
      const stat = fs.statSync(this.#walPath, { bigint: true });
      signature = `${stat.ino}:${stat.size}:${stat.mtimeNs}`;
    } catch {
      signature = 'missing';
    }
    const changed = signature !== this.#lastWalSignature;
    this.#lastWalSignature = signature;
    return changed;
  }

  #schedule(fn: () => void, elapsedMs = 0): void {
    if (this.#closed || this.#fenced) return;
    const delay = Math.max(0, (this.#options.shipIntervalMs ?? SHIP_INTERVAL_MS) - elapsedMs);
    this.#timer = this.#clock.setTimeout(fn, delay);
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    this.#queued += 1;
    const run = this.#queue
      .then(() => {
        if (this.#fenced) throw this.#fenced;
        if (this.#closed) throw new ClosedError(`the leader of ${this.#options.db}`);
        return work();
      })
      .finally(() => {
        this.#queued -= 1;
      });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** A changeset is in storage: checkpoints and snapshots count it. */
  #shipped(captured: Capture): void {
    this.#checkpointer.shipped(captured.walBytes);
    this.#snapshots.shipped(captured.bytes.length, captured.dbBytes);
    // Not while a snapshot is uploading (it holds checkpoints): its counts started over just now.
    if (!this.#checkpointer.held && this.#snapshots.due) {
      this.#snapshots.takeAutomatic(
        () => this.snapshot(),
        (error: unknown) => this.#options.onEvent?.({ type: 'snapshot-failed', error }),
      );
    }
  }

  /** The self-check, when due: a file that is not what was shipped stops this leader. */
  async #checkShippedState(): Promise<void> {
    const error = await this.#selfCheck.run(this.#shipper.pageHashes, this.#queued > 1);
    if (error === null || this.#fenced || this.#closed) return;
    this.#fenced = error;
    this.#clearTimers();
    this.#options.onEvent?.({ type: 'diverged', error });
  }

  /** Set when the self-check found the file is not what this leader shipped. */
  get diverged(): DatabaseDivergedError | null {
    return this.#fenced instanceof DatabaseDivergedError ? this.#fenced : null;
  }
}
