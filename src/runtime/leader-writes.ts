import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { doublingDelay } from '../adapters/retry.ts';
import type { BatchResult, Durability, Role, StatementResult, WriteToken } from '../api-types.ts';
import { type Clock, sleep } from '../clock.ts';
import { messageOf } from '../error-message.ts';
import {
  FencedError,
  HadbError,
  InternalError,
  InvalidArgumentError,
  NotDurableError,
  NotLeaderError,
  SqlError,
  TimeoutError,
} from '../errors.ts';
import type { SqliteLeader } from '../replication/sqlite/leader.ts';
import { asSqlError, runStatement, toSqlError } from '../statements/sql.ts';
import { checkClientStatements } from '../statements/statement-gate.ts';
import type { StatementRunner } from '../statements/statement-runner.ts';
import {
  decodeStored,
  type ForwardRequest,
  type ForwardResponse,
  failedForwardAnswer,
} from '../wire/forward.ts';
import { REQUESTS_TABLE, type RememberedAnswer, type RequestLog } from './request-log.ts';
import { gateContextOf } from './write-client.ts';
import type { IsolatedWriteHold, WriterLock } from './writer-lock.ts';

/** How long a forwarded request waits for a claimed leadership to become writable here. */
const PROMOTION_WAIT_MS = 2000;

/** What the leader's writes need of their database. */
export interface LeaderWritesContext {
  readonly name: string;
  /** The database file, for the statement processes. */
  readonly path: string;
  readonly clock: Clock;
  readonly forwardTimeoutMs: number;
  readonly shipDelayMs: number;
  readonly pageCacheKiB: number | undefined;
  /** Client writes run here, off the event loop, when the node has statement processes. */
  readonly runner: StatementRunner | undefined;
  readonly writer: WriterLock;
  readonly requests: RequestLog;
  logger(): Logger;
  role(): Role;
  /** The open leader file, writable or not. */
  leader(): SqliteLeader | null;
  /** Epoch whose leader file is open and accepting writes. */
  writerEpoch(): number | null;
  /** This node's leader while it may commit, else null. */
  writableLeader(): SqliteLeader | null;
  /** May a commit happen now (the lease and the node's lease hold)? */
  mayCommit(): boolean;
  /** Waits (up to `timeoutMs`) for a claimed leadership to become writable. */
  promoted(timeoutMs: number): Promise<SqliteLeader | null>;
  /** A read, write or apply: keeps the handles open. */
  touch(): void;
  /** Transitions and pulls are queued or running; `serialChain` settles once they are done. */
  serialPending(): boolean;
  serialChain(): Promise<unknown>;
  /** Work in a statement process began, or ended: transitions and hibernation wait for it. */
  isolatedBegun(): void;
  isolatedDone(): void;
  /** A forwarded read on the leader. */
  serveRead(leader: SqliteLeader, request: ForwardRequest): Promise<BatchResult>;
}

/**
 * Writes on this node as leader, local or forwarded: each in one transaction that commits only
 * while this node may commit, once per request id, then as durable as asked.
 */
export class LeaderWrites {
  readonly #context: LeaderWritesContext;
  readonly #inflight = new Map<string, Promise<ForwardResponse>>();
  #lastYield = 0;

  constructor(context: LeaderWritesContext) {
    this.#context = context;
  }

  /**
   * A write on this node as leader. Null when it was not committed, or committed but fenced (then
   * it is parked, never in the log): either way it may run again elsewhere. Once committed it is
   * never run again here: a slow upload is waited for, and past the deadline the caller hears
   * that it may or may not become durable.
   */
  async writeHere(
    leader: SqliteLeader,
    request: ForwardRequest,
    deadline: number,
    remembered: boolean,
    isolated = false,
  ): Promise<BatchResult | null> {
    this.#context.touch();
    if (request.op === 'read') {
      return this.#context.serveRead(leader, request).catch((error: unknown) => {
        if (error instanceof NotLeaderError) return null;
        throw error;
      });
    }
    let committed: { epoch: number; results: StatementResult[] } | null;
    const runner = isolated && request.op === 'write' ? this.#context.runner : undefined;
    try {
      committed = runner
        ? await this.#isolatedWrite(runner, leader, request, deadline, remembered)
        : await this.#context.writer.withWriter(deadline, (current) =>
            current === leader ? this.#commitStatements(leader, request, remembered) : null,
          );
    } catch (error) {
      if (error instanceof NotLeaderError) return null;
      throw toSqlError(error);
    }
    if (!committed) return null;
    const { epoch, results } = committed;
    try {
      return { results, token: await this.durable(leader, request.durability, epoch, deadline) };
    } catch (error) {
      if (error instanceof FencedError) return null;
      throw error;
    }
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
      // Refused SQL, or a parameter that is not an SQL value: the sender's own error.
      if (!(error instanceof HadbError)) throw error;
      return failedForwardAnswer(error);
    }
    const leader =
      this.#context.writableLeader() ?? (await this.#context.promoted(PROMOTION_WAIT_MS));
    if (!leader) return notLeader(this.#context.name, this.#context.role());
    this.#context.touch();
    try {
      if (request.op === 'read')
        return { ok: true, ...(await this.#context.serveRead(leader, request)) };
      const deadline = this.#context.clock.now() + this.#context.forwardTimeoutMs;
      // Client SQL from another node: in a statement process, like the reads.
      const runner = request.op === 'write' ? this.#context.runner : undefined;
      const committed = runner
        ? await this.#isolatedWrite(runner, leader, request, deadline, true)
        : await this.#context.writer.withWriter(deadline, (current) =>
            current === leader ? this.#commitStatements(leader, request, true) : null,
          );
      if (!committed) return notLeader(this.#context.name, this.#context.role());
      const { epoch, results } = committed;
      // One attempt: the sender retries with the same request id, which finds this commit.
      const token = await this.durable(leader, request.durability, epoch, null);
      return { ok: true, results, token };
    } catch (error) {
      const mapped = toSqlError(error);
      const failed =
        mapped instanceof HadbError
          ? mapped
          : new InternalError(messageOf(mapped), { cause: mapped });
      const answer = failedForwardAnswer(failed);
      if (answer.ok === false && answer.code === 'INTERNAL')
        this.#context.logger().warn({ err: mapped }, 'write failed');
      return answer;
    }
  }

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
    const epoch = this.commit(leader, () => {
      const prior = remembered
        ? this.#context.requests.priorAnswer(leader.database, request.requestId)
        : null;
      if (prior) {
        results = prior;
        return;
      }
      results = applyWrite(leader.database, request);
      if (remembered) this.#context.requests.remember(leader.database, request.requestId, results);
    });
    if (remembered) this.#context.requests.committed(leader.database);
    return { epoch, results };
  }

  /**
   * A client write in a statement process: it runs the statements in its own BEGIN IMMEDIATE and
   * waits, while this node holds hadb's writer (in-process writes and BEGINs wait, as for an
   * interactive transaction); the commit is then decided here as {@link commit} decides it.
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
    const waitMs = Math.max(0, deadline - this.#context.clock.now());
    // Transitions and applies first (they wait for it once it counts), then the writer.
    for (;;) {
      while (this.#context.serialPending()) await this.#context.serialChain();
      if (!this.#context.writer.held) break;
      if (!(await this.#context.writer.free(deadline))) {
        throw new TimeoutError(
          `${this.#context.name}: waiting for an interactive transaction to end`,
          waitMs,
        );
      }
    }
    const epoch = this.#context.writerEpoch();
    if (this.#context.writableLeader() !== leader || epoch === null) return null;
    const hold: IsolatedWriteHold = { isolatedWrite: request.requestId };
    this.#context.writer.take(hold);
    // Transitions and hibernation wait for it, as for a read: the leader's connection stays open
    // (it opens first, switching the file to WAL) and outlives the statement process's one.
    this.#context.isolatedBegun();
    this.#context.touch();
    void leader.database;
    try {
      const pending = await runner.write({
        path: this.#context.path,
        statements: request.statements,
        bigints: request.bigints,
        requestId: remembered ? request.requestId : null,
        requestsTable: REQUESTS_TABLE,
        pageCacheKiB: this.#context.pageCacheKiB,
      });
      // A rollback that fails means the process died: its transaction went with it.
      if (pending.prior) {
        await pending.rollback().catch(() => {});
        return { epoch, results: decodeStored(pending.prior) as StatementResult[] };
      }
      if (
        this.#context.leader() !== leader ||
        !this.#context.mayCommit() ||
        this.#context.writerEpoch() !== epoch
      ) {
        await pending.rollback().catch(() => {});
        throw new NotLeaderError(
          `${this.#context.name}: the lease lapsed before the commit; rolled back`,
        );
      }
      let remember: RememberedAnswer | null = null;
      try {
        if (remembered)
          remember = this.#context.requests.answerToKeep(request.requestId, pending.results);
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
        const kept = remembered
          ? this.#context.requests.keptAnswer(leader.database, request.requestId)
          : null;
        if (!kept) throw error;
        return { epoch, results: kept };
      }
      return { epoch, results: pending.results };
    } finally {
      this.#context.isolatedDone();
      this.#context.writer.release(hold);
    }
  }

  /**
   * Runs `work` in one transaction that commits only while this node may commit (checked at
   * the end, so a long statement cannot outlive the lease), then waits as the durability asks.
   */
  commit(leader: SqliteLeader, work: () => void): number {
    const epoch = this.#context.writerEpoch();
    if (epoch === null) throw new NotLeaderError(`${this.#context.name}: not the leader`);
    leader.database
      .transaction(() => {
        work();
        if (!this.#context.mayCommit() || this.#context.writerEpoch() !== epoch) {
          throw new NotLeaderError(
            `${this.#context.name}: the lease lapsed before the commit; rolled back`,
          );
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
  async durable(
    leader: SqliteLeader,
    durability: Durability,
    epoch: number,
    deadline: number | null,
  ): Promise<WriteToken> {
    if (durability === 'async') {
      const token = { epoch: leader.position.epoch, seq: leader.commitSeqBound };
      leader.shipSoon(this.#context.shipDelayMs);
      await this.#yieldNow();
      return token;
    }
    const clock = this.#context.clock;
    let retries = 0;
    for (;;) {
      try {
        const shipped = await leader.flush();
        // In storage; make sure it went out under the epoch it was committed in.
        if (shipped.epoch !== epoch) {
          throw new FencedError(
            shipped.seq,
            `${this.#context.name}: shipped under epoch ${shipped.epoch}, not ${epoch}`,
          );
        }
        return { epoch: shipped.epoch, seq: shipped.seq };
      } catch (error) {
        if (error instanceof FencedError) throw error;
        const delay = doublingDelay(++retries, 20, 500);
        if (
          deadline === null ||
          clock.now() + delay > deadline ||
          this.#context.leader() !== leader
        ) {
          throw new NotDurableError(
            `${this.#context.name}: committed on this leader but not confirmed in storage (${(error as Error).message}); it ships if this node keeps the lease, or is parked`,
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
    const now = this.#context.clock.now();
    if (now - this.#lastYield < 5) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#lastYield = this.#context.clock.now();
  }
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

function notLeader(db: string, role: Role): ForwardResponse {
  return {
    ok: false,
    code: 'NOT_LEADER',
    message: `this node does not lead ${db} (it is ${role})`,
  };
}
