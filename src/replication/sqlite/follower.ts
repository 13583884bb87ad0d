import fs from 'node:fs';
import { writeFileAtomic, writeFileAtomicSync } from '../../adapters/fs-sync.ts';
import { urgently } from '../../adapters/pacing.ts';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import type { DbChecksum, Position } from '../../api-types.ts';
import {
  DatabaseDivergedError,
  InvalidArgumentError,
  LineageAheadError,
  ReplicationGapError,
} from '../../errors.ts';
import { followerStatePath, redoPath, walPath } from '../../side-files.ts';
import {
  type Changeset,
  checksumsEqual,
  decodeChangeset,
  GENESIS_CHECKSUM,
} from '../../wire/changeset.ts';
import {
  dbChecksumHex,
  hashPages,
  PageHashes,
  parseDbChecksumHex,
} from '../../wire/db-checksum.ts';
import {
  listSnapshots,
  logKey,
  logPrefix,
  readSnapshotManifest,
  restoreSnapshot,
} from '../snapshot.ts';
import { adoptAsFollowerFile, adoptAsFollowerFileAsync, PageApplier } from './apply.ts';
import { readJsonFileSync, removeFileSync, removeLeftoverTempFilesOnce } from './local-file.ts';
import { checksumAfterFromFile, hashDatabaseFile } from './page-hashes.ts';

/** Options of `SqliteFollower.open`. */
export interface FollowerOptions {
  /** The follower's copy. hadb owns it: apps open it read-only. */
  path: string;
  db: string;
  storage: StorageBackend;
  prefix: string;
  onEvent?: (event: FollowerEvent) => void;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Called whenever its file descriptor opens: at open, and on waking from hibernation. */
  onOpen?: () => void;
}

/** What a follower reports: a bootstrap from storage, changesets applied. */
export type FollowerEvent =
  | { type: 'bootstrapped'; seq: number; fromSnapshot: boolean }
  /** Changesets `fromSeq`..`seq`, applied as one. */
  | { type: 'applied'; fromSeq: number; seq: number; pages: number };

export interface PullOptions {
  /**
   * A takeover waits on this pull: its requests skip the storage pacer's rate limit, and it asks
   * storage what follows the copy with one listing (one request when there is nothing new).
   */
  urgent?: boolean;
}

interface FollowerState {
  db: string;
  epoch: number;
  seq: number;
  checksum: string;
  pageSize: number | null;
  /** Hex whole-database checksum the copy must have; absent before the log recorded one. */
  dbChecksum?: string;
}

/**
 * The follower side: a local copy rebuilt from storage (latest snapshot, then the log after it)
 * and kept current by applying each changeset in order, refusing gaps and forks.
 */
export class SqliteFollower {
  readonly #options: FollowerOptions;
  readonly #statePath: string;
  /** Null while hibernated: reopened by the next apply. */
  #applier: PageApplier | null;
  #state: FollowerState;
  /**
   * Every page's hash of the copy, only for a copy whose state records no checksum (it came from a
   * log written before checksums): built from the file by the first apply that needs it, then kept
   * up to date. A copy with a recorded checksum needs none (see {@link checksumAfterFromFile}).
   */
  #pageHashes: PageHashes | null = null;
  /** Set by a checksum mismatch: this copy is stopped, every later apply fails with it. */
  #diverged: DatabaseDivergedError | null = null;

  private constructor(options: FollowerOptions, applier: PageApplier | null, state: FollowerState) {
    this.#options = options;
    this.#statePath = followerStatePath(options.path);
    this.#applier = applier;
    this.#state = state;
  }

  /**
   * Opens the local copy: finishes an apply a crash interrupted, checks that the copy's lineage is
   * not ahead of storage, or bootstraps it from storage when there is no usable copy.
   */
  static async open(options: FollowerOptions): Promise<SqliteFollower> {
    removeLeftoverTempFilesOnce(options.path);
    let state = readState(options);
    if (state === null || !fs.existsSync(options.path)) {
      state = await bootstrap(options);
    }
    const applier = PageApplier.open(options.path);
    try {
      // A finished apply moved the file past the state's position: its checksum no longer says
      // what the file holds, and the next apply checks against the log instead.
      if (applier.recover() !== null) state = withoutDbChecksum(state);
      options.onOpen?.();
      const follower = new SqliteFollower(options, applier, state);
      await follower.#checkLineage();
      return follower;
    } catch (error) {
      applier.close();
      throw error;
    }
  }

  /**
   * Turns the file a leader just closed cleanly (everything shipped, no `-wal` left) into a
   * follower copy at `position`, without downloading it again.
   */
  static async adoptLeaderFile(
    options: FollowerOptions,
    position: Position,
    how: { offLoop?: boolean } = {},
  ): Promise<SqliteFollower> {
    if (fs.existsSync(walPath(options.path))) {
      throw new InvalidArgumentError(
        `${walPath(options.path)} still exists: the leader did not close cleanly`,
      );
    }
    // `offLoop`: a node whose lease lapsed adopts the files of all its leaders at once; its
    // event loop should keep turning meanwhile.
    const pageSize = how.offLoop
      ? await adoptAsFollowerFileAsync(options.path)
      : adoptAsFollowerFile(options.path);
    const state: FollowerState = {
      db: options.db,
      epoch: position.epoch,
      seq: position.seq,
      checksum: Buffer.from(position.checksum).toString('hex'),
      // 0 for a file shorter than a header, which a leader's file never is.
      pageSize: pageSize ?? 0,
      ...(position.dbChecksum === undefined
        ? {}
        : { dbChecksum: dbChecksumHex(position.dbChecksum) }),
    };
    if (how.offLoop) await writeFileAtomic(followerStatePath(options.path), JSON.stringify(state));
    else writeFileAtomicSync(followerStatePath(options.path), JSON.stringify(state));
    // Everything up to `position` was shipped from this very file, so its lineage is storage's:
    // no need to ask storage again. It starts hibernated (its descriptor opens with the next
    // apply): a node whose lease lapsed demotes all its leaders at once, and most stay idle.
    if (fs.existsSync(redoPath(options.path))) return SqliteFollower.open(options);
    return new SqliteFollower(options, null, state);
  }

  get position(): Position {
    const dbChecksum = parseDbChecksumHex(this.#state.dbChecksum);
    return {
      epoch: this.#state.epoch,
      seq: this.#state.seq,
      checksum: Buffer.from(this.#state.checksum, 'hex'),
      ...(dbChecksum === undefined ? {} : { dbChecksum }),
    };
  }

  /** Page size and size in pages of the copy; null while it is still empty. */
  get dimensions(): { pageSize: number; dbSizePages: number } | null {
    const { pageSize } = this.#state;
    if (pageSize === null) return null;
    const dbSizePages = Math.floor(fs.statSync(this.#options.path).size / pageSize);
    return dbSizePages > 0 ? { pageSize, dbSizePages } : null;
  }

  /**
   * Applies every changeset storage has after the current position; returns how many. A run of
   * consecutive changesets is checked link by link, then applied as one (the last version of
   * each page): one redo record and one set of fsyncs, and the result is the state the leader
   * had at the last of them.
   */
  async pull(options: PullOptions = {}): Promise<number> {
    const urgent = options.urgent === true;
    let applied = 0;
    for (;;) {
      const next = this.#state.seq + 1;
      let upTo: number | undefined;
      if (urgent) {
        // One listing says both whether there is anything new and how far it goes.
        const listed = await this.#listedAfter(this.#state.seq, true);
        if (listed.length === 0) return applied;
        if (listed[0] !== next) {
          await this.#rebootstrap(next);
          continue;
        }
        upTo = consecutiveFrom(listed);
      }
      const run = await this.#fetchRun(urgent, upTo);
      if (run.length === 0) {
        if (await this.#logResumesAfter(next, urgent)) await this.#rebootstrap(next);
        else return applied;
        continue;
      }
      this.#apply(mergeRun(run), (run[0] as Changeset).seq);
      applied += run.length;
    }
  }

  /**
   * Applies the changeset this node itself just encoded and wrote at the next sequence with
   * `putIfAbsent` (the epoch-start record of its new leadership), without reading it back from
   * storage or decoding it again. It must be the next link of the chain; false (nothing applied)
   * when it is not.
   */
  applyWritten(changeset: Changeset): boolean {
    const state = this.#state;
    const nextLink =
      changeset.db === this.#options.db &&
      changeset.seq === state.seq + 1 &&
      Buffer.from(changeset.prevChecksum).toString('hex') === state.checksum &&
      (state.pageSize === null || changeset.pageSize === state.pageSize);
    if (!nextLink) return false;
    this.#apply(changeset, changeset.seq);
    return true;
  }

  /** The copy's size in pages; null while its page size is not known. */
  #sizeInPages(): number | null {
    const { pageSize } = this.#state;
    if (pageSize === null) return null;
    return Math.floor(fs.statSync(this.#options.path).size / pageSize);
  }

  /** Sequence numbers of the log after `seq`, in order, up to a batch. */
  async #listedAfter(seq: number, urgent: boolean): Promise<number[]> {
    const { storage, prefix, db } = this.#options;
    const page = await maybeUrgently(urgent, () =>
      storage.list(logPrefix(prefix, db), {
        startAfter: logKey(prefix, db, seq),
        limit: MAX_RUN_CHANGESETS,
      }),
    );
    const base = logPrefix(prefix, db);
    const seqs: number[] = [];
    for (const { key } of page.objects) {
      const name = key.slice(base.length);
      // Only changesets: anything else in the folder is none of the chain's business.
      if (/^[0-9a-f]{16}$/.test(name)) seqs.push(Number.parseInt(name, 16));
    }
    return seqs;
  }

  /** The changesets after the current position, checked as a chain, up to a bounded batch. */
  async #fetchRun(urgent = false, upTo = Number.POSITIVE_INFINITY): Promise<Changeset[]> {
    const run: Changeset[] = [];
    let bytes = 0;
    let seq = this.#state.seq;
    let checksum: Uint8Array = Buffer.from(this.#state.checksum, 'hex');
    let pageSize = this.#state.pageSize;
    while (run.length < MAX_RUN_CHANGESETS && bytes < MAX_RUN_BYTES && seq < upTo) {
      const key = logKey(this.#options.prefix, this.#options.db, seq + 1);
      const data = await maybeUrgently(urgent, () => this.#options.storage.get(key));
      if (data === null) break;
      const expect: Parameters<typeof decodeChangeset>[1] = {
        db: this.#options.db,
        seq: seq + 1,
        prevChecksum: checksum,
      };
      if (pageSize !== null) expect.pageSize = pageSize;
      let changeset: Changeset;
      try {
        changeset = decodeChangeset(data, expect);
      } catch (error) {
        // Apply the good links first; the next pull meets the bad one again and reports it.
        if (run.length > 0) break;
        throw error;
      }
      run.push(changeset);
      bytes += data.length;
      seq = changeset.seq;
      checksum = changeset.checksum;
      pageSize = changeset.pageSize;
    }
    return run;
  }

  /** Applies one changeset, already checked to be the next link of the chain. */
  #apply(changeset: Changeset, fromSeq: number): void {
    if (this.#diverged) throw this.#diverged;
    // Before any page is written: a copy that would not end where the log says is stopped as it is.
    const checked = this.#checkDbChecksum(changeset);
    // No page and the same size (a new leader's epoch-start record): the file already is this
    // state and only the position moves, with no write and no fsync. The state file catches up
    // with the next apply; a copy reopened before that applies these records again from storage,
    // which changes nothing in the file either.
    const positionOnly =
      changeset.pages.length === 0 && this.#sizeInPages() === changeset.dbSizePages;
    if (!positionOnly) this.#openApplier().apply(changeset);
    if (checked) checked.hashes.apply(checked.update);
    const dbChecksum = changeset.dbChecksum ?? checked?.hashes.checksum;
    this.#state = {
      db: this.#options.db,
      epoch: changeset.epoch,
      seq: changeset.seq,
      checksum: Buffer.from(changeset.checksum).toString('hex'),
      pageSize: changeset.pageSize,
      ...(dbChecksum === undefined ? {} : { dbChecksum: dbChecksumHex(dbChecksum) }),
    };
    if (!positionOnly) writeFileAtomicSync(this.#statePath, JSON.stringify(this.#state));
    this.#options.onEvent?.({
      type: 'applied',
      fromSeq,
      seq: changeset.seq,
      pages: changeset.pages.length,
    });
  }

  /**
   * Checks that the copy after `changeset` has the database checksum it records. Returns the page
   * hashes and their update to commit once the pages are written; null when there is nothing to
   * check or keep (no checksum recorded yet, none built).
   *
   * @throws DatabaseDivergedError when the copy differs from its own record or would differ from
   * the changeset's; the follower stays stopped.
   */
  #checkDbChecksum(changeset: Changeset) {
    const recorded = changeset.dbChecksum;
    const pageOnly = changeset.pages.length === 0;
    if (recorded === undefined && this.#pageHashes === null) return null;
    // An epoch-start record on an idle copy: compare records, do no file work.
    if (pageOnly && this.#pageHashes === null) {
      const had = parseDbChecksumHex(this.#state.dbChecksum);
      if (had !== undefined && recorded !== undefined && had !== recorded) {
        this.#diverge(changeset.seq, recorded, had, 'the log changed the checksum without a page');
      }
      return null;
    }
    const update = hashPages(changeset.pages, changeset.dbSizePages, changeset.pageSize);
    const had = parseDbChecksumHex(this.#state.dbChecksum);
    if (this.#pageHashes === null && had !== undefined && recorded !== undefined) {
      // From the checksum the copy has: only the pages this changeset replaces are read. A page
      // changed outside hadb shows when it is replaced, as its hash leaves a sum it is not in.
      const { pageSize } = this.#state;
      const sizePages = this.#sizeInPages() ?? 0;
      const after =
        pageSize === null || sizePages === 0
          ? PageHashes.empty().checksumAfter(update)
          : checksumAfterFromFile(this.#options.path, pageSize, sizePages, had, update);
      if (after !== recorded) this.#divergeAt(changeset.seq, recorded, after);
      return null;
    }
    // No checksum recorded for the copy yet (written before it existed): every page is hashed.
    const hashes = this.#pageHashes ?? this.#hashesOfCopy();
    const after = hashes.checksumAfter(update);
    if (recorded !== undefined && after !== recorded)
      this.#divergeAt(changeset.seq, recorded, after);
    this.#pageHashes = hashes;
    return { hashes, update };
  }

  #divergeAt(seq: number, recorded: DbChecksum, after: DbChecksum): never {
    return this.#diverge(
      seq,
      recorded,
      after,
      `${this.#options.db}: the copy after changeset ${seq} would not be the database the log records (the copy or the changeset is not what the leader had)`,
    );
  }

  /** Hashes the copy as it is, and checks it against the checksum its state records. */
  #hashesOfCopy(): PageHashes {
    const { pageSize } = this.#state;
    const sizePages = this.#sizeInPages() ?? 0;
    const hashes =
      pageSize === null || sizePages === 0
        ? PageHashes.empty()
        : hashDatabaseFile(this.#options.path, pageSize, sizePages);
    const recorded = parseDbChecksumHex(this.#state.dbChecksum);
    if (recorded !== undefined && hashes.checksum !== recorded) {
      this.#diverge(
        this.#state.seq,
        recorded,
        hashes.checksum,
        `${this.#options.path} is not the copy of ${this.#options.db}#${this.#state.seq} it was: changed outside hadb`,
      );
    }
    return hashes;
  }

  #diverge(seq: number, expected: DbChecksum, actual: DbChecksum, message: string): never {
    this.#diverged = new DatabaseDivergedError(
      seq,
      dbChecksumHex(expected),
      dbChecksumHex(actual),
      message,
    );
    throw this.#diverged;
  }

  /** The mismatch that stopped this copy, if any. */
  get diverged(): DatabaseDivergedError | null {
    return this.#diverged;
  }

  close(): void {
    this.#applier?.close();
    this.#applier = null;
  }

  /**
   * Closes the file descriptor until the next apply needs it. Close read connections on the file
   * first: closing a descriptor drops every POSIX lock the process holds on the file.
   */
  hibernate(): void {
    this.close();
  }

  /** True while no descriptor of the copy is open. */
  get hibernated(): boolean {
    return this.#applier === null;
  }

  #openApplier(): PageApplier {
    if (this.#applier) return this.#applier;
    const applier = PageApplier.open(this.#options.path);
    try {
      // An apply cut short before hibernation (its redo is still there) is finished first.
      if (applier.recover() !== null) {
        this.#state = withoutDbChecksum(this.#state);
        this.#pageHashes = null;
      }
    } catch (error) {
      applier.close();
      throw error;
    }
    this.#applier = applier;
    this.#options.onOpen?.();
    return applier;
  }

  /** True when `seq` is missing but later changesets exist: the log below them was compacted. */
  async #logResumesAfter(seq: number, urgent = false): Promise<boolean> {
    const prefix = logPrefix(this.#options.prefix, this.#options.db);
    const startAfter = logKey(this.#options.prefix, this.#options.db, seq);
    const page = await maybeUrgently(urgent, () =>
      this.#options.storage.list(prefix, { startAfter, limit: 1 }),
    );
    return page.objects.length > 0;
  }

  async #rebootstrap(missing: number): Promise<void> {
    const snapshots = await listSnapshots(
      this.#options.storage,
      this.#options.prefix,
      this.#options.db,
    );
    if (!snapshots.some((seq) => seq >= missing)) {
      throw new ReplicationGapError(
        `changeset ${missing} of ${this.#options.db} is missing from storage and no snapshot covers it`,
      );
    }
    this.close();
    this.#pageHashes = null;
    this.#state = await bootstrap(this.#options);
  }

  /** A copy whose history storage does not have must not be silently replaced or extended. */
  async #checkLineage(): Promise<void> {
    const { seq, checksum } = this.#state;
    if (seq === 0) return;
    const bytes = await this.#options.storage.get(
      logKey(this.#options.prefix, this.#options.db, seq),
    );
    if (bytes !== null) {
      const stored = decodeChangeset(bytes, { db: this.#options.db, seq });
      if (!checksumsEqual(stored.checksum, Buffer.from(checksum, 'hex'))) {
        throw new LineageAheadError(
          `${this.#options.path} is at ${this.#options.db}#${seq} with a checksum storage does not have: it forked`,
        );
      }
      return;
    }
    const manifest = await readSnapshotManifest(
      this.#options.storage,
      this.#options.prefix,
      this.#options.db,
      seq,
    );
    if (manifest && manifest.checksum === checksum) return;
    const later = await this.#logResumesAfter(seq);
    if (!later) {
      throw new LineageAheadError(
        `${this.#options.path} is at ${this.#options.db}#${seq}, which storage does not have; refusing to replace it`,
      );
    }
  }
}

const MAX_RUN_CHANGESETS = 256;
const MAX_RUN_BYTES = 64 * 1024 * 1024;

function maybeUrgently<T>(urgent: boolean, start: () => Promise<T>): Promise<T> {
  return urgent ? urgently(start) : start();
}

/** The last of the consecutive sequence numbers `seqs` starts with. */
function consecutiveFrom(seqs: readonly number[]): number {
  let last = seqs[0] as number;
  for (const seq of seqs.slice(1)) {
    if (seq !== last + 1) break;
    last = seq;
  }
  return last;
}

/** Consecutive changesets as one: the last one's header with the last version of each page. */
function mergeRun(run: readonly Changeset[]): Changeset {
  const last = run.at(-1) as Changeset;
  if (run.length === 1) return last;
  const pages = new Map<number, Uint8Array>();
  for (const changeset of run) {
    for (const { pgno, data } of changeset.pages) pages.set(pgno, data);
  }
  return {
    ...last,
    pages: [...pages]
      .filter(([pgno]) => pgno <= last.dbSizePages)
      .sort(([a], [b]) => a - b)
      .map(([pgno, data]) => ({ pgno, data })),
  };
}

function withoutDbChecksum(state: FollowerState): FollowerState {
  const { dbChecksum: _, ...rest } = state;
  return rest;
}

function readState(options: FollowerOptions): FollowerState | null {
  const raw = readJsonFileSync(followerStatePath(options.path)) as FollowerState | undefined;
  return raw && raw.db === options.db ? raw : null;
}

/** Rebuilds the local copy from the latest snapshot, or empty when storage has none. */
async function bootstrap(options: FollowerOptions): Promise<FollowerState> {
  const { storage, prefix, db, path } = options;
  const snapshots = await listSnapshots(storage, prefix, db);
  const latest = snapshots.at(-1);
  const manifest =
    latest === undefined ? null : await readSnapshotManifest(storage, prefix, db, latest);
  removeFileSync(redoPath(path));
  let state: FollowerState;
  if (manifest) {
    await restoreSnapshot(
      storage,
      prefix,
      manifest,
      path,
      options.onProgress ? { onProgress: options.onProgress } : {},
    );
    adoptAsFollowerFile(path);
    state = {
      db,
      epoch: manifest.epoch,
      seq: manifest.seq,
      checksum: manifest.checksum,
      pageSize: manifest.pageSize,
      ...(manifest.dbChecksum === undefined ? {} : { dbChecksum: manifest.dbChecksum }),
    };
  } else {
    writeFileAtomicSync(path, new Uint8Array());
    state = {
      db,
      epoch: 0,
      seq: 0,
      checksum: Buffer.from(GENESIS_CHECKSUM).toString('hex'),
      pageSize: null,
    };
  }
  writeFileAtomicSync(followerStatePath(path), JSON.stringify(state));
  options.onEvent?.({ type: 'bootstrapped', seq: state.seq, fromSnapshot: manifest !== null });
  return state;
}
