import Database from 'better-sqlite3';
import type { Clock, TimerId } from '../clock.ts';
import { HadbError, NotLeaderError, TransactionExpiredError } from '../errors.ts';
import type { Statement, StatementResult, WriteToken } from '../wire/forward.ts';
import { asSqlError, runStatement } from './sql.ts';
import { checkClientSql } from './statement-gate.ts';

export interface InteractiveHooks {
  /** Whether a commit made now may go in the log (this node still leads, in the same epoch). */
  mayCommit(): boolean;
  /** Resolves once what was just committed is durable as the database's durability asks. */
  durable(): Promise<WriteToken>;
  /** Called once, when the transaction ends whichever way: releases the writer. */
  ended(tx: InteractiveTransaction): void;
}

/** Default maximum lifetime of an interactive transaction, whatever its activity. */
export const DEFAULT_TRANSACTION_LIFETIME_MS = 60_000;

/**
 * A transaction left open across requests (Hrana's BEGIN … COMMIT), on its own connection to the
 * leader's file: the leader's other readers never see its uncommitted changes. A writing one was
 * begun IMMEDIATE, so it holds SQLite's write lock; the hosted database makes hadb's own writes
 * wait for it rather than meet SQLITE_BUSY.
 */
export class InteractiveTransaction {
  readonly readOnly: boolean;
  #connection: Database.Database | null;
  readonly #hooks: InteractiveHooks;
  #endedBecause: string | null = null;
  #expired = false;
  #lifetime: { ms: number; clock: Clock; timer: TimerId } | null = null;

  constructor(path: string, readOnly: boolean, hooks: InteractiveHooks) {
    this.readOnly = readOnly;
    this.#hooks = hooks;
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

  /**
   * Rolls it back `ms` from now whatever its activity: kept alive by a statement every few
   * seconds, it would otherwise hold the writer forever. Its next call then fails with
   * {@link TransactionExpiredError}.
   */
  expireAfter(ms: number, clock: Clock): void {
    if (!this.#connection) return;
    if (this.#lifetime) clock.clearTimeout(this.#lifetime.timer);
    const timer = clock.setTimeout(() => {
      this.#expired = true;
      this.abort(`it outlived its maximum lifetime of ${ms} ms`);
    }, ms);
    this.#lifetime = { ms, clock, timer };
  }

  /** False once committed, rolled back or aborted. */
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
    if (!this.readOnly && !this.#hooks.mayCommit()) {
      this.abort('this node stopped leading before the commit');
      throw new NotLeaderError('this node stopped leading before the commit; rolled back');
    }
    try {
      asSqlError(() => connection.exec('COMMIT'));
    } finally {
      if (!connection.inTransaction) this.#end('committed');
    }
    return this.readOnly ? null : this.#hooks.durable();
  }

  rollback(): void {
    this.#live();
    this.abort('rolled back');
  }

  /** Rolls back (if still open) and releases everything; later calls fail with `reason`. */
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
    if (!this.#connection) {
      if (this.#expired && this.#lifetime) throw new TransactionExpiredError(this.#lifetime.ms);
      throw new HadbError('CLOSED', `the transaction is no longer open: ${this.#endedBecause}`);
    }
    return this.#connection;
  }

  #end(reason: string): void {
    const connection = this.#connection;
    if (!connection) return;
    this.#connection = null;
    this.#endedBecause = reason;
    this.#lifetime?.clock.clearTimeout(this.#lifetime.timer);
    connection.close();
    this.#hooks.ended(this);
  }
}
