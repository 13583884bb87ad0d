import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fsp from 'node:fs/promises';
import nodePath from 'node:path';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import {
  createDatabaseActor,
  type DatabaseActor,
  type DatabaseActorOptions,
} from '../actors/database.ts';
import type { NodeLeaseServices } from '../actors/node-liveness.ts';
import { transitionOf } from '../actors/transitions.ts';
import type { LeaseStore } from '../adapters/lease/types.ts';
import { doublingDelay } from '../adapters/retry.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import type {
  BatchResult,
  BeginOptions,
  DatabaseProblem,
  DatabaseStatus,
  Durability,
  ExecuteResult,
  HadbDatabase,
  ParkedTail,
  ReadOptions,
  Role,
  Row,
  SqlParams,
  Statement,
  StatementResult,
  Transaction,
  WriteOptions,
  WriteToken,
} from '../api-types.ts';
import { type Clock, sleep } from '../clock.ts';
import { TRANSACTION_LIFETIME_MS } from '../defaults.ts';
import {
  BadRequestError,
  CatchUpFailedError,
  ClosedError,
  DatabaseFailedError,
  FencedError,
  InternalError,
  NotLeaderError,
  TimeoutError,
} from '../errors.ts';
import type { NodeClient } from '../http/node-client.ts';
import {
  type CatchUpOutput,
  type DemoteReason,
  type LeaseTiming,
  type RoleEvent,
  type RoleSnapshot,
  roleOf,
} from '../machines/role.ts';
import {
  leaseEpochOf,
  leaseProblemOf,
  leaseRecordProblemOf,
  observedHolderOf,
  observedRecordOf,
  startsLeading,
} from '../machines/selectors.ts';
import { listSnapshots } from '../replication/snapshot.ts';
import { SqliteFollower } from '../replication/sqlite/follower.ts';
import { leaderSideFiles, SqliteLeader } from '../replication/sqlite/leader.ts';
import { removeFileSync } from '../replication/sqlite/local-file.ts';
import { writeEpochStart } from '../replication/sqlite/promotion.ts';
import {
  type InteractiveHooks,
  InteractiveTransaction,
  IsolatedTransaction,
  type OpenTransaction,
} from '../statements/interactive.ts';
import { readRows, runStatement } from '../statements/sql.ts';
import type { StatementRunner } from '../statements/statement-runner.ts';
import { Wakeup } from '../wait.ts';
import {
  type ForwardRequest,
  type ForwardResponse,
  PROTOCOL_VERSION,
  type TailResponse,
} from '../wire/forward.ts';
import { DurabilityGate, type DurabilitySources } from './durability-gate.ts';
import type { HandleCache } from './handle-cache.ts';
import { LeaderWrites, type LeaderWritesContext } from './leader-writes.ts';
import { LeaseRecordProblem } from './lease-record-problem.ts';
import {
  followLiveTail,
  ShippedWaiters,
  type TailFollowerContext,
  type TailLeaderContext,
} from './live-tail.ts';
import { LocalCopy, type LocalCopyContext } from './local-copy.ts';
import type { NodeTailFollower, ShipLog, TailedDatabase } from './node-tail.ts';
import { gated, Reads, type ReadsContext } from './reads.ts';
import { RequestLog } from './request-log.ts';
import type { StepLimiter } from './step-limiter.ts';
import { codeOf, StuckCopy, type StuckCopyContext } from './stuck-copy.ts';
import { WriteClient, type WriteClientContext } from './write-client.ts';
import { type IsolatedWriteHold, WriterLock, type WriterLockContext } from './writer-lock.ts';

/** What a node gives each of its databases. */
export interface NodeServices {
  nodeId: string;
  session: string;
  clock: Clock;
  storage: StorageBackend;
  leases: LeaseStore;
  prefix: string;
  dataDir: string;
  parkDir: string;
  address: string | undefined;
  timing: LeaseTiming;
  client: NodeClient;
  logger: Logger;
  shipIntervalMs: number;
  shipDelayMs: number;
  pageSize: number;
  /** Node-level leases: what this node's leaders shipped, for the node tail of its peers. */
  shipLog?: ShipLog | undefined;
  /** Node-level leases: the node tail, told whenever a copy starts following a leader node. */
  nodeTail?: NodeTailFollower | undefined;
  /** Node-level leases: this node's liveness record and the ownership records it has read. */
  nodeLeases?: NodeLeaseServices | undefined;
  /** The inspector of a database's role actor, for the databases being inspected. */
  inspect?: ((db: string) => DatabaseActorOptions['inspect']) | undefined;
  /** Closes idle databases' handles and caps how many are open (hibernation). */
  handles?: HandleCache | undefined;
  /** Page cache of each connection in KiB (`cache_size`), so the node's total stays bounded. */
  pageCacheKiB?: number | undefined;
  /** The heavy steps of role changes, a few at a time for the whole node. */
  steps?: StepLimiter | undefined;
  /** Client reads (Hrana, forwarded reads) run here, off the event loop, with a time limit. */
  runner?: StatementRunner | undefined;
}

export interface DatabaseSettings {
  durability: Durability;
  /** How long a read-your-writes read waits for replication before asking the leader. */
  readYourWritesTimeoutMs: number;
  /** How long a write keeps looking for a leader (across a failover) before giving up. */
  forwardTimeoutMs: number;
  /** An interactive transaction is rolled back this long after it began (default 60 s). */
  transactionLifetimeMs?: number | undefined;
}

/** Everything the database's parts ask of it: one object per database answers them all. */
type DatabaseBridge = WriterLockContext &
  StuckCopyContext &
  LocalCopyContext &
  ReadsContext &
  LeaderWritesContext &
  WriteClientContext &
  TailLeaderContext &
  TailFollowerContext &
  DurabilitySources;

/**
 * One database on one node: the role machine joined to its lease, its storage and its SQLite
 * copy, which is a follower file (pages applied from storage) or a leader file (WAL captured
 * into storage), switched as the role changes.
 */
export class HostedDatabase extends EventEmitter implements HadbDatabase, TailedDatabase {
  readonly name: string;
  readonly path: string;
  readonly #services: NodeServices;
  readonly #settings: DatabaseSettings;
  readonly #close: () => Promise<void>;
  /** Made on first use: most databases never log, and a child logger per database adds up. */
  #childLogger: Logger | undefined;
  #snapshot: RoleSnapshot | undefined;
  #actor: DatabaseActor | undefined;
  #leader: SqliteLeader | null = null;
  /** Epoch whose leader file is open and accepting writes. */
  #writerEpoch: number | null = null;
  /** Transitions and pulls, one at a time: they swap the files under each other. */
  #chain: Promise<unknown> = Promise.resolve();
  #lastToken: WriteToken | null = null;
  /** The newest durable sequence this node has heard of. */
  #knownSeq = 0;
  /** A leader's node tail told this copy of the database's newest position at least once. */
  #heardFromTail = false;
  /** Reads of the local copy, or of the leader when the consistency asks. */
  #readsPart: Reads | null = null;
  /** Writes on this node as leader, local or forwarded. */
  #leaderWritesPart: LeaderWrites | null = null;
  /** Writes from this node: here while it leads, otherwise forwarded to the leader. */
  #writesPart: WriteClient | null = null;
  /** Live tail requests from followers, waiting for the next shipped changeset. */
  #shippedPart: ShippedWaiters | null = null;
  readonly #roleWaiters = new Wakeup();
  readonly #closing = new AbortController();
  #closed = false;
  /** Transitions and pulls queued or running: the handles are not closed under them. */
  #serialPending = 0;
  /** One holder at a time among interactive transactions, isolated writes and commits. */
  #writerPart: WriterLock | null = null;
  /** The local SQLite copy as a follower file, and its read-only connection. */
  #copyPart: LocalCopy | null = null;
  /** Storage holds what this copy cannot apply: not served, retried with backoff. */
  #stuckCopyPart: StuckCopy | null = null;
  /** The node gave up restarting the role actor. */
  #failed: { error: DatabaseFailedError; since: number; seq: number } | null = null;
  readonly #leaseRecord = new LeaseRecordProblem();
  readonly #requests = new RequestLog();
  /** "May this write become durable": asked by the commit path and by the shipper. */
  #gatePart: DurabilityGate | null = null;
  #bridgePart: DatabaseBridge | null = null;

  constructor(
    name: string,
    services: NodeServices,
    settings: DatabaseSettings,
    close: () => Promise<void>,
  ) {
    super();
    this.#close = close;
    this.name = name;
    this.path = nodePath.join(services.dataDir, `${name}.db`);
    this.#services = services;
    this.#settings = settings;
  }

  // The parts are made on first use: most of a node's thousands of databases stay idle. They all
  // reach the database through one bridge whose methods live on its prototype: closures per part
  // and per callback cost about 5 KB per idle database.
  get #bridge(): DatabaseBridge {
    this.#bridgePart ??= new HostedDatabase.#Bridge(this);
    return this.#bridgePart;
  }

  get #writer(): WriterLock {
    this.#writerPart ??= new WriterLock(this.#bridge);
    return this.#writerPart;
  }

  get #stuckCopy(): StuckCopy {
    this.#stuckCopyPart ??= new StuckCopy(this.#bridge);
    return this.#stuckCopyPart;
  }

  get #copy(): LocalCopy {
    this.#copyPart ??= new LocalCopy(this.#bridge);
    return this.#copyPart;
  }

  get #reads(): Reads {
    this.#readsPart ??= new Reads(this.#bridge);
    return this.#readsPart;
  }

  get #leaderWrites(): LeaderWrites {
    this.#leaderWritesPart ??= new LeaderWrites(this.#bridge);
    return this.#leaderWritesPart;
  }

  get #writes(): WriteClient {
    this.#writesPart ??= new WriteClient(this.#bridge);
    return this.#writesPart;
  }

  get #shipped(): ShippedWaiters {
    this.#shippedPart ??= new ShippedWaiters(this.#bridge);
    return this.#shippedPart;
  }

  get #gate(): DurabilityGate {
    this.#gatePart ??= new DurabilityGate(this.#bridge);
    return this.#gatePart;
  }

  /** What the parts ask of their database, answered from its private state. */
  static readonly #Bridge = class implements DatabaseBridge {
    readonly #db: HostedDatabase;

    constructor(db: HostedDatabase) {
      this.#db = db;
    }

    get name() {
      return this.#db.name;
    }
    get path() {
      return this.#db.path;
    }
    get clock() {
      return this.#db.#services.clock;
    }
    get storage() {
      return this.#db.#services.storage;
    }
    get prefix() {
      return this.#db.#services.prefix;
    }
    get dataDir() {
      return this.#db.#services.dataDir;
    }
    get parkDir() {
      return this.#db.#services.parkDir;
    }
    get pageCacheKiB() {
      return this.#db.#services.pageCacheKiB;
    }
    get runner() {
      return this.#db.#services.runner;
    }
    get client() {
      return this.#db.#services.client;
    }
    get timing() {
      return this.#db.#services.timing;
    }
    get pollIntervalMs() {
      return this.#db.#services.timing.pollIntervalMs;
    }
    get address() {
      return this.#db.#services.address;
    }
    get shipDelayMs() {
      return this.#db.#services.shipDelayMs;
    }
    get shipLog() {
      return this.#db.#services.shipLog !== undefined;
    }
    get nodeLeases() {
      return this.#db.#services.nodeLeases !== undefined;
    }
    get readYourWritesTimeoutMs() {
      return this.#db.#settings.readYourWritesTimeoutMs;
    }
    get forwardTimeoutMs() {
      return this.#db.#settings.forwardTimeoutMs;
    }
    get signal() {
      return this.#db.#closing.signal;
    }
    get stuck() {
      return this.#db.#stuckCopy;
    }
    get writer() {
      return this.#db.#writer;
    }
    get requests() {
      return this.#db.#requests;
    }
    closed() {
      return this.#db.#closed;
    }
    role() {
      return this.#db.role;
    }
    logger() {
      return this.#db.#logger;
    }
    snapshot() {
      return this.#db.#snapshot;
    }
    liveness() {
      return this.#db.#services.nodeLeases?.liveness;
    }
    leader() {
      return this.#db.#leader;
    }
    writableLeader() {
      return this.#db.#writableLeader();
    }
    leading() {
      return this.#db.#writerEpoch !== null ? this.#db.#leader : null;
    }
    writerEpoch() {
      return this.#db.#writerEpoch;
    }
    mayCommit() {
      return this.#db.#canCommitNow();
    }
    dropLeader() {
      const leader = this.#db.#leader;
      this.#db.#leader = null;
      this.#db.#writerEpoch = null;
      return leader;
    }
    hasFollower() {
      return this.#db.#follower !== null;
    }
    copyStuck() {
      return this.#db.#stuckCopy.state !== null;
    }
    position() {
      return this.#db.position;
    }
    seq() {
      return this.#db.position.seq;
    }
    lastToken() {
      return this.#db.#lastToken;
    }
    observedEpoch() {
      return observedRecordOf(this.#db.#snapshot)?.epoch ?? 0;
    }
    knownAtTip(follower: SqliteFollower) {
      return this.#db.#knownAtTip(follower);
    }
    noteSeq(seq: number) {
      this.#db.#noteSeq(seq);
    }
    remember(token: WriteToken) {
      this.#db.#remember(token);
    }
    unusable() {
      return this.#db.#failed?.error ?? this.#db.#stuckCopy.state?.error;
    }
    cannotTakeOver() {
      return this.#db.#stuckCopy.state?.error ?? this.#db.#failed?.error;
    }
    localConnection() {
      return this.#db.#localConnection();
    }
    serial<T>(work: () => Promise<T>) {
      return this.#db.#serial(work);
    }
    serialPending() {
      return this.#db.#serialPending > 0;
    }
    serialChain() {
      return this.#db.#chain;
    }
    abortInteractive(reason: string) {
      return this.#db.#abortInteractive(reason);
    }
    forgetIsolated() {
      return this.#db.#forgetIsolated();
    }
    isolatedBegun() {
      this.#db.#reads.isolatedBegun();
    }
    isolatedDone() {
      this.#db.#reads.isolatedDone();
    }
    pull() {
      return this.#db.#pull();
    }
    retry() {
      return this.#db.pullFromStorage();
    }
    forward(request: ForwardRequest) {
      return this.#db.#writes.write(request);
    }
    serveRead(leader: SqliteLeader, request: ForwardRequest) {
      return this.#db.#reads.serveRead(leader, request);
    }
    writeHere(
      leader: SqliteLeader,
      request: ForwardRequest,
      deadline: number,
      remembered: boolean,
      isolated: boolean,
    ) {
      return this.#db.#leaderWrites.writeHere(leader, request, deadline, remembered, isolated);
    }
    promoted(timeoutMs: number) {
      return this.#db.#promoted(timeoutMs);
    }
    leaderAddress() {
      return this.#db.#leaderAddress();
    }
    roleChange(timeoutMs: number) {
      return this.#db.#roleChange(timeoutMs);
    }
    leaseChanged() {
      this.#db.leaseChanged();
    }
    healthChanged() {
      this.#db.#healthChanged();
    }
    touch() {
      this.#db.#touch();
    }
    reportParked(tail: ParkedTail) {
      this.#db.#reportParked(tail);
    }
    problem(error: unknown) {
      this.#db.#problem(error);
    }
  };

  get #logger(): Logger {
    this.#childLogger ??= this.#services.logger.child({ db: this.name });
    return this.#childLogger;
  }

  /** Checked before routine info lines, so they do not make the child logger for nothing. */
  #infoEnabled(): boolean {
    return this.#services.logger.isLevelEnabled?.('info') !== false;
  }

  /** The role actor; the node's supervisor calls this again after a crash. */
  createActor(): DatabaseActor {
    const services = this.#services;
    const inspect = services.inspect?.(this.name);
    const actor = createDatabaseActor({
      db: this.name,
      node: services.nodeId,
      session: `${services.session}.${randomUUID().slice(0, 8)}`,
      clock: services.clock,
      leases: services.leases,
      timing: services.timing,
      ...(services.address === undefined ? {} : { address: services.address }),
      ...(inspect ? { inspect } : {}),
      nodeLeases: services.nodeLeases,
      hooks: {
        bootstrap: () => this.#serial(() => this.#bootstrap()),
        catchUp: async (_db, intent, signal) => {
          await this.#stuckRetryDue(signal);
          return this.#serial(() => this.#catchUp(intent === 'claim'));
        },
        demote: (_db, reason) => this.#serial(() => this.#demote(reason)),
        startLeading: (_db, epoch) => this.#promote(epoch),
      },
    });
    this.#actor = actor;
    return actor;
  }

  /** Called by the node with every snapshot of the role actor. */
  onSnapshot(snapshot: RoleSnapshot): void {
    const previous = this.#snapshot;
    const followedBefore = this.followedAddress;
    this.#snapshot = snapshot;
    if (this.#leaseRecord.update(leaseRecordProblemOf(snapshot), this.#logger)) {
      this.#healthChanged();
    }
    // The leader's address comes with a lease read after the role changed, not with the role.
    const followed = this.followedAddress;
    if (followed !== null && followed !== followedBefore) this.#services.nodeTail?.reconcile(this);
    const role = roleOf(snapshot);
    const before = previous ? roleOf(previous) : null;
    if (role !== before) {
      const transition = transitionOf(
        this.name,
        this.#services.nodeId,
        previous,
        snapshot,
        Date.now(),
      );
      if (transition) this.emit('transition', transition);
      const epoch = leaseEpochOf(snapshot);
      if (this.#infoEnabled()) this.#logger.info({ role, epoch }, 'role changed');
      this.emit('role', { role, epoch });
      if (before === 'demoting' || before === 'leader') this.#wakeShippedWaiters();
      if (before === 'leader' && role !== 'leader') this.#noteShipLog(false);
      this.#roleWaiters.wake();
    } else if (
      leaderOf(previous) !== leaderOf(snapshot) ||
      startsLeading(previous) !== startsLeading(snapshot)
    ) {
      // A new leader became known, or this node's leadership became writable: waiting writes go on.
      this.#roleWaiters.wake();
    }
  }

  start(): void {
    // Under node-level leases one node tail per leader node replaces a loop per database.
    if (!this.#services.shipLog) void this.#tailLoop();
  }

  /** The leader's address while this copy follows it (node tail). */
  get followedAddress(): string | null {
    return this.following ? this.#leaderAddress() : null;
  }

  get following(): boolean {
    const role = this.role;
    return !this.#closed && (role === 'follower' || role === 'catching-up');
  }

  /** A change the leader node `from` reported: pull what is new; re-read the lease if it stopped. */
  async applyTail(change: { epoch: number; seq: number; leading: boolean }, from: string) {
    if (this.#closed) return;
    this.#noteSeq(change.seq);
    this.#heardFromTail = true;
    if (change.seq > this.position.seq && this.following) await this.#pull();
    if (!change.leading && this.#leaderAddress() === from) this.leaseChanged();
  }

  pullFromStorage(): Promise<void> {
    return this.#pull().catch((error: unknown) => this.#problem(error));
  }

  #noteShipLog(leading: boolean): void {
    const position = this.#leader?.position ?? this.position;
    this.#services.shipLog?.note(this.name, position.epoch, position.seq, leading);
  }

  get role(): Role {
    return this.#snapshot ? roleOf(this.#snapshot) : 'bootstrapping';
  }

  get position(): WriteToken {
    const position = this.#leader?.position ?? this.#follower?.position;
    return position ? { epoch: position.epoch, seq: position.seq } : { epoch: 0, seq: 0 };
  }

  /** True once this node leads the database and can commit (its epoch-start record is in). */
  get writable(): boolean {
    return this.#writerEpoch !== null;
  }

  get isCaughtUp(): boolean {
    return (
      this.#writerEpoch !== null ||
      (this.#stuckCopy.state === null &&
        this.#failed === null &&
        this.position.seq >= this.#knownSeq)
    );
  }

  /** Why this copy cannot catch up, or why its actor stopped; null when neither. */
  get problem(): DatabaseProblem | null {
    const now = this.#services.clock.now();
    if (this.#failed) {
      const { error, since, seq } = this.#failed;
      const code = codeOf(error.cause);
      return { state: 'failed', code, message: error.message, seq, since, retryInMs: null };
    }
    const stuck = this.#stuckCopy.state;
    if (stuck) {
      const { error, since, retryAt } = stuck;
      return {
        state: 'stuck',
        code: error.reason,
        message: error.message,
        seq: error.seq,
        since,
        retryInMs: Math.max(0, Math.round(retryAt - now)),
      };
    }
    return this.#leaseRecord.problem(this.position.seq);
  }

  /** What `/status` shows of this database on this node. */
  status(): DatabaseStatus {
    const record = observedRecordOf(this.#snapshot);
    const leader =
      this.#writerEpoch !== null
        ? this.#services.nodeId
        : record && !record.released
          ? record.holder
          : null;
    return {
      name: this.name,
      role: this.role,
      epoch: this.position.epoch,
      seq: this.position.seq,
      caughtUp: this.isCaughtUp,
      leader,
      leaseProblem: leaseProblemOf(this.#snapshot),
      leaderAddress:
        this.#writerEpoch !== null
          ? (this.#services.address ?? null)
          : record && !record.released
            ? (record.address ?? null)
            : null,
      hibernated: this.hibernated,
      problem: this.problem,
    };
  }

  /** An interactive transaction is open here: balancing does not move this database now. */
  get inTransaction(): boolean {
    return this.#writer.openTransactions > 0;
  }

  // ---- hibernation -----------------------------------------------------------------------------

  /** True while this copy holds no open SQLite handle or descriptor. */
  get hibernated(): boolean {
    return (
      !this.#copy.readerOpen &&
      (this.#leader?.hibernated ?? true) &&
      (this.#follower?.hibernated ?? true)
    );
  }

  /**
   * Closes the SQLite handles (the node's handle cache calls it when idle or over its cap). False
   * when the leader cannot close safely now (unshipped commits, an upload, a transaction).
   */
  hibernate(): boolean {
    if (this.#closed) return true;
    if (this.#writer.openTransactions > 0 || this.#serialPending > 0) return false;
    if (this.#reads.isolatedRunning > 0) return false;
    // A statement process's connection would outlive the leader's close (which then keeps the
    // WAL): closed first, and asked again at the next sweep.
    const runner = this.#services.runner;
    if (runner?.holds(this.path)) {
      void runner.forget(this.path);
      return false;
    }
    // Readers first: closing the follower's descriptor drops the process's locks on the file, and
    // the leader's writer closes last so it checkpoints and removes the WAL.
    this.#closeReader();
    if (this.#leader && !this.#leader.hibernate()) return false;
    this.#follower?.hibernate();
    return true;
  }

  /** A read, write or apply: keeps the handles open for another `hibernateAfterMs`. */
  #touch(): void {
    if (!this.#closed) this.#services.handles?.touch(this);
  }

  async ready(options: { writable?: boolean; timeoutMs?: number } = {}): Promise<void> {
    const clock = this.#services.clock;
    const timeoutMs = options.timeoutMs ?? this.#settings.forwardTimeoutMs;
    const deadline = clock.now() + timeoutMs;
    const writable = options.writable ?? false;
    for (;;) {
      if (this.#closed) throw new ClosedError(`database ${this.name}`);
      if (this.#writableLeader()) return;
      if (!writable && this.following && this.#leaderAddress()) return;
      const left = deadline - clock.now();
      if (left <= 0) {
        const waitedFor = writable ? 'this node leading' : 'a known leader';
        throw new TimeoutError(
          `${this.name}: waiting for ${waitedFor} (it is ${this.role})`,
          timeoutMs,
        );
      }
      // A leader's address can be learnt without a role change: look again now and then.
      await this.#roleChange(Math.min(left, 50));
    }
  }

  /** Resolves once the local copy is usable (bootstrapped), whatever the role. */
  async bootstrapped(timeoutMs: number): Promise<void> {
    const deadline = this.#services.clock.now() + timeoutMs;
    while (this.role === 'bootstrapping') {
      if (this.#failed) throw this.#failed.error;
      if (this.#closed) throw new ClosedError(`database ${this.name}`);
      const left = deadline - this.#services.clock.now();
      if (left <= 0) throw new TimeoutError(`bootstrapping ${this.name}`, timeoutMs);
      await this.#roleChange(left);
    }
  }

  // ---- writes ----------------------------------------------------------------------------------

  async execute(
    sql: string,
    params?: SqlParams,
    options: WriteOptions = {},
  ): Promise<ExecuteResult> {
    const statement: Statement = params === undefined ? { sql } : { sql, params };
    const { results, token } = await this.batch([statement], options);
    return { ...(results[0] as StatementResult), token };
  }

  async batch(statements: Statement[], options: WriteOptions = {}): Promise<BatchResult> {
    if (statements.length === 0) throw new BadRequestError('a batch needs at least one statement');
    return this.#writes.write(
      {
        v: PROTOCOL_VERSION,
        db: this.name,
        requestId: randomUUID(),
        op: 'write',
        statements,
        durability: options.durability ?? this.#settings.durability,
        bigints: options.bigints ?? false,
      },
      options.isolated ?? false,
    );
  }

  /**
   * SQL scripts (several statements each) on the leader, from any node, in one transaction:
   * `schema` runs them all; `migrate` applies the migrations past the leader's `user_version`,
   * read in that transaction, so concurrent openers never apply one twice.
   */
  async runScripts(op: 'schema' | 'migrate', scripts: readonly string[]): Promise<BatchResult> {
    if (scripts.length === 0) throw new BadRequestError(`${op} needs at least one script`);
    return this.#writes.write({
      v: PROTOCOL_VERSION,
      db: this.name,
      requestId: randomUUID(),
      op,
      statements: scripts.map((sql) => ({ sql })),
      durability: this.#settings.durability,
      bigints: false,
    });
  }

  async transaction<T>(fn: (tx: Transaction) => T, options: WriteOptions = {}): Promise<T> {
    const bigints = options.bigints ?? false;
    const deadline = this.#services.clock.now() + this.#settings.forwardTimeoutMs;
    await this.#roleSettled(deadline);
    let value: T | undefined;
    const committed = await this.#writer.withWriter(deadline, (leader) => {
      this.#touch();
      const connection = leader.database;
      const tx: Transaction = {
        execute: (sql, params) => runStatement(connection, gated(sql, params), bigints),
        all: (sql, params) => readRows(connection, gated(sql, params), bigints),
        get: (sql, params) => readRows(connection, gated(sql, params), bigints)[0],
      };
      const epoch = this.#leaderWrites.commit(leader, () => {
        value = fn(tx);
      });
      return { leader, epoch };
    });
    if (!committed) {
      throw new NotLeaderError(
        `${this.name}: transaction(fn) runs only on the leader (this node is ${this.role}); use batch() from a follower`,
      );
    }
    const { leader, epoch } = committed;
    const durableBy = this.#services.clock.now() + this.#settings.forwardTimeoutMs;
    this.#remember(
      await this.#leaderWrites.durable(
        leader,
        options.durability ?? this.#settings.durability,
        epoch,
        durableBy,
      ),
    );
    return value as T;
  }

  /** The lease store saw this database's lease change: read it now rather than at the next poll. */
  leaseChanged(): void {
    this.#services.nodeLeases?.ownership.invalidate(this.name);
    this.#sendToActor({ type: 'lease.changed' });
  }

  /** Node-level leases: what the role machine should hear when the node's own lease lapses. */
  nodeLeaseLapsed(reason: 'lost' | 'expired'): void {
    this.#sendToActor({ type: reason === 'lost' ? 'fenced' : 'lease.expired' });
  }

  /** Node-wide events reach databases that are closing too: a stopped actor hears nothing. */
  #sendToActor(event: RoleEvent): void {
    const actor = this.#actor;
    if (actor && actor.getSnapshot().status === 'active') actor.send(event);
  }

  /** The node this database's ownership record names, as last read. */
  get observedHolder(): string | null {
    return observedHolderOf(this.#snapshot);
  }

  /** Node-level leases: what was last heard of the holder changed; judge it again (from cache). */
  holderChanged(): void {
    this.#sendToActor({ type: 'lease.changed' });
  }

  handoff(): void {
    this.#actor?.send({ type: 'handoff' });
  }

  /** The leader side of a write: applies it once per request id, whoever sends it. */
  serveWrite(request: ForwardRequest): Promise<ForwardResponse> {
    return this.#leaderWrites.serveWrite(request);
  }

  // ---- interactive transactions ------------------------------------------------------------------

  begin(options: BeginOptions & { isolated: true }): Promise<IsolatedTransaction>;
  begin(options?: BeginOptions): Promise<InteractiveTransaction>;
  async begin(options: BeginOptions = {}): Promise<OpenTransaction> {
    const clock = this.#services.clock;
    const waitMs = options.waitMs ?? this.#settings.forwardTimeoutMs;
    const readOnly = options.readOnly ?? false;
    const deadline = clock.now() + waitMs;
    // Like a write: an election or a takeover still under way is waited for, and so is the writer.
    await this.#roleSettled(deadline);
    while (!readOnly && this.#writer.held) {
      if (!(await this.#writer.free(deadline))) {
        throw new TimeoutError(`${this.name}: waiting for another transaction to end`, waitMs);
      }
    }
    const leader = this.#writableLeader();
    const epoch = this.#writerEpoch;
    if (!leader || epoch === null) {
      throw new NotLeaderError(`${this.name}: this node does not lead (it is ${this.role})`);
    }
    // Hibernation: the leader's connections must be open, or closing this one (then the last)
    // would checkpoint its commit out of the WAL before the leader captured it.
    this.#touch();
    void leader.database;
    const hooks: InteractiveHooks = {
      mayCommit: () =>
        this.#leader === leader && this.#writerEpoch === epoch && this.#canCommitNow(),
      durable: async () => {
        const deadline = clock.now() + this.#settings.forwardTimeoutMs;
        const token = await this.#leaderWrites.durable(
          leader,
          this.#settings.durability,
          epoch,
          deadline,
        );
        this.#remember(token);
        return token;
      },
      ended: (ended) => {
        this.#writer.ended(ended);
      },
    };
    let tx: OpenTransaction;
    if (options.isolated) {
      tx = await this.#beginIsolated(leader, readOnly, hooks);
    } else {
      tx = new InteractiveTransaction(this.path, readOnly, hooks);
      this.#writer.opened(tx, !readOnly);
    }
    tx.expireAfter(
      options.lifetimeMs ?? this.#settings.transactionLifetimeMs ?? TRANSACTION_LIFETIME_MS,
      clock,
    );
    this.#touch();
    return tx;
  }

  /**
   * An interactive transaction in a statement process. The writer is taken before its BEGIN
   * IMMEDIATE (in-process writes never meet SQLITE_BUSY) and given back if BEGIN fails.
   */
  async #beginIsolated(
    leader: SqliteLeader,
    readOnly: boolean,
    hooks: InteractiveHooks,
  ): Promise<IsolatedTransaction> {
    const runner = this.#services.runner;
    if (!runner) throw new ClosedError('the statement processes');
    const placeholder: IsolatedWriteHold = { isolatedWrite: 'begin' };
    if (!readOnly) this.#writer.take(placeholder);
    // Transitions wait for the BEGIN, as for a read; once begun, a demotion aborts it.
    this.#reads.isolatedBegun();
    let tx: IsolatedTransaction | null = null;
    try {
      const began = await runner.begin({
        path: this.path,
        readOnly,
        pageCacheKiB: this.#services.pageCacheKiB,
        lost: (reason) => tx?.lost(reason),
      });
      tx = new IsolatedTransaction(began, readOnly, hooks);
      // Held before the placeholder is given back: no write slips in while the process holds
      // SQLite's write lock.
      this.#writer.opened(tx, !readOnly);
      // Demoted or closed while it began: it may not stay open.
      if (this.#writableLeader() !== leader) {
        await tx.abort('this node stopped leading');
        throw new NotLeaderError(`${this.name}: this node stopped leading`);
      }
      if (!began.open) tx.lost('its statement process ended');
      return tx;
    } finally {
      this.#reads.isolatedDone();
      this.#writer.release(placeholder);
    }
  }

  /**
   * Waits (until `deadline` at most) while this database has no settled role: it is still
   * bootstrapping or electing, or this node won and is still taking over. Whatever comes of it,
   * the caller then looks at the role itself.
   */
  async #roleSettled(deadline: number): Promise<void> {
    await this.ready({ timeoutMs: Math.max(0, deadline - this.#services.clock.now()) }).catch(
      (error: unknown) => {
        if (!(error instanceof TimeoutError)) throw error;
      },
    );
  }

  /**
   * Null when none was open (the caller goes on in the same turn); otherwise resolves once every
   * one has let go of the file (those in statement processes take a moment).
   */
  #abortInteractive(reason: string): Promise<unknown> | null {
    return this.#writer.abortInteractive(reason);
  }

  // ---- reads -----------------------------------------------------------------------------------

  async all(sql: string, params?: SqlParams, options: ReadOptions = {}): Promise<Row[]> {
    return (await this.query(sql, params, options)).rows;
  }

  async get(sql: string, params?: SqlParams, options: ReadOptions = {}): Promise<Row | undefined> {
    return (await this.query(sql, params, options)).rows[0];
  }

  query(
    sql: string,
    params?: SqlParams,
    options: ReadOptions = {},
  ): Promise<{ rows: Row[]; position: WriteToken }> {
    return this.#reads.query(sql, params, options);
  }

  #localConnection(): Database.Database | null {
    return this.#copy.connection();
  }

  /** Statement processes close their connections on this file (it changes mode or is replaced). */
  #forgetIsolated(): Promise<void> {
    return this.#reads.forgetIsolated();
  }

  // ---- role transitions -------------------------------------------------------------------------

  #bootstrap(): Promise<void> {
    return this.#copy.bootstrap();
  }

  #ensureFollower(): Promise<SqliteFollower> {
    return this.#copy.ensureFollower();
  }

  #catchUp(claim: boolean): Promise<CatchUpOutput> {
    return this.#copy.catchUp(claim);
  }

  /** See {@link StuckCopy.catchingUp}. */
  #catchingUp<T>(work: () => Promise<T>): Promise<T> {
    return this.#stuckCopy.catchingUp(work);
  }

  /** See {@link StuckCopy.retryDue}. */
  #stuckRetryDue(signal: AbortSignal): Promise<void> {
    return this.#stuckCopy.retryDue(signal);
  }

  #healthChanged(): void {
    const problem = this.problem;
    if (this.listenerCount('health') > 0) this.emit('health', problem);
    if (problem && this.listenerCount('problem') > 0) {
      this.emit(
        'problem',
        this.#failed?.error ?? this.#stuckCopy.state?.error ?? this.#leaseRecord.error,
      );
    }
  }

  /** The node's supervisor gave up restarting the role actor: reported, ready() refuses. */
  actorFailed(error: unknown, crashes: number): void {
    if (this.#failed || this.#closed) return;
    this.#failed = {
      error: new DatabaseFailedError(this.name, crashes, { cause: error }),
      since: Date.now(),
      seq: this.position.seq,
    };
    // Nothing renews its lease any more.
    this.#writerEpoch = null;
    void this.#abortInteractive('its actor failed');
    this.#healthChanged();
    this.#roleWaiters.wake();
  }

  /** The leader node's tail told of no changeset past what this copy holds. */
  #knownAtTip(follower: SqliteFollower): boolean {
    return this.#heardFromTail && follower.position.seq >= this.#knownSeq;
  }

  /**
   * The role machine's `startLeading`: opens the leader's file of `epoch`. A rejection ends the
   * leadership: fenced (a newer epoch is in storage) or behind storage (reported; the claim is
   * given back rather than held unwritable). Other failures are retried with backoff.
   */
  #promote(epoch: number): Promise<void> {
    return this.#serial(async () => {
      let retries = 0;
      while (this.#leads(epoch) && this.#writerEpoch !== epoch) {
        try {
          await this.#openLeader(epoch);
          return;
        } catch (error) {
          if (error instanceof FencedError) {
            this.#logger.warn({ err: error }, 'claim is stale: fenced before taking over');
            throw error;
          }
          if (error instanceof CatchUpFailedError) throw error;
          this.#problem(error);
          await sleep(this.#services.clock, doublingDelay(++retries, 50, 1000));
        }
      }
    });
  }

  /** Through the node's step limiter: thousands may be taking over at once. */
  async #openLeader(epoch: number): Promise<void> {
    const steps = this.#services.steps;
    if (!steps) return this.#openLeaderNow(epoch);
    // Led no more by its turn (demoted, closed): no epoch-start record for a stale claim.
    await steps.run(
      () => this.#openLeaderNow(epoch),
      () => this.#leads(epoch),
    );
  }

  async #openLeaderNow(epoch: number): Promise<void> {
    const { storage, prefix } = this.#services;
    const { follower, position } = await this.#catchingUp(async () => {
      const follower = await this.#ensureFollower();
      const position = await writeEpochStart({
        storage: this.#services.storage,
        prefix: this.#services.prefix,
        db: this.name,
        epoch,
        follower,
        pageSize: this.#services.pageSize,
        atTip: this.#knownAtTip(follower),
      });
      return { follower, position };
    });
    this.#noteSeq(position.seq);
    this.#closeReader();
    await this.#forgetIsolated();
    follower.close();
    this.#follower = null;
    const leader = await SqliteLeader.open({
      path: this.path,
      db: this.name,
      storage: this.#services.storage,
      prefix: this.#services.prefix,
      epoch,
      position,
      clock: this.#services.clock,
      shipIntervalMs: this.#services.shipIntervalMs,
      // Every commit here is followed by flush() or shipSoon(): no timer while idle.
      tickWhenIdle: false,
      // Thousands may be taken over at once, most of them idle: each opens with its first use.
      openOnFirstUse: true,
      // Asked at first use: most of a failed node's databases may never be.
      changesetsSinceSnapshot: async () =>
        position.seq - ((await listSnapshots(storage, prefix, this.name)).at(-1) ?? 0),
      ...(this.#services.pageCacheKiB === undefined
        ? {}
        : { pageCacheKiB: this.#services.pageCacheKiB }),
      onOpen: () => this.#touch(),
      canShip: () => this.#canShip(epoch),
      onEvent: (event) => {
        if (event.type === 'shipped') {
          this.#noteSeq(event.seq);
          this.#wakeShippedWaiters();
          this.#noteShipLog(true);
        } else if (event.type === 'parked') this.#reportParked(event.tail);
        else if (event.type === 'fenced') this.#actor?.send({ type: 'fenced' });
        else if (event.type === 'diverged') {
          // Loud: the local file holds what storage does not say. It stops leading like a fenced
          // leader, and its copy is rebuilt from storage.
          this.#logger.error({ err: event.error, epoch }, 'local file diverged from the log');
          this.#problem(event.error);
          this.#actor?.send({ type: 'fenced' });
        } else if (event.type === 'setting-reset') {
          const { pragma, expected, actual } = event;
          this.#logger.error(
            { pragma, expected, actual, epoch },
            `PRAGMA ${pragma} of the leader's connection was ${actual}, not ${expected}: set back before the capture`,
          );
          this.emit('setting-reset', { pragma, expected, actual });
        } else if (event.type === 'checkpoint-failed' || event.type === 'snapshot-failed') {
          this.#problem(event.error);
        }
      },
    });
    this.#leader = leader;
    leader.start();
    if (this.#leads(epoch)) {
      this.#writerEpoch = epoch;
      this.#noteShipLog(true);
      if (this.#infoEnabled()) this.#logger.info({ epoch, seq: position.seq }, 'leading');
      this.#roleWaiters.wake();
    }
  }

  /** After writes stopped: ship the rest when the lease still allows it, otherwise park it. */
  async #demote(reason: DemoteReason): Promise<void> {
    this.#writerEpoch = null;
    const aborting = this.#abortInteractive(`this node stopped leading (${reason})`);
    if (aborting !== null) await aborting;
    const leader = this.#leader;
    if (!leader) return;
    this.#leader = null;
    // The leader's close must be the file's last connection, so SQLite checkpoints and drops the WAL.
    this.#closeReader();
    await this.#forgetIsolated();
    const steps = this.#services.steps;
    // A lapsed node lease stops every leader of the node at once: their file work takes turns.
    // Writes stopped above; a handoff or a stop (one at a time, or the node closing) goes ahead.
    if (steps && reason !== 'handoff' && reason !== 'stop') {
      await steps.run(() => this.#stepDown(leader, reason));
    } else {
      await this.#stepDown(leader, reason);
    }
  }

  async #stepDown(leader: SqliteLeader, reason: DemoteReason): Promise<void> {
    let clean = false;
    if (reason === 'handoff' || reason === 'stop') {
      try {
        await leader.flush();
        await leader.close();
        clean = true;
      } catch (error) {
        this.#logger.warn({ err: error }, 'could not ship everything before stepping down');
      }
    }
    // A parked tail leaves the local file ahead of storage: it is rebuilt from storage.
    if (!clean) clean = (await leader.abandon(this.#services.parkDir)) === null;
    // A file that is not what it shipped is never kept as the follower copy.
    if (leader.diverged) clean = false;
    this.#wakeShippedWaiters();
    if (clean && reason === 'stop' && leader.neverOpened) {
      // The copy is as the follower left it (the epoch-start record moves only the position,
      // which its next pull catches up with): a node closing thousands writes nothing for them.
      return;
    }
    if (clean) {
      try {
        // A lapsed node steps down from all its leaderships at once: their file work goes to
        // the threadpool. A handoff or a stop keeps it on the loop, ahead of the timers waiting
        // for it (a node closing thousands of databases stops each within a timeout).
        const offLoop = reason !== 'handoff' && reason !== 'stop';
        this.#follower = await SqliteFollower.adoptLeaderFile(
          this.#followerOptions(),
          leader.position,
          { offLoop },
        );
        if (offLoop) {
          await Promise.all(
            leaderSideFiles(this.path).map((file) => fsp.rm(file, { force: true })),
          );
        } else {
          for (const file of leaderSideFiles(this.path)) removeFileSync(file);
        }
      } catch (error) {
        this.#logger.warn({ err: error }, 'rebuilding the local copy from storage');
        clean = false;
      }
    }
    if (!clean) this.#removeLocalCopy();
    if (reason === 'stop') {
      this.#follower?.close();
      this.#follower = null;
      return;
    }
    // Opened later (by the next pull or catch-up) if storage cannot be reached now.
    await this.#catchingUp(() => this.#ensureFollower()).catch((error: unknown) =>
      this.#problem(error),
    );
  }

  #canShip(epoch: number): boolean {
    return this.#gate.mayShip(epoch);
  }

  #canCommitNow(): boolean {
    return this.#gate.mayCommit();
  }

  #writableLeader(): SqliteLeader | null {
    return this.#canCommitNow() ? this.#leader : null;
  }

  #leads(epoch: number): boolean {
    return this.#gate.leads(epoch);
  }

  /** Where the current leader takes forwarded requests, from the last lease record read. */
  #leaderAddress(): string | null {
    const record = observedRecordOf(this.#snapshot);
    if (!record || record.released || record.holder === this.#services.nodeId) return null;
    return record.address ?? null;
  }

  // ---- following --------------------------------------------------------------------------------

  /** A copy stuck behind storage is reported once and retried with backoff, not raised here. */
  #pull(): Promise<void> {
    return this.#copy.pull();
  }

  /** The follower side of the live tail (one loop per database without node-level leases). */
  #tailLoop(): Promise<void> {
    return followLiveTail(this.#bridge);
  }

  /** The leader side of the live tail: answers once a sequence above `after` is durable. */
  waitForShipped(after: number): Promise<TailResponse> {
    return this.#shipped.waitForShipped(after);
  }

  #wakeShippedWaiters(): void {
    this.#shipped.wake();
  }

  /**
   * A forwarded request that finds this node claimed the database but still writing its
   * epoch-start record (many takeovers at once take turns) waits for that rather than sending
   * the sender back to the lease store. Null when it is not leading by then.
   */
  async #promoted(timeoutMs: number): Promise<SqliteLeader | null> {
    const clock = this.#services.clock;
    const deadline = clock.now() + timeoutMs;
    while (
      this.role === 'leader' &&
      (this.#writerEpoch === null || startsLeading(this.#snapshot)) &&
      clock.now() < deadline
    ) {
      await this.#roleChange(deadline - clock.now());
    }
    return this.#writableLeader();
  }

  #roleChange(timeoutMs: number): Promise<void> {
    return this.#roleWaiters.wait(this.#services.clock, timeoutMs);
  }

  // ---- files ------------------------------------------------------------------------------------

  /** The follower of the local copy (a leader's step-down hands its file over to a new one). */
  get #follower(): SqliteFollower | null {
    return this.#copy.follower;
  }

  set #follower(follower: SqliteFollower | null) {
    this.#copy.follower = follower;
  }

  #followerOptions() {
    return this.#copy.followerOptions();
  }

  #removeLocalCopy(): void {
    this.#copy.remove();
  }

  #closeReader(): void {
    this.#copy.closeReader();
  }

  #reportParked(tail: ParkedTail): void {
    this.#logger.error(
      { tail },
      `unshipped commits of epoch ${tail.epoch} after seq ${tail.afterSeq} were parked in ${tail.file}; they are not in the log`,
    );
    this.emit('parked', tail);
  }

  #problem(error: unknown): void {
    // Reported once when it began (see StuckCopy), not at every retry.
    if (error instanceof CatchUpFailedError) return;
    const problem = error instanceof Error ? error : new InternalError(String(error));
    this.#logger.warn({ err: problem }, 'background step failed');
    if (this.listenerCount('problem') > 0) this.emit('problem', problem);
  }

  #remember(token: WriteToken): void {
    if (!this.#lastToken || token.seq > this.#lastToken.seq) this.#lastToken = token;
  }

  #noteSeq(seq: number): void {
    if (seq > this.#knownSeq) this.#knownSeq = seq;
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    this.#serialPending += 1;
    // Reads running in statement processes end first: an apply or a transition changes the file.
    const run = this.#chain
      .then(() => this.#reads.isolatedReadsEnded())
      .then(work)
      .finally(() => {
        this.#serialPending -= 1;
      });
    this.#chain = run.catch(() => {});
    return run;
  }

  /** Called by the node once the role actor has stopped. */
  async closeFiles(): Promise<void> {
    if (this.#writerEpoch !== null) this.#noteShipLog(false);
    this.#closed = true;
    this.#stuckCopy.close();
    this.#closing.abort();
    this.#wakeShippedWaiters();
    this.#roleWaiters.wake();
    await this.#chain;
    // A write in a statement process (rolled back now) closes its read-write connection before
    // the leader's: the last connection to close a WAL file checkpoints it and drops the WAL.
    await this.#reads.isolatedReadsEnded();
    await this.#copy.dropLocalHandles();
    this.#services.handles?.forget(this);
  }

  /** Through the node: it stops the role actor (releasing a held lease), then the files. */
  close(): Promise<void> {
    return this.#close();
  }
}

/** Who the last lease read named as leader, and in which epoch. */
function leaderOf(snapshot: RoleSnapshot | undefined): string {
  const record = observedRecordOf(snapshot);
  return record && !record.released ? `${record.holder}@${record.epoch}` : '';
}
