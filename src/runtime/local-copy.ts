import fs from 'node:fs';
import Database from 'better-sqlite3';
import { doublingDelay } from '../adapters/retry.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import type { ParkedTail, Role } from '../api-types.ts';
import { type Clock, sleep } from '../clock.ts';
import { CatchUpFailedError } from '../errors.ts';
import type { CatchUpOutput } from '../machines/role.ts';
import { SqliteFollower } from '../replication/sqlite/follower.ts';
import {
  leaderSideFiles,
  type SqliteLeader,
  salvageLeaderTail,
} from '../replication/sqlite/leader.ts';
import { removeFileSync } from '../replication/sqlite/local-file.ts';
import { sideFiles } from '../side-files.ts';
import { isTransient, type StuckCopy } from './stuck-copy.ts';

/** What the local copy needs of its database. */
export interface LocalCopyContext {
  readonly name: string;
  /** The database file. */
  readonly path: string;
  readonly clock: Clock;
  readonly storage: StorageBackend;
  readonly prefix: string;
  readonly dataDir: string;
  /** Where unshipped commits of an ended leadership are set aside. */
  readonly parkDir: string;
  /** Page cache of the read-only connection in KiB. */
  readonly pageCacheKiB: number | undefined;
  /** Node-level leases: this node's leaders note what they shipped for their peers' node tails. */
  readonly shipLog: boolean;
  /** Node-level leases: ownership is not polled, so a newer epoch in storage means read it again. */
  readonly nodeLeases: boolean;
  readonly stuck: StuckCopy;
  closed(): boolean;
  role(): Role;
  /** The open leader file, writable or not. */
  leader(): SqliteLeader | null;
  /** Forgets the leader file (and that it is writable); returns it, to abandon. */
  dropLeader(): SqliteLeader | null;
  /** The epoch of the ownership record last read (0 when none). */
  observedEpoch(): number;
  /** The leader node's tail told of no changeset past what `follower` holds. */
  knownAtTip(follower: SqliteFollower): boolean;
  /** A durable sequence was heard of. */
  noteSeq(seq: number): void;
  /** Transitions and pulls, one at a time: they swap the files under each other. */
  serial<T>(work: () => Promise<T>): Promise<T>;
  /** Aborts the open interactive transactions; null when none was open. */
  abortInteractive(reason: string): Promise<unknown> | null;
  /** Statement processes close their connections on this file. */
  forgetIsolated(): Promise<void>;
  /** Reads the lease again now. */
  leaseChanged(): void;
  /** A read, write or apply: keeps the handles open. */
  touch(): void;
  reportParked(tail: ParkedTail): void;
  problem(error: unknown): void;
}

/**
 * The database's local SQLite copy on this node as a follower file (pages applied from storage):
 * made at bootstrap, caught up and pulled, read through a read-only connection, removed to be
 * rebuilt from storage.
 */
export class LocalCopy {
  readonly #context: LocalCopyContext;
  follower: SqliteFollower | null = null;
  /** Read-only connection for local reads, on the follower's or the leader's file (never the writer). */
  #reader: Database.Database | null = null;

  constructor(context: LocalCopyContext) {
    this.#context = context;
  }

  get readerOpen(): boolean {
    return this.#reader !== null;
  }

  async bootstrap(): Promise<void> {
    const context = this.#context;
    await this.dropLocalHandles();
    fs.mkdirSync(context.dataDir, { recursive: true });
    const leaderStateExisted = fs.existsSync(leaderSideFiles(context.path)[0] as string);
    if (leaderStateExisted) {
      // An earlier leadership on this file ended without a clean hand-back (a crash): what it
      // committed but never shipped is set aside, and the copy is rebuilt from storage.
      const tail = await salvageLeaderTail({
        path: context.path,
        db: context.name,
        storage: context.storage,
        prefix: context.prefix,
        parkDir: context.parkDir,
      });
      if (tail) context.reportParked(tail);
      this.remove();
    }
    // Storage being down is not a reason to crash: keep trying until it answers. Nor is a copy
    // that cannot catch up: that is reported, and the pulls that follow retry it.
    let retries = 0;
    for (;;) {
      try {
        const follower = await context.stuck.catchingUp(async () => {
          const opened = await this.ensureFollower();
          await opened.pull();
          return opened;
        });
        context.noteSeq(follower.position.seq);
        return;
      } catch (error) {
        if (error instanceof CatchUpFailedError && !context.closed()) return;
        if (context.closed() || !isTransient(error)) throw error;
        context.problem(error);
        await sleep(context.clock, doublingDelay(++retries, 100, 5000));
      }
    }
  }

  async ensureFollower(): Promise<SqliteFollower> {
    this.follower ??= await SqliteFollower.open(this.followerOptions());
    return this.follower;
  }

  /**
   * `claim`: a takeover waits on it, so its requests are urgent (see `urgently`). A copy the
   * leader's node tail says is at its newest position claims without asking storage: the
   * epoch-start record is written only after a pull anyway (and only into a free slot), so what
   * the tail did not tell is caught up with there. Fencing does not depend on this pull.
   */
  async catchUp(claim: boolean): Promise<CatchUpOutput> {
    const context = this.#context;
    // A copy stuck behind storage fails here, so the role machine never claims with it.
    return context.stuck.catchingUp(async () => {
      const follower = await this.ensureFollower();
      // Not for a stuck copy: only a pull tells whether it got past what it could not apply.
      if (
        claim &&
        context.stuck.state === null &&
        context.knownAtTip(follower) &&
        context.shipLog
      ) {
        return { epochFloor: follower.position.epoch };
      }
      await follower.pull({ urgent: claim });
      context.noteSeq(follower.position.seq);
      return { epochFloor: follower.position.epoch };
    });
  }

  /** A copy stuck behind storage is reported once and retried with backoff, not raised here. */
  pull(): Promise<void> {
    const context = this.#context;
    return context.serial(async () => {
      if (context.leader() || context.role() === 'bootstrapping' || context.closed()) return;
      let follower: SqliteFollower;
      try {
        follower = await context.stuck.catchingUp(async () => {
          const opened = await this.ensureFollower();
          await opened.pull();
          return opened;
        });
      } catch (error) {
        // Stuck: reported by StuckCopy.catchingUp. Closing: nobody waits for this copy any more.
        if (error instanceof CatchUpFailedError || context.closed()) return;
        throw error;
      }
      context.noteSeq(follower.position.seq);
      // A newer epoch in storage than the owner we know of: ownership moved (node-level leases).
      const known = context.observedEpoch();
      if (context.nodeLeases && follower.position.epoch > known) context.leaseChanged();
    });
  }

  /**
   * A read-only connection on the local copy. On the leader too: client SQL never runs on the
   * writer, whose settings and state the capture depends on.
   */
  connection(): Database.Database | null {
    const leader = this.#context.leader();
    if (!leader && !this.follower) return null;
    // The leader's writer opens first: it switches the file to WAL and keeps the WAL open.
    if (leader) void leader.database;
    if (!this.#reader) {
      this.#context.touch();
      this.#reader = new Database(this.#context.path, { readonly: true, fileMustExist: true });
      const cacheKiB = this.#context.pageCacheKiB;
      if (cacheKiB !== undefined) this.#reader.pragma(`cache_size = ${-cacheKiB}`);
    }
    return this.#reader;
  }

  followerOptions() {
    const context = this.#context;
    return {
      path: context.path,
      db: context.name,
      storage: context.storage,
      prefix: context.prefix,
      onEvent: (event: { type: string }) => {
        // A rebuilt copy is a new file: readers must reopen it.
        if (event.type === 'bootstrapped') {
          this.closeReader();
          void context.forgetIsolated();
        } else if (event.type === 'applied') context.touch();
      },
      onOpen: () => context.touch(),
    };
  }

  /** Removes the file and its side files: the copy is rebuilt from storage. */
  remove(): void {
    const path = this.#context.path;
    this.closeReader();
    for (const file of [path, ...sideFiles(path)]) removeFileSync(file);
    for (const file of leaderSideFiles(path)) removeFileSync(file);
  }

  closeReader(): void {
    this.#reader?.close();
    this.#reader = null;
  }

  async dropLocalHandles(): Promise<void> {
    const context = this.#context;
    const aborting = context.abortInteractive('the local copy was closed');
    if (aborting !== null) await aborting;
    this.closeReader();
    await context.forgetIsolated();
    this.follower?.close();
    this.follower = null;
    const leader = context.dropLeader();
    if (leader && (await leader.abandon(context.parkDir))) this.remove();
  }
}
