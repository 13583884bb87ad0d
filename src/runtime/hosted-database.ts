import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import nodePath from 'node:path';
import Database from 'better-sqlite3';
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
import { type Clock, sleep, type TimerId } from '../clock.ts';
import { TRANSACTION_LIFETIME_MS } from '../defaults.ts';
import { messageOf } from '../error-message.ts';
import {
  BadRequestError,
  CatchUpFailedError,
  ClosedError,
  DatabaseFailedError,
  FencedError,
  HadbError,
  type HadbErrorCode,
  InternalError,
  InvalidArgumentError,
  LeaderUnavailableError,
  NotDurableError,
  NotLeaderError,
  ResultTooLargeError,
  revivedError,
  SqlError,
  StatementRefusedError,
  StatementTimeoutError,
  TimeoutError,
  UnauthorizedError,
  withoutCode,
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
import { leaderSideFiles, SqliteLeader, salvageLeaderTail } from '../replication/sqlite/leader.ts';
import { removeFileSync } from '../replication/sqlite/local-file.ts';
import { writeEpochStart } from '../replication/sqlite/promotion.ts';
import { sideFiles } from '../side-files.ts';
import {
  type InteractiveHooks,
  InteractiveTransaction,
  IsolatedTransaction,
  type OpenTransaction,
} from '../statements/interactive.ts';
import { asSqlError, prepare, readRows, runStatement, toSqlError } from '../statements/sql.ts';
import {
  checkClientSql,
  checkClientStatements,
  type SqlContext,
} from '../statements/statement-gate.ts';
import type { StatementRunner } from '../statements/statement-runner.ts';
import { sleepUnlessAborted, Wakeup } from '../wait.ts';
import {
  decodeForwardResponse,
  decodeStored,
  decodeTailResponse,
  encodeMessage,
  FORWARD_PATH,
  type ForwardRequest,
  type ForwardResponse,
  PROTOCOL_VERSION,
  TAIL_PATH,
  type TailResponse,
} from '../wire/forward.ts';
import { DurabilityGate } from './durability-gate.ts';
import type { HandleCache } from './handle-cache.ts';
import { LeaseRecordProblem } from './lease-record-problem.ts';
import type { NodeTailFollower, ShipLog, TailedDatabase } from './node-tail.ts';
import type { StepLimiter } from './step-limiter.ts';

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

const REQUESTS_TABLE = '_hadb_requests';
/** How long a forwarded request waits for a claimed leadership to become writable here. */
const PROMOTION_WAIT_MS = 2000;
const REQUEST_RETENTION_MS = 15 * 60_000;
const TAIL_WAIT_MS = 20_000;
/** A copy stuck behind storage tries again at most this rarely (from the poll interval up). */
const STUCK_RETRY_MAX_MS = 30_000;
/** Leader connections whose request table is known to exist. */
const tablesReady = new WeakSet<Database.Database>();

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
  #follower: SqliteFollower | null = null;
  /** Read-only connection for local reads, on the follower's or the leader's file (never the writer). */
  #reader: Database.Database | null = null;
  /** Reads running in the node's statement processes: transitions and applies wait for them. */
  #isolatedReads = 0;
  readonly #isolatedReadsDone = new Set<() => void>();
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
  readonly #inflight = new Map<string, Promise<ForwardResponse>>();
  readonly #shippedWaiters = new Wakeup();
  readonly #roleWaiters = new Wakeup();
  readonly #closing = new AbortController();
  #closed = false;
  /** Transitions and pulls queued or running: the handles are not closed under them. */
  #serialPending = 0;
  #forwardedSincePrune = 0;
  #lastYield = 0;
  /**
   * The interactive transaction, or the client write in a statement process, holding the writer:
   * other writes wait for it to end.
   */
  #writerHeld: OpenTransaction | IsolatedWriteHold | null = null;
  readonly #writerWaiters = new Wakeup();
  readonly #interactive = new Set<OpenTransaction>();
  /** Storage holds what this copy cannot apply: not served, retried with backoff. */
  #stuck: { error: CatchUpFailedError; since: number; retryAt: number; delayMs: number } | null =
    null;
  #stuckTimer: TimerId | undefined;
  /** The node gave up restarting the role actor. */
  #failed: { error: DatabaseFailedError; since: number; seq: number } | null = null;
  readonly #leaseRecord = new LeaseRecordProblem();
  /** "May this write become durable": asked by the commit path and by the shipper. */
  readonly #gate = new DurabilityGate({
    snapshot: () => this.#snapshot,
    clock: { now: () => this.#services.clock.now() },
    liveness: () => this.#services.nodeLeases?.liveness,
    writerEpoch: () => this.#writerEpoch,
    closed: () => this.#closed,
  });

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
      (this.#stuck === null && this.#failed === null && this.position.seq >= this.#knownSeq)
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
    if (this.#stuck) {
      const { error, since, retryAt } = this.#stuck;
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
    return this.#interactive.size > 0;
  }

  // ---- hibernation -----------------------------------------------------------------------------

  /** True while this copy holds no open SQLite handle or descriptor. */
  get hibernated(): boolean {
    return (
      this.#reader === null &&
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
    if (this.#interactive.size > 0 || this.#serialPending > 0) return false;
    if (this.#isolatedReads > 0) return false;
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
    return this.#write(
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
    return this.#write({
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
    const committed = await this.#withWriter(deadline, (leader) => {
      this.#touch();
      const connection = leader.database;
      const tx: Transaction = {
        execute: (sql, params) => runStatement(connection, gated(sql, params), bigints),
        all: (sql, params) => readRows(connection, gated(sql, params), bigints),
        get: (sql, params) => readRows(connection, gated(sql, params), bigints)[0],
      };
      const epoch = this.#commit(leader, () => {
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
      await this.#durable(
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

  async #write(request: ForwardRequest, isolated = false): Promise<BatchResult> {
    // Refused here, before anything is sent or run; the leader checks again.
    checkClientStatements(request.statements, gateContextOf(request));
    // The clock's timers do not hold the process open; a caller awaiting this write must.
    const keepAlive = setInterval(() => {}, 60_000);
    try {
      return await this.#writeWithRetries(request, isolated);
    } finally {
      clearInterval(keepAlive);
    }
  }

  async #writeWithRetries(request: ForwardRequest, isolated: boolean): Promise<BatchResult> {
    const clock = this.#services.clock;
    const started = clock.now();
    let retries = 0;
    let lastProblem = 'no leader is known';
    // Once sent to another node, the write may have been applied there: from then on it is
    // applied here only under its request id, like any forwarded write.
    let forwarded = false;
    for (;;) {
      if (this.#closed) throw new ClosedError(`database ${this.name}`);
      const local = this.#writableLeader();
      if (local) {
        const done = await this.#writeHere(
          local,
          request,
          started + this.#settings.forwardTimeoutMs,
          forwarded,
          isolated,
        );
        if (done) {
          this.#remember(done.token);
          return done;
        }
        lastProblem = 'this node stopped leading during the write';
      } else if (this.role === 'leader') {
        lastProblem = 'this node is still taking over';
        await this.#roleChange(50);
        continue;
      } else {
        const address = this.#leaderAddress();
        if (address) {
          const { ttlMs, marginMs } = this.#services.timing;
          const left = this.#settings.forwardTimeoutMs - (clock.now() - started);
          const attemptMs = Math.max(1, Math.min(left, ttlMs + marginMs));
          forwarded = true;
          const answer = await this.#forward(address, request, attemptMs).catch(
            (error: unknown) => {
              if (error instanceof UnauthorizedError || error instanceof BadRequestError)
                throw error;
              lastProblem = messageOf(error);
              return null;
            },
          );
          if (answer?.ok) {
            this.#remember(answer.token);
            return { results: answer.results, token: answer.token };
          }
          // The caller's own errors come back as their class; the rest are retried.
          if (answer && !answer.ok && CALLER_ERRORS.has(answer.code)) {
            const sqliteCode =
              answer.code === 'SQL_ERROR' ? (answer.sqliteCode ?? 'SQLITE_ERROR') : null;
            throw revivedError(answer.code, answer.message, sqliteCode ? { sqliteCode } : {});
          }
          if (answer) lastProblem = `${answer.code}: ${answer.message}`;
          // Node-level leases are not polled: a leader that says no (or is gone) means re-read.
          if (this.#services.nodeLeases && answer?.code !== 'INTERNAL') this.leaseChanged();
        }
      }
      const waited = clock.now() - started;
      if (waited >= this.#settings.forwardTimeoutMs) {
        // No leader, and this copy cannot become one: say why.
        const stuck = this.#stuck?.error ?? this.#failed?.error;
        throw new LeaderUnavailableError(
          `${this.name}: ${lastProblem}${stuck ? `; this node cannot take over: ${stuck.message}` : ''}`,
          Math.round(waited),
          stuck ? { cause: stuck } : undefined,
        );
      }
      // A role change (this node took over, or a leader appeared) ends the wait at once.
      const delay = doublingDelay(++retries, 10, 500);
      await this.#roleChange(Math.min(delay, this.#settings.forwardTimeoutMs - waited));
    }
  }

  /**
   * A write on this node as leader. Null when it was not committed, or committed but fenced (then
   * it is parked, never in the log): either way it may run again elsewhere. Once committed it is
   * never run again here: a slow upload is waited for, and past the deadline the caller hears
   * that it may or may not become durable.
   */
  async #writeHere(
    leader: SqliteLeader,
    request: ForwardRequest,
    deadline: number,
    remembered: boolean,
    isolated = false,
  ): Promise<BatchResult | null> {
    this.#touch();
    if (request.op === 'read') {
      return this.#serveRead(leader, request).catch((error: unknown) => {
        if (error instanceof NotLeaderError) return null;
        throw error;
      });
    }
    let committed: { epoch: number; results: StatementResult[] } | null;
    const runner = isolated && request.op === 'write' ? this.#services.runner : undefined;
    try {
      committed = runner
        ? await this.#isolatedWrite(runner, leader, request, deadline, remembered)
        : await this.#withWriter(deadline, (current) =>
            current === leader ? this.#commitStatements(leader, request, remembered) : null,
          );
    } catch (error) {
      if (error instanceof NotLeaderError) return null;
      throw toSqlError(error);
    }
    if (!committed) return null;
    const { epoch, results } = committed;
    try {
      return { results, token: await this.#durable(leader, request.durability, epoch, deadline) };
    } catch (error) {
      if (error instanceof FencedError) return null;
      throw error;
    }
  }

  async #forward(
    address: string,
    request: ForwardRequest,
    timeoutMs: number,
  ): Promise<ForwardResponse> {
    const { status, body } = await this.#services.client.request(
      'POST',
      `${address}${FORWARD_PATH}`,
      encodeMessage(request),
      // A frozen leader is replaced within ttl + margin; waiting longer on it only delays the
      // retry that reaches the next one (retries are safe: the request id deduplicates).
      timeoutMs,
      this.#closing.signal,
    );
    if (status === 401) throw new UnauthorizedError(`${address} refused the cluster secret`);
    if (status === 400) throw new BadRequestError(`${address}: ${body.toString()}`);
    if (status >= 500 && status !== 503)
      return { ok: false, code: 'INTERNAL', message: body.toString() };
    return decodeForwardResponse(body);
  }

  /** The leader side of a write: applies it once per request id, whoever sends it. */
  serveWrite(request: ForwardRequest): Promise<ForwardResponse> {
    const running = this.#inflight.get(request.requestId);
    if (running !== undefined) return running;
    const answer = this.#serveWrite(request).finally(() =>
      this.#inflight.delete(request.requestId),
    );
    this.#inflight.set(request.requestId, answer);
    return answer;
  }

  async #serveWrite(request: ForwardRequest): Promise<ForwardResponse> {
    // The sender checked too, but a leader trusts no other node's judgement of client SQL.
    try {
      checkClientStatements(request.statements, gateContextOf(request));
    } catch (error) {
      if (!(error instanceof StatementRefusedError)) throw error;
      // Without the code prefix: the sender's StatementRefusedError adds it again.
      return {
        ok: false,
        code: 'STATEMENT_REFUSED',
        message: withoutCode(error),
      };
    }
    const leader = this.#writableLeader() ?? (await this.#promoted(PROMOTION_WAIT_MS));
    if (!leader) return notLeader(this.name, this.role);
    this.#touch();
    try {
      if (request.op === 'read') return { ok: true, ...(await this.#serveRead(leader, request)) };
      const deadline = this.#services.clock.now() + this.#settings.forwardTimeoutMs;
      // Client SQL from another node: in a statement process, like the reads.
      const runner = request.op === 'write' ? this.#services.runner : undefined;
      const committed = runner
        ? await this.#isolatedWrite(runner, leader, request, deadline, true)
        : await this.#withWriter(deadline, (current) =>
            current === leader ? this.#commitStatements(leader, request, true) : null,
          );
      if (!committed) return notLeader(this.name, this.role);
      const { epoch, results } = committed;
      // One attempt: the sender retries with the same request id, which finds this commit.
      const token = await this.#durable(leader, request.durability, epoch, null);
      return { ok: true, results, token };
    } catch (error) {
      const mapped = toSqlError(error);
      if (mapped instanceof SqlError) {
        return {
          ok: false,
          code: 'SQL_ERROR',
          message: mapped.message,
          sqliteCode: mapped.sqliteCode,
        };
      }
      if (mapped instanceof NotLeaderError)
        return { ok: false, code: 'NOT_LEADER', message: mapped.message };
      if (mapped instanceof FencedError)
        return { ok: false, code: 'FENCED', message: mapped.message };
      if (mapped instanceof TimeoutError)
        return { ok: false, code: 'INTERNAL', message: `${this.name}: the writer stayed held` };
      if (mapped instanceof StatementTimeoutError || mapped instanceof ResultTooLargeError)
        return {
          ok: false,
          code: mapped instanceof StatementTimeoutError ? 'STATEMENT_TIMEOUT' : 'RESULT_TOO_LARGE',
          message: withoutCode(mapped),
        };
      if (mapped instanceof InvalidArgumentError)
        // Without the code prefix: the sender's InvalidArgumentError adds it again.
        return {
          ok: false,
          code: 'INVALID_ARGUMENT',
          message: withoutCode(mapped),
        };
      this.#logger.warn({ err: mapped }, 'write failed');
      return { ok: false, code: 'INTERNAL', message: (mapped as Error).message };
    }
  }

  /**
   * Runs `work` in one transaction that commits only while this node may commit (checked at
   * the end, so a long statement cannot outlive the lease), then waits as the durability asks.
   */
  /**
   * The request's statements in one committed transaction. `remembered`: applied once per request
   * id, whoever asks (an earlier answer recorded in the database is returned instead).
   */
  #commitStatements(
    leader: SqliteLeader,
    request: ForwardRequest,
    remembered: boolean,
  ): { epoch: number; results: StatementResult[] } {
    let results: StatementResult[] = [];
    const epoch = this.#commit(leader, () => {
      const prior = remembered ? this.#priorAnswer(leader.database, request.requestId) : null;
      if (prior) {
        results = prior;
        return;
      }
      results = applyWrite(leader.database, request);
      if (remembered) this.#rememberRequest(leader.database, request.requestId, results);
    });
    // Only once committed: a rolled-back transaction takes the new table with it.
    if (remembered) tablesReady.add(leader.database);
    return { epoch, results };
  }

  /**
   * A client write in a statement process: it runs the statements in its own BEGIN IMMEDIATE and
   * waits, while this node holds hadb's writer (in-process writes and BEGINs wait, as for an
   * interactive transaction); the commit is then decided here as {@link #commit} decides it.
   * `remembered`: applied once per request id, as {@link #commitStatements}; then a process that
   * dies during COMMIT leaves no doubt: the id is in the file or not. Null when this node does
   * not lead.
   */
  async #isolatedWrite(
    runner: StatementRunner,
    leader: SqliteLeader,
    request: ForwardRequest,
    deadline: number,
    remembered: boolean,
  ): Promise<{ epoch: number; results: StatementResult[] } | null> {
    const waitMs = Math.max(0, deadline - this.#services.clock.now());
    // Transitions and applies first (they wait for it once it counts), then the writer.
    for (;;) {
      while (this.#serialPending > 0) await this.#chain;
      if (!this.#writerHeld) break;
      if (!(await this.#writerFree(deadline))) {
        throw new TimeoutError(
          `${this.name}: waiting for an interactive transaction to end`,
          waitMs,
        );
      }
    }
    const epoch = this.#writerEpoch;
    if (this.#writableLeader() !== leader || epoch === null) return null;
    const hold: IsolatedWriteHold = { isolatedWrite: request.requestId };
    this.#writerHeld = hold;
    // Transitions and hibernation wait for it, as for a read: the leader's connection stays open
    // (it opens first, switching the file to WAL) and outlives the statement process's one.
    this.#isolatedReads += 1;
    this.#touch();
    void leader.database;
    try {
      const pending = await runner.write({
        path: this.path,
        statements: request.statements,
        bigints: request.bigints,
        requestId: remembered ? request.requestId : null,
        requestsTable: REQUESTS_TABLE,
        pageCacheKiB: this.#services.pageCacheKiB,
      });
      // A rollback that fails means the process died: its transaction went with it.
      if (pending.prior) {
        await pending.rollback().catch(() => {});
        return { epoch, results: decodeStored(pending.prior) as StatementResult[] };
      }
      if (this.#leader !== leader || !this.#canCommitNow() || this.#writerEpoch !== epoch) {
        await pending.rollback().catch(() => {});
        throw new NotLeaderError(`${this.name}: the lease lapsed before the commit; rolled back`);
      }
      const now = Date.now();
      this.#forwardedSincePrune += remembered ? 1 : 0;
      const prune = this.#forwardedSincePrune >= 1000;
      if (prune) this.#forwardedSincePrune = 0;
      let remember: Parameters<typeof pending.commit>[0] = null;
      try {
        if (remembered) {
          remember = {
            id: request.requestId,
            at: now,
            results: encodeMessage(pending.results),
            ...(prune ? { pruneBefore: now - REQUEST_RETENTION_MS } : {}),
          };
        }
      } catch (error) {
        // The process holds SQLite's write lock until told: never leave it waiting.
        await pending.rollback().catch(() => {});
        throw error;
      }
      try {
        await pending.commit(remember);
      } catch (error) {
        if (!(error instanceof HadbError) || error.code !== 'CLOSED') throw error;
        // The process died during COMMIT. Remembered: whether it committed is in the file, under
        // the id. Otherwise the caller hears the outcome is unknown (a CLOSED error).
        const kept = remembered ? this.#keptAnswer(leader, request.requestId) : null;
        if (!kept) throw error;
        return { epoch, results: kept };
      }
      return { epoch, results: pending.results };
    } finally {
      this.#isolatedDone();
      this.#releaseWriter(hold);
    }
  }

  /** The answer kept under `requestId`, read on the leader's connection (no table: none). */
  #keptAnswer(leader: SqliteLeader, requestId: string): StatementResult[] | null {
    const connection = leader.database;
    const table = connection
      .prepare('select 1 from sqlite_master where type = ? and name = ?')
      .get('table', REQUESTS_TABLE);
    if (!table) return null;
    const row = prepare(connection, `select results from ${REQUESTS_TABLE} where id = ?`).get(
      requestId,
    ) as { results: Buffer } | undefined;
    return row ? (decodeStored(row.results) as StatementResult[]) : null;
  }

  #commit(leader: SqliteLeader, work: () => void): number {
    const epoch = this.#writerEpoch;
    if (epoch === null) throw new NotLeaderError(`${this.name}: not the leader`);
    leader.database
      .transaction(() => {
        work();
        if (!this.#canCommitNow() || this.#writerEpoch !== epoch) {
          throw new NotLeaderError(`${this.name}: the lease lapsed before the commit; rolled back`);
        }
      })
      .immediate();
    return epoch;
  }

  /**
   * Waits as `durability` asks for what was just committed. 'replicated': until the changeset
   * holding it is in storage under `epoch`; failed uploads are retried until `deadline` (once
   * when null), then {@link NotDurableError}. A {@link FencedError} means it never will be.
   */
  async #durable(
    leader: SqliteLeader,
    durability: Durability,
    epoch: number,
    deadline: number | null,
  ): Promise<WriteToken> {
    if (durability === 'async') {
      const token = { epoch: leader.position.epoch, seq: leader.commitSeqBound };
      leader.shipSoon(this.#services.shipDelayMs);
      await this.#yieldNow();
      return token;
    }
    const clock = this.#services.clock;
    let retries = 0;
    for (;;) {
      try {
        const shipped = await leader.flush();
        // In storage; make sure it went out under the epoch it was committed in.
        if (shipped.epoch !== epoch) {
          throw new FencedError(
            shipped.seq,
            `${this.name}: shipped under epoch ${shipped.epoch}, not ${epoch}`,
          );
        }
        return { epoch: shipped.epoch, seq: shipped.seq };
      } catch (error) {
        if (error instanceof FencedError) throw error;
        const delay = doublingDelay(++retries, 20, 500);
        if (deadline === null || clock.now() + delay > deadline || this.#leader !== leader) {
          throw new NotDurableError(
            `${this.name}: committed on this leader but not confirmed in storage (${(error as Error).message}); it ships if this node keeps the lease, or is parked`,
            { cause: error },
          );
        }
        await sleep(clock, delay);
      }
    }
  }

  /**
   * Lets timers run (lease renewal, shipping) when a caller awaits writes in a tight loop: an
   * already-settled promise alone never yields to the event loop.
   */
  async #yieldNow(): Promise<void> {
    const now = this.#services.clock.now();
    if (now - this.#lastYield < 5) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#lastYield = this.#services.clock.now();
  }

  #priorAnswer(connection: Database.Database, requestId: string): StatementResult[] | null {
    this.#ensureRequestsTable(connection);
    const row = prepare(connection, `select results from ${REQUESTS_TABLE} where id = ?`).get(
      requestId,
    ) as { results: Buffer } | undefined;
    return row ? (decodeStored(row.results) as StatementResult[]) : null;
  }

  /** Kept in the database itself, so a retry that reaches the next leader is still answered once. */
  #rememberRequest(
    connection: Database.Database,
    requestId: string,
    results: StatementResult[],
  ): void {
    const now = Date.now();
    prepare(connection, `insert into ${REQUESTS_TABLE}(id, at, results) values (?, ?, ?)`).run(
      requestId,
      now,
      encodeMessage(results),
    );
    this.#forwardedSincePrune += 1;
    if (this.#forwardedSincePrune >= 1000) {
      this.#forwardedSincePrune = 0;
      connection
        .prepare(`delete from ${REQUESTS_TABLE} where at < ?`)
        .run(now - REQUEST_RETENTION_MS);
    }
  }

  #ensureRequestsTable(connection: Database.Database): void {
    if (tablesReady.has(connection)) return;
    connection.exec(
      `create table if not exists ${REQUESTS_TABLE}(id text primary key, at integer not null, results blob not null) without rowid`,
    );
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
    while (!readOnly && this.#writerHeld) {
      if (!(await this.#writerFree(deadline))) {
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
        const token = await this.#durable(leader, this.#settings.durability, epoch, deadline);
        this.#remember(token);
        return token;
      },
      ended: (ended) => {
        this.#interactive.delete(ended);
        this.#releaseWriter(ended);
      },
    };
    let tx: OpenTransaction;
    if (options.isolated) {
      tx = await this.#beginIsolated(leader, readOnly, hooks);
    } else {
      tx = new InteractiveTransaction(this.path, readOnly, hooks);
      this.#interactive.add(tx);
      if (!readOnly) this.#writerHeld = tx;
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
    if (!readOnly) this.#writerHeld = placeholder;
    // Transitions wait for the BEGIN, as for a read; once begun, a demotion aborts it.
    this.#isolatedReads += 1;
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
      this.#interactive.add(tx);
      if (!readOnly) this.#writerHeld = tx;
      // Demoted or closed while it began: it may not stay open.
      if (this.#writableLeader() !== leader) {
        await tx.abort('this node stopped leading');
        throw new NotLeaderError(`${this.name}: this node stopped leading`);
      }
      if (!began.open) tx.lost('its statement process ended');
      return tx;
    } finally {
      this.#isolatedDone();
      this.#releaseWriter(placeholder);
    }
  }

  /** Frees the writer if `holder` holds it, and wakes the writes waiting for it. */
  #releaseWriter(holder: OpenTransaction | IsolatedWriteHold): void {
    if (this.#writerHeld !== holder) return;
    this.#writerHeld = null;
    this.#writerWaiters.wake();
  }

  /** Resolves true once no interactive transaction holds the writer; false at `deadline`. */
  async #writerFree(deadline: number): Promise<boolean> {
    const clock = this.#services.clock;
    while (this.#writerHeld) {
      const left = deadline - clock.now();
      if (left <= 0 || this.#closed) return false;
      await this.#writerWaiters.wait(clock, left);
    }
    return true;
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
   * Runs `commit` on this node's writable leader once no interactive transaction holds the
   * writer, in the same turn as the last look at it: a BEGIN woken at the same time cannot take
   * the writer in between and leave the commit to meet SQLITE_BUSY. Null when this node does not
   * lead; {@link TimeoutError} when the writer stays held past `deadline`.
   */
  async #withWriter<R>(deadline: number, commit: (leader: SqliteLeader) => R): Promise<R | null> {
    const clock = this.#services.clock;
    const waitMs = Math.max(0, deadline - clock.now());
    while (this.#writerHeld) {
      if (!(await this.#writerFree(deadline))) {
        throw new TimeoutError(
          `${this.name}: waiting for an interactive transaction to end`,
          waitMs,
        );
      }
    }
    const leader = this.#writableLeader();
    return leader ? commit(leader) : null;
  }

  /**
   * Null when none was open (the caller goes on in the same turn); otherwise resolves once every
   * one has let go of the file (those in statement processes take a moment).
   */
  #abortInteractive(reason: string): Promise<unknown> | null {
    if (this.#interactive.size === 0) return null;
    return Promise.all([...this.#interactive].map((tx) => tx.abort(reason)));
  }

  // ---- reads -----------------------------------------------------------------------------------

  async all(sql: string, params?: SqlParams, options: ReadOptions = {}): Promise<Row[]> {
    return (await this.query(sql, params, options)).rows;
  }

  async get(sql: string, params?: SqlParams, options: ReadOptions = {}): Promise<Row | undefined> {
    return (await this.query(sql, params, options)).rows[0];
  }

  async query(
    sql: string,
    params?: SqlParams,
    options: ReadOptions = {},
  ): Promise<{ rows: Row[]; position: WriteToken }> {
    const statement = gated(sql, params);
    const bigints = options.bigints ?? false;
    const consistency = options.consistency ?? 'local';
    if (consistency === 'strong' && !this.#writableLeader()) {
      return this.#readOnLeader(statement, bigints);
    }
    if (consistency === 'read-your-writes') {
      const after = options.after ?? this.#lastToken;
      if (after && !(await this.#reached(after.seq, this.#settings.readYourWritesTimeoutMs))) {
        return this.#readOnLeader(statement, bigints);
      }
    }
    const runner = options.isolated ? this.#services.runner : undefined;
    if (runner) {
      const read = await this.#isolatedRead(runner, [statement], bigints);
      if (!read) return this.#readOnLeader(statement, bigints);
      return { rows: read.results[0] ?? [], position: read.position };
    }
    await this.#chain;
    // A copy stuck behind storage would answer from an ever older state.
    if (!this.#leader) {
      const unusable = this.#failed?.error ?? this.#stuck?.error;
      if (unusable) throw unusable;
    }
    this.#touch();
    const connection = this.#localConnection();
    if (!connection) return this.#readOnLeader(statement, bigints);
    return { rows: readRows(connection, statement, bigints), position: this.position };
  }

  async #readOnLeader(
    statement: Statement,
    bigints: boolean,
  ): Promise<{ rows: Row[]; position: WriteToken }> {
    const { results, token } = await this.#write({
      v: PROTOCOL_VERSION,
      db: this.name,
      requestId: randomUUID(),
      op: 'read',
      statements: [statement],
      durability: 'async',
      bigints,
    });
    return { rows: results[0]?.rows ?? [], position: token };
  }

  /**
   * A read-only connection on the local copy. On the leader too: client SQL never runs on the
   * writer, whose settings and state the capture depends on.
   */
  #localConnection(): Database.Database | null {
    if (!this.#leader && !this.#follower) return null;
    // The leader's writer opens first: it switches the file to WAL and keeps the WAL open.
    if (this.#leader) void this.#leader.database;
    if (!this.#reader) {
      this.#touch();
      this.#reader = new Database(this.path, { readonly: true, fileMustExist: true });
      const cacheKiB = this.#services.pageCacheKiB;
      if (cacheKiB !== undefined) this.#reader.pragma(`cache_size = ${-cacheKiB}`);
    }
    return this.#reader;
  }

  /** A forwarded read on the leader: in a statement process when the node has them. */
  async #serveRead(leader: SqliteLeader, request: ForwardRequest): Promise<BatchResult> {
    const runner = this.#services.runner;
    if (!runner) return readOnLeader(leader, this.#localConnection(), request);
    const read = await this.#isolatedRead(runner, request.statements, request.bigints);
    if (!read || this.#leader !== leader) throw new NotLeaderError(`${this.name}: not the leader`);
    return {
      results: read.results.map((rows) => ({ changes: 0, lastInsertRowid: 0, rows })),
      token: read.position,
    };
  }

  /**
   * The statements read in one of the node's statement processes, off the event loop. Transitions
   * and applies (which change the file under a reader) wait for it, and it waits for them. Null
   * when there is no local copy to read.
   */
  async #isolatedRead(
    runner: StatementRunner,
    statements: Statement[],
    bigints: boolean,
  ): Promise<{ results: Row[][]; position: WriteToken } | null> {
    while (this.#serialPending > 0) await this.#chain;
    if (!this.#leader) {
      const unusable = this.#failed?.error ?? this.#stuck?.error;
      if (unusable) throw unusable;
      if (!this.#follower) return null;
    }
    this.#touch();
    // The leader's writer opens first: it switches the file to WAL and keeps the WAL open.
    if (this.#leader) void this.#leader.database;
    const position = this.position;
    this.#isolatedReads += 1;
    try {
      const results = await runner.read({
        path: this.path,
        statements,
        bigints,
        pageCacheKiB: this.#services.pageCacheKiB,
      });
      return { results, position };
    } finally {
      this.#isolatedDone();
    }
  }

  /** Resolves once no read runs in a statement process (new ones wait while serial work is queued). */
  /** One read, write or BEGIN in a statement process is over: transitions may go once none is left. */
  #isolatedDone(): void {
    this.#isolatedReads -= 1;
    if (this.#isolatedReads === 0) for (const wake of [...this.#isolatedReadsDone]) wake();
  }

  async #isolatedReadsEnded(): Promise<void> {
    while (this.#isolatedReads > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#isolatedReadsDone.delete(done);
          resolve();
        };
        this.#isolatedReadsDone.add(done);
      });
    }
  }

  /** Statement processes close their connections on this file (it changes mode or is replaced). */
  async #forgetIsolated(): Promise<void> {
    await this.#services.runner?.forget(this.path);
  }

  /** Waits until this copy holds `seq`, pulling from storage; false if it did not in time. */
  async #reached(seq: number, timeoutMs: number): Promise<boolean> {
    const clock = this.#services.clock;
    const deadline = clock.now() + timeoutMs;
    while (this.position.seq < seq) {
      if (this.#writableLeader()) return true;
      if (clock.now() >= deadline) return false;
      await this.#pull().catch(() => {});
      if (this.position.seq >= seq) break;
      await sleep(clock, Math.min(10, Math.max(0, deadline - clock.now())));
    }
    return true;
  }

  // ---- role transitions -------------------------------------------------------------------------

  async #bootstrap(): Promise<void> {
    await this.#dropLocalHandles();
    fs.mkdirSync(this.#services.dataDir, { recursive: true });
    const leaderStateExisted = fs.existsSync(leaderSideFiles(this.path)[0] as string);
    if (leaderStateExisted) {
      // An earlier leadership on this file ended without a clean hand-back (a crash): what it
      // committed but never shipped is set aside, and the copy is rebuilt from storage.
      const tail = await salvageLeaderTail({
        path: this.path,
        db: this.name,
        storage: this.#services.storage,
        prefix: this.#services.prefix,
        parkDir: this.#services.parkDir,
      });
      if (tail) this.#reportParked(tail);
      this.#removeLocalCopy();
    }
    // Storage being down is not a reason to crash: keep trying until it answers. Nor is a copy
    // that cannot catch up: that is reported, and the pulls that follow retry it.
    let retries = 0;
    for (;;) {
      try {
        const follower = await this.#catchingUp(async () => {
          const opened = await this.#ensureFollower();
          await opened.pull();
          return opened;
        });
        this.#noteSeq(follower.position.seq);
        return;
      } catch (error) {
        if (error instanceof CatchUpFailedError && !this.#closed) return;
        if (this.#closed || !isTransient(error)) throw error;
        this.#problem(error);
        await sleep(this.#services.clock, doublingDelay(++retries, 100, 5000));
      }
    }
  }

  async #ensureFollower(): Promise<SqliteFollower> {
    this.#follower ??= await this.#openFollower();
    return this.#follower;
  }

  /**
   * `claim`: a takeover waits on it, so its requests are urgent (see `urgently`). A copy the
   * leader's node tail says is at its newest position claims without asking storage: the
   * epoch-start record is written only after a pull anyway (and only into a free slot), so what
   * the tail did not tell is caught up with there. Fencing does not depend on this pull.
   */
  async #catchUp(claim: boolean): Promise<CatchUpOutput> {
    // A copy stuck behind storage fails here, so the role machine never claims with it.
    return this.#catchingUp(async () => {
      const follower = await this.#ensureFollower();
      // Not for a stuck copy: only a pull tells whether it got past what it could not apply.
      if (claim && this.#stuck === null && this.#knownAtTip(follower) && this.#services.shipLog) {
        return { epochFloor: follower.position.epoch };
      }
      await follower.pull({ urgent: claim });
      this.#noteSeq(follower.position.seq);
      return { epochFloor: follower.position.epoch };
    });
  }

  /**
   * Runs a step that brings the copy up to storage. One that fails for good (not storage or a
   * lease store being unreachable) leaves the copy stuck: reported once, refused until its retry
   * is due (with backoff), cleared by the first step that succeeds.
   */
  async #catchingUp<T>(work: () => Promise<T>): Promise<T> {
    const stuck = this.#stuck;
    if (stuck && this.#services.clock.now() < stuck.retryAt) throw stuck.error;
    let result: T;
    try {
      result = await work();
    } catch (error) {
      if (
        this.#closed ||
        isTransient(error) ||
        error instanceof ClosedError ||
        error instanceof FencedError
      )
        throw error;
      throw this.#stuckOn(error);
    }
    if (this.#stuck) this.#unstuck();
    return result;
  }

  /**
   * A stuck copy's catch-up waits here for its retry (the role shows catching-up) rather than fail
   * at once and come back with every lease poll, flapping between roles until storage is repaired.
   */
  async #stuckRetryDue(signal: AbortSignal): Promise<void> {
    const clock = this.#services.clock;
    const waitMs = (this.#stuck?.retryAt ?? 0) - clock.now();
    if (waitMs > 0) {
      await sleepUnlessAborted(clock, waitMs, signal, this.#closing.signal);
    }
    signal.throwIfAborted();
    if (this.#closed) throw new ClosedError(`database ${this.name}`);
  }

  #stuckOn(cause: unknown): CatchUpFailedError {
    const { clock, timing } = this.#services;
    const now = clock.now();
    const seq = this.position.seq + 1;
    const reason = codeOf(cause);
    const previous = this.#stuck;
    const error = new CatchUpFailedError(this.name, seq, reason, { cause });
    if (previous && previous.error.seq === seq && previous.error.reason === reason) {
      const delayMs = Math.min(previous.delayMs * 2, STUCK_RETRY_MAX_MS);
      this.#stuck = { error, since: previous.since, retryAt: now + delayMs, delayMs };
      this.#scheduleStuckRetry(delayMs);
      this.#logger.debug({ seq, code: reason, retryInMs: delayMs }, 'still cannot catch up');
      return error;
    }
    const delayMs = timing.pollIntervalMs;
    this.#stuck = { error, since: Date.now(), retryAt: now + delayMs, delayMs };
    this.#scheduleStuckRetry(delayMs);
    this.#logger.warn(
      { seq, code: reason, position: this.position.seq, err: cause },
      `cannot catch up with storage: changeset ${seq} cannot be applied (${reason}); this copy is not served and is retried with backoff until storage is repaired`,
    );
    this.#healthChanged();
    return error;
  }

  /**
   * Pulls once the retry is due: a leader's tail tells of new changesets only (node-level leases
   * poll storage only for copies without a leader), so nothing else would retry a quiet database.
   */
  #scheduleStuckRetry(delayMs: number): void {
    const clock = this.#services.clock;
    if (this.#stuckTimer !== undefined) clock.clearTimeout(this.#stuckTimer);
    this.#stuckTimer = clock.setTimeout(() => {
      this.#stuckTimer = undefined;
      if (!this.#stuck || this.#closed) return;
      void this.pullFromStorage().then(() => {
        // Not tried (not following just then): come back later.
        const stuck = this.#stuck;
        if (stuck && !this.#closed && this.#stuckTimer === undefined) {
          this.#scheduleStuckRetry(stuck.delayMs);
        }
      });
    }, delayMs);
  }

  #unstuck(): void {
    const stuck = this.#stuck;
    if (!stuck) return;
    this.#stuck = null;
    if (this.#stuckTimer !== undefined) this.#services.clock.clearTimeout(this.#stuckTimer);
    this.#stuckTimer = undefined;
    this.#logger.warn(
      { seq: this.position.seq, code: stuck.error.reason, stuckSince: stuck.since },
      `caught up again past changeset ${stuck.error.seq}`,
    );
    this.#healthChanged();
  }

  #healthChanged(): void {
    const problem = this.problem;
    if (this.listenerCount('health') > 0) this.emit('health', problem);
    if (problem && this.listenerCount('problem') > 0) {
      this.emit('problem', this.#failed?.error ?? this.#stuck?.error ?? this.#leaseRecord.error);
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
    return this.#serial(async () => {
      if (this.#leader || this.role === 'bootstrapping' || this.#closed) return;
      let follower: SqliteFollower;
      try {
        follower = await this.#catchingUp(async () => {
          const opened = await this.#ensureFollower();
          await opened.pull();
          return opened;
        });
      } catch (error) {
        // Stuck: reported by #catchingUp. Closing: nobody waits for this copy any more.
        if (error instanceof CatchUpFailedError || this.#closed) return;
        throw error;
      }
      this.#noteSeq(follower.position.seq);
      // A newer epoch in storage than the owner we know of: ownership moved (node-level leases).
      const known = observedRecordOf(this.#snapshot)?.epoch ?? 0;
      if (this.#services.nodeLeases && follower.position.epoch > known) this.leaseChanged();
    });
  }

  /**
   * Learns of each new durable sequence from the leader at once (a long poll on its listener) and
   * falls back to polling storage when no leader answers. Only storage is ever applied.
   */
  async #tailLoop(): Promise<void> {
    const { clock, client, timing } = this.#services;
    const signal = this.#closing.signal;
    while (!this.#closed) {
      const address =
        this.role === 'follower' || this.role === 'catching-up' ? this.#leaderAddress() : null;
      if (address && this.#follower) {
        try {
          const after = this.position.seq;
          const { status, body } = await client.request(
            'GET',
            // `from` tells the leader where this follower is, for its cluster view.
            `${address}${TAIL_PATH}?db=${encodeURIComponent(this.name)}&after=${after}${
              this.#services.address ? `&from=${encodeURIComponent(this.#services.address)}` : ''
            }`,
            null,
            TAIL_WAIT_MS + 5000,
            signal,
          );
          if (status === 200) {
            const tail = decodeTailResponse(body);
            this.#noteSeq(tail.seq);
            if (tail.seq > this.position.seq) await this.#pull();
            if (!tail.leading) {
              this.leaseChanged();
              await sleep(clock, 20);
            } else if (this.#stuck) {
              // Behind storage: the leader would answer at once again; wait as a poll would.
              await Promise.race([
                sleep(clock, timing.pollIntervalMs),
                this.#roleChange(timing.pollIntervalMs),
              ]);
            }
            continue;
          }
        } catch (error) {
          if (this.#closed) return;
          this.#logger.debug({ err: error }, 'live tail unavailable; polling storage');
        }
      }
      if (this.role !== 'leader')
        await this.#pull().catch((error: unknown) => this.#problem(error));
      await Promise.race([
        sleep(clock, timing.pollIntervalMs),
        this.#roleChange(timing.pollIntervalMs),
      ]);
    }
  }

  /** The leader side of the live tail: answers once a sequence above `after` is durable. */
  async waitForShipped(after: number): Promise<TailResponse> {
    const clock = this.#services.clock;
    const deadline = clock.now() + TAIL_WAIT_MS;
    for (;;) {
      const leader = this.#writerEpoch !== null ? this.#leader : null;
      if (!leader) {
        return { ...this.position, leading: false };
      }
      const position = leader.position;
      const left = deadline - clock.now();
      if (position.seq > after || left <= 0) {
        return { epoch: position.epoch, seq: position.seq, leading: true };
      }
      await this.#shippedWaiters.wait(clock, left, this.#closing.signal);
      if (this.#closed) return { ...this.position, leading: false };
    }
  }

  #wakeShippedWaiters(): void {
    this.#shippedWaiters.wake();
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

  #followerOptions() {
    return {
      path: this.path,
      db: this.name,
      storage: this.#services.storage,
      prefix: this.#services.prefix,
      onEvent: (event: { type: string }) => {
        // A rebuilt copy is a new file: readers must reopen it.
        if (event.type === 'bootstrapped') {
          this.#closeReader();
          void this.#forgetIsolated();
        } else if (event.type === 'applied') this.#touch();
      },
      onOpen: () => this.#touch(),
    };
  }

  #openFollower(): Promise<SqliteFollower> {
    return SqliteFollower.open(this.#followerOptions());
  }

  #removeLocalCopy(): void {
    this.#closeReader();
    for (const file of [this.path, ...sideFiles(this.path)]) removeFileSync(file);
    for (const file of leaderSideFiles(this.path)) removeFileSync(file);
  }

  #closeReader(): void {
    this.#reader?.close();
    this.#reader = null;
  }

  async #dropLocalHandles(): Promise<void> {
    const aborting = this.#abortInteractive('the local copy was closed');
    if (aborting !== null) await aborting;
    this.#closeReader();
    await this.#forgetIsolated();
    this.#follower?.close();
    this.#follower = null;
    const leader = this.#leader;
    this.#leader = null;
    this.#writerEpoch = null;
    if (leader && (await leader.abandon(this.#services.parkDir))) this.#removeLocalCopy();
  }

  #reportParked(tail: ParkedTail): void {
    this.#logger.error(
      { tail },
      `unshipped commits of epoch ${tail.epoch} after seq ${tail.afterSeq} were parked in ${tail.file}; they are not in the log`,
    );
    this.emit('parked', tail);
  }

  #problem(error: unknown): void {
    // Reported once when it began (see #stuckOn), not at every retry.
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
      .then(() => this.#isolatedReadsEnded())
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
    if (this.#stuckTimer !== undefined) this.#services.clock.clearTimeout(this.#stuckTimer);
    this.#closing.abort();
    this.#wakeShippedWaiters();
    this.#roleWaiters.wake();
    await this.#chain;
    // A write in a statement process (rolled back now) closes its read-write connection before
    // the leader's: the last connection to close a WAL file checkpoints it and drops the WAL.
    await this.#isolatedReadsEnded();
    await this.#dropLocalHandles();
    this.#services.handles?.forget(this);
  }

  /** Through the node: it stops the role actor (releasing a held lease), then the files. */
  close(): Promise<void> {
    return this.#close();
  }
}

/** Failures that go away by themselves: the store or a peer was unreachable for a while. */
function isTransient(error: unknown): boolean {
  return (
    error instanceof HadbError &&
    (error.code === 'STORAGE_UNAVAILABLE' ||
      error.code === 'TIMEOUT' ||
      error.code === 'LEASE_STORE_UNAVAILABLE')
  );
}

/** An error's code (hadb's, or Node's such as `EIO`), for status and metrics. */
function codeOf(error: unknown): string {
  if (error instanceof HadbError) return error.code;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'ERROR';
}

/** Who the last lease read named as leader, and in which epoch. */
function leaderOf(snapshot: RoleSnapshot | undefined): string {
  const record = observedRecordOf(snapshot);
  return record && !record.released ? `${record.holder}@${record.epoch}` : '';
}

/** A forwarded read, answered from the leader's copy (its read-only connection) at its current position. */
function readOnLeader(
  leader: SqliteLeader,
  connection: Database.Database | null,
  request: ForwardRequest,
): BatchResult {
  if (!connection) throw new NotLeaderError(`${request.db}: no local copy to read`);
  const results = request.statements.map((statement) => ({
    changes: 0,
    lastInsertRowid: 0,
    rows: readRows(connection, statement, request.bigints),
  }));
  const { epoch, seq } = leader.position;
  return { results, token: { epoch, seq } };
}

/** hadb's writer, taken by a client write running in a statement process (by its request id). */
interface IsolatedWriteHold {
  isolatedWrite: string;
}

/** What a write-like request does inside the leader's transaction. */
function applyWrite(connection: Database.Database, request: ForwardRequest): StatementResult[] {
  const scripts = request.statements.map((statement) => statement.sql);
  if (request.op === 'schema') {
    for (const script of scripts) execScript(connection, script);
    return [];
  }
  if (request.op === 'migrate') return [migrate(connection, request.db, scripts)];
  return request.statements.map((statement) =>
    runStatement(connection, statement, request.bigints),
  );
}

/**
 * The migrations past this database's `user_version`, then the new version, in the caller's
 * transaction. `changes` is how many were applied.
 */
function migrate(
  connection: Database.Database,
  db: string,
  migrations: readonly string[],
): StatementResult {
  const version = Number(connection.pragma('user_version', { simple: true }));
  if (version > migrations.length) {
    throw new InvalidArgumentError(
      `${db} is at schema version ${version}, newer than the ${migrations.length} migrations given`,
    );
  }
  for (const script of migrations.slice(version)) execScript(connection, script);
  if (version < migrations.length) connection.pragma(`user_version = ${migrations.length}`);
  return { changes: migrations.length - version, lastInsertRowid: 0 };
}

/** One script in the caller's transaction, which it must not end (its commit would skip the lease check). */
function execScript(connection: Database.Database, script: string): void {
  asSqlError(() => connection.exec(script));
  if (!connection.inTransaction) {
    throw new SqlError(
      'SQLITE_MISUSE',
      'a schema or migration script ended the transaction hadb runs it in: leave out BEGIN, COMMIT and ROLLBACK',
    );
  }
}

function statementOf(sql: string, params: SqlParams | undefined): Statement {
  return params === undefined ? { sql } : { sql, params };
}

/** A client statement that passed the statement gate. */
function gated(sql: string, params: SqlParams | undefined): Statement {
  checkClientSql(sql, 'statement');
  return statementOf(sql, params);
}

function gateContextOf(request: ForwardRequest): SqlContext {
  if (request.op === 'schema') return 'script';
  if (request.op === 'migrate') return 'migration';
  return 'statement';
}

function notLeader(db: string, role: Role): ForwardResponse {
  return {
    ok: false,
    code: 'NOT_LEADER',
    message: `this node does not lead ${db} (it is ${role})`,
  };
}

/** Forwarded error codes that are the caller's to handle, not a reason to retry elsewhere. */
const CALLER_ERRORS: ReadonlySet<HadbErrorCode> = new Set([
  'SQL_ERROR',
  'STATEMENT_REFUSED',
  'BAD_REQUEST',
  'INVALID_ARGUMENT',
  'STATEMENT_TIMEOUT',
  'RESULT_TOO_LARGE',
]);
