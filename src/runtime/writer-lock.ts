import type { Clock } from '../clock.ts';
import { TimeoutError } from '../errors.ts';
import type { SqliteLeader } from '../replication/sqlite/leader.ts';
import type { OpenTransaction } from '../statements/interactive.ts';
import { Wakeup } from '../wait.ts';

/** hadb's writer, taken by a client write running in a statement process (by its request id). */
export interface IsolatedWriteHold {
  isolatedWrite: string;
}

/** What the writer lock needs of its database. */
export interface WriterLockContext {
  readonly name: string;
  readonly clock: Clock;
  /** The database is closing: nobody waits for the writer any more. */
  closed(): boolean;
  /** This node's leader while it may commit, else null. */
  writableLeader(): SqliteLeader | null;
}

/**
 * hadb's writer on one database: one holder at a time among interactive transactions, writes in
 * statement processes and in-process commits; the others wait for it. Also the set of open
 * interactive transactions (read-only ones too), which a demotion or a close aborts.
 */
export class WriterLock {
  readonly #context: WriterLockContext;
  /**
   * The interactive transaction, or the client write in a statement process, holding the writer:
   * other writes wait for it to end.
   */
  #held: OpenTransaction | IsolatedWriteHold | null = null;
  readonly #waiters = new Wakeup();
  readonly #interactive = new Set<OpenTransaction>();

  constructor(context: WriterLockContext) {
    this.#context = context;
  }

  get held(): boolean {
    return this.#held !== null;
  }

  /** How many interactive transactions are open (read-only ones too). */
  get openTransactions(): number {
    return this.#interactive.size;
  }

  /** Takes the writer for `holder` (the caller saw it free in this turn). */
  take(holder: OpenTransaction | IsolatedWriteHold): void {
    this.#held = holder;
  }

  /** An interactive transaction opened; one that writes holds the writer until it ends. */
  opened(tx: OpenTransaction, writes: boolean): void {
    this.#interactive.add(tx);
    if (writes) this.#held = tx;
  }

  /** An interactive transaction ended: forgotten, and the writer freed if it held it. */
  ended(tx: OpenTransaction): void {
    this.#interactive.delete(tx);
    this.release(tx);
  }

  /** Frees the writer if `holder` holds it, and wakes the writes waiting for it. */
  release(holder: OpenTransaction | IsolatedWriteHold): void {
    if (this.#held !== holder) return;
    this.#held = null;
    this.#waiters.wake();
  }

  /** Resolves true once no interactive transaction holds the writer; false at `deadline`. */
  async free(deadline: number): Promise<boolean> {
    const clock = this.#context.clock;
    while (this.#held) {
      const left = deadline - clock.now();
      if (left <= 0 || this.#context.closed()) return false;
      await this.#waiters.wait(clock, left);
    }
    return true;
  }

  /**
   * Runs `commit` on this node's writable leader once no interactive transaction holds the
   * writer, in the same turn as the last look at it: a BEGIN woken at the same time cannot take
   * the writer in between and leave the commit to meet SQLITE_BUSY. Null when this node does not
   * lead; {@link TimeoutError} when the writer stays held past `deadline`.
   */
  async withWriter<R>(deadline: number, commit: (leader: SqliteLeader) => R): Promise<R | null> {
    const clock = this.#context.clock;
    const waitMs = Math.max(0, deadline - clock.now());
    while (this.#held) {
      if (!(await this.free(deadline))) {
        throw new TimeoutError(
          `${this.#context.name}: waiting for an interactive transaction to end`,
          waitMs,
        );
      }
    }
    const leader = this.#context.writableLeader();
    return leader ? commit(leader) : null;
  }

  /**
   * Null when none was open (the caller goes on in the same turn); otherwise resolves once every
   * one has let go of the file (those in statement processes take a moment).
   */
  abortInteractive(reason: string): Promise<unknown> | null {
    if (this.#interactive.size === 0) return null;
    return Promise.all([...this.#interactive].map((tx) => tx.abort(reason)));
  }
}
