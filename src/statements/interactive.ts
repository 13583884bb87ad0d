import Database from 'better-sqlite3';
import type { Statement, StatementResult, WriteToken } from '../api-types.ts';
import type { Clock, TimerId } from '../clock.ts';
import { ClosedError, type HadbError, NotLeaderError, TransactionExpiredError } from '../errors.ts';
import { asSqlError, runStatement } from './sql.ts';
import { checkClientSql } from './statement-gate.ts';
import type { RunnerTransaction } from './statement-runner.ts';

export interface InteractiveHooks {
  /** Whether a commit made now may go in the log (this node still leads, in the same epoch). */
  mayCommit(): boolean;
  /** Resolves once what was just committed is durable as the database's durability asks. */
  durable(): Promise<WriteToken>;
  /** Called once, when the transaction ends whichever way: releases the writer. */
  ended(tx: OpenTransaction): void;
}

/**
 * What both kinds of interactive transaction share: a maximum lifetime, and why it ended, told to
 * every later call.
 */
export abstract class OpenTransaction {
  readonly readOnly: boolean;
  protected readonly hooks: InteractiveHooks;
  #endedBecause: string | null = null;
  #expired = false;
  #lifetime: { ms: number; clock: Clock; timer: TimerId } | null = null;

  constructor(readOnly: boolean, hooks: InteractiveHooks) {
    this.readOnly = readOnly;
    this.hooks = hooks;
  }

  /**
   * Rolls it back `ms` from now whatever its activity: kept alive by a statement every few
   * seconds, it would otherwise hold the writer forever. Its next call then fails with
   * {@link TransactionExpiredError}.
   */
  expireAfter(ms: number, clock: Clock): void {
    if (!this.open) return;
    if (this.#lifetime) clock.clearTimeout(this.#lifetime.timer);
    const timer = clock.setTimeout(() => {
      this.#expired = true;
      void this.abort(`it outlived its maximum lifetime of ${ms} ms`);
    }, ms);
    this.#lifetime = { ms, clock, timer };
  }

  /** False once committed, rolled back or aborted. */
  abstract get open(): boolean;

  /** Rolls back (if still open) and releases everything; later calls fail with `reason`. */
  abstract abort(reason: string): void | Promise<void>;

  /** The error for a call made after it ended. */
  protected endedError(): HadbError {
    if (this.#expired && this.#lifetime) return new TransactionExpiredError(this.#lifetime.ms);
    return new ClosedError('the transaction', `is no longer open: ${this.#endedBecause}`);
  }

  /** Records why it ended and releases the writer (once). */
  protected ended(reason: string): void {
    if (this.#endedBecause !== null) return;
    this.#endedBecause = reason;
    this.#lifetime?.clock.clearTimeout(this.#lifetime.timer);
    this.hooks.ended(this);
  }
}

/**
 * A transaction left open across requests (Hrana's BEGIN … COMMIT), on its own connection to the
 * leader's file: the leader's other readers never see its uncommitted changes. A writing one was
 * begun IMMEDIATE, so it holds SQLite's write lock; the hosted database makes hadb's own writes
 * wait for it rather than meet SQLITE_BUSY.
 */
export class InteractiveTransaction extends OpenTransaction {
  #connection: Database.Database | null;

  constructor(path: string, readOnly: boolean, hooks: InteractiveHooks) {
    super(readOnly, hooks);
    const connection = new Database(path, { fileMustExist: true });
    try {
      // Waiting for a lock would block the event loop: fail at once instead.
      connection.pragma('busy_timeout = 0');
      // The leader's replicator is the only checkpointer: one here would move commits it has
      // not captured into the file, and the next write would restart the WAL over them.
      connection.pragma('wal_autocheckpoint = 0');
      if (readOnly) connection.pragma('query_only = 1');
      asSqlError(() => connection.exec(readOnly ? 'BEGIN DEFERRED' : 'BEGIN IMMEDIATE'));
    } catch (error) {
      connection.close();
      throw error;
    }
    this.#connection = connection;
  }

  get open(): boolean {
    return this.#connection !== null;
  }

  run(statement: Statement, bigints: boolean): StatementResult {
    const connection = this.#live();
    checkClientSql(statement.sql, 'interactive');
    try {
      return runStatement(connection, statement, bigints);
    } finally {
      // Some errors (SQLITE_FULL, an interrupted statement) make SQLite roll the whole thing back.
      if (!connection.inTransaction) this.#end('SQLite rolled the transaction back');
    }
  }

  /** Commits; resolves once durable (null for a read-only one, which wrote nothing). */
  async commit(): Promise<WriteToken | null> {
    const connection = this.#live();
    if (!this.readOnly && !this.hooks.mayCommit()) {
      this.abort('this node stopped leading before the commit');
      throw new NotLeaderError('this node stopped leading before the commit; rolled back');
    }
    try {
      asSqlError(() => connection.exec('COMMIT'));
    } finally {
      if (!connection.inTransaction) this.#end('committed');
    }
    return this.readOnly ? null : this.hooks.durable();
  }

  rollback(): void {
    this.#live();
    this.abort('rolled back');
  }

  abort(reason: string): void {
    const connection = this.#connection;
    if (!connection) return;
    try {
      if (connection.inTransaction) connection.exec('ROLLBACK');
    } finally {
      this.#end(reason);
    }
  }

  #live(): Database.Database {
    if (!this.#connection) throw this.endedError();
    return this.#connection;
  }

  #end(reason: string): void {
    const connection = this.#connection;
    if (!connection) return;
    this.#connection = null;
    connection.close();
    this.ended(reason);
  }
}

/**
 * An interactive transaction for network clients (Hrana streams): its connection lives in one of
 * the node's statement processes, so each statement is time-limited and none can stall the node.
 * A statement past the limit ends the process and every transaction in it (rolled back). The
 * writer is released only once the process has let go of SQLite's write lock.
 */
export class IsolatedTransaction extends OpenTransaction {
  readonly #tx: RunnerTransaction;
  /** Why it is ending (a COMMIT or ROLLBACK is on its way): no statement may start now. */
  #ending: string | null = null;
  #endedPromise: Promise<void> | null = null;

  constructor(tx: RunnerTransaction, readOnly: boolean, hooks: InteractiveHooks) {
    super(readOnly, hooks);
    this.#tx = tx;
  }

  get open(): boolean {
    return this.#ending === null && this.#tx.open;
  }

  /** Its process ended, or SQLite rolled it back: the writer is free. */
  lost(reason: string): void {
    this.#ending ??= reason;
    this.ended(reason);
  }

  async run(statement: Statement, bigints: boolean): Promise<StatementResult> {
    this.#live();
    checkClientSql(statement.sql, 'interactive');
    return this.#tx.run(statement, bigints);
  }

  /** Commits; resolves once durable (null for a read-only one, which wrote nothing). */
  async commit(): Promise<WriteToken | null> {
    this.#live();
    if (!this.readOnly && !this.hooks.mayCommit()) {
      await this.abort('this node stopped leading before the commit');
      throw new NotLeaderError('this node stopped leading before the commit; rolled back');
    }
    // The lease is checked again where it counts: the commit ships only under this epoch.
    await this.#end(true, 'committed');
    return this.readOnly ? null : this.hooks.durable();
  }

  async rollback(): Promise<void> {
    this.#live();
    await this.#end(false, 'rolled back');
  }

  /** Resolves once its process has rolled it back and let go of the file (or the process died). */
  abort(reason: string): Promise<void> {
    if (this.#endedPromise !== null) return this.#endedPromise.catch(() => {});
    if (!this.#tx.open) {
      this.lost(reason);
      return Promise.resolve();
    }
    return this.#end(false, reason).catch(() => {});
  }

  #end(commit: boolean, reason: string): Promise<void> {
    this.#ending = reason;
    this.#endedPromise = this.#tx.end(commit).finally(() => this.ended(reason));
    return this.#endedPromise;
  }

  #live(): void {
    if (!this.open) throw this.endedError();
  }
}
