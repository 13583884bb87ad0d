import type { Logger } from 'pino';
import type { Clock, TimerId } from '../clock.ts';
import { CatchUpFailedError, ClosedError, FencedError, HadbError } from '../errors.ts';
import { sleepUnlessAborted } from '../wait.ts';

/** A copy stuck behind storage tries again at most this rarely (from the poll interval up). */
const STUCK_RETRY_MAX_MS = 30_000;

/** Why a copy is stuck, since when, and when it is tried again. */
export interface Stuck {
  error: CatchUpFailedError;
  since: number;
  retryAt: number;
  delayMs: number;
}

/** What the stuck-copy state needs of its database. */
export interface StuckCopyContext {
  readonly name: string;
  readonly clock: Clock;
  /** The first retry comes after one poll interval; each next one after twice the last. */
  readonly pollIntervalMs: number;
  /** Aborted when the database closes. */
  readonly signal: AbortSignal;
  closed(): boolean;
  /** The sequence the local copy holds. */
  seq(): number;
  /** Pulls from storage (a retry); reports rather than throws. */
  retry(): Promise<void>;
  /** The copy became stuck, or caught up again: its problem changed. */
  healthChanged(): void;
  logger(): Logger;
}

/**
 * Whether the local copy is stuck behind storage (it holds what this copy cannot apply): not
 * served, reported once, and retried with backoff until a step that brings it up succeeds.
 */
export class StuckCopy {
  readonly #context: StuckCopyContext;
  /** Storage holds what this copy cannot apply: not served, retried with backoff. */
  #stuck: Stuck | null = null;
  #stuckTimer: TimerId | undefined;

  constructor(context: StuckCopyContext) {
    this.#context = context;
  }

  /** Null while the copy is not stuck. */
  get state(): Stuck | null {
    return this.#stuck;
  }

  /**
   * Runs a step that brings the copy up to storage. One that fails for good (not storage or a
   * lease store being unreachable) leaves the copy stuck: reported once, refused until its retry
   * is due (with backoff), cleared by the first step that succeeds.
   */
  async catchingUp<T>(work: () => Promise<T>): Promise<T> {
    const stuck = this.#stuck;
    if (stuck && this.#context.clock.now() < stuck.retryAt) throw stuck.error;
    let result: T;
    try {
      result = await work();
    } catch (error) {
      if (
        this.#context.closed() ||
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
  async retryDue(signal: AbortSignal): Promise<void> {
    const clock = this.#context.clock;
    const waitMs = (this.#stuck?.retryAt ?? 0) - clock.now();
    if (waitMs > 0) {
      await sleepUnlessAborted(clock, waitMs, signal, this.#context.signal);
    }
    signal.throwIfAborted();
    if (this.#context.closed()) throw new ClosedError(`database ${this.#context.name}`);
  }

  /** The database closed: no retry comes any more. */
  close(): void {
    if (this.#stuckTimer !== undefined) this.#context.clock.clearTimeout(this.#stuckTimer);
  }

  #stuckOn(cause: unknown): CatchUpFailedError {
    const { clock, name } = this.#context;
    const now = clock.now();
    const seq = this.#context.seq() + 1;
    const reason = codeOf(cause);
    const previous = this.#stuck;
    const error = new CatchUpFailedError(name, seq, reason, { cause });
    if (previous && previous.error.seq === seq && previous.error.reason === reason) {
      const delayMs = Math.min(previous.delayMs * 2, STUCK_RETRY_MAX_MS);
      this.#stuck = { error, since: previous.since, retryAt: now + delayMs, delayMs };
      this.#scheduleStuckRetry(delayMs);
      this.#context
        .logger()
        .debug({ seq, code: reason, retryInMs: delayMs }, 'still cannot catch up');
      return error;
    }
    const delayMs = this.#context.pollIntervalMs;
    this.#stuck = { error, since: Date.now(), retryAt: now + delayMs, delayMs };
    this.#scheduleStuckRetry(delayMs);
    this.#context
      .logger()
      .warn(
        { seq, code: reason, position: this.#context.seq(), err: cause },
        `cannot catch up with storage: changeset ${seq} cannot be applied (${reason}); this copy is not served and is retried with backoff until storage is repaired`,
      );
    this.#context.healthChanged();
    return error;
  }

  /**
   * Pulls once the retry is due: a leader's tail tells of new changesets only (node-level leases
   * poll storage only for copies without a leader), so nothing else would retry a quiet database.
   */
  #scheduleStuckRetry(delayMs: number): void {
    const clock = this.#context.clock;
    if (this.#stuckTimer !== undefined) clock.clearTimeout(this.#stuckTimer);
    this.#stuckTimer = clock.setTimeout(() => {
      this.#stuckTimer = undefined;
      if (!this.#stuck || this.#context.closed()) return;
      void this.#context.retry().then(() => {
        // Not tried (not following just then): come back later.
        const stuck = this.#stuck;
        if (stuck && !this.#context.closed() && this.#stuckTimer === undefined) {
          this.#scheduleStuckRetry(stuck.delayMs);
        }
      });
    }, delayMs);
  }

  #unstuck(): void {
    const stuck = this.#stuck;
    if (!stuck) return;
    this.#stuck = null;
    if (this.#stuckTimer !== undefined) this.#context.clock.clearTimeout(this.#stuckTimer);
    this.#stuckTimer = undefined;
    this.#context
      .logger()
      .warn(
        { seq: this.#context.seq(), code: stuck.error.reason, stuckSince: stuck.since },
        `caught up again past changeset ${stuck.error.seq}`,
      );
    this.#context.healthChanged();
  }
}

/** Failures that go away by themselves: the store or a peer was unreachable for a while. */
export function isTransient(error: unknown): boolean {
  return (
    error instanceof HadbError &&
    (error.code === 'STORAGE_UNAVAILABLE' ||
      error.code === 'TIMEOUT' ||
      error.code === 'LEASE_STORE_UNAVAILABLE')
  );
}

/** An error's code (hadb's, or Node's such as `EIO`), for status and metrics. */
export function codeOf(error: unknown): string {
  if (error instanceof HadbError) return error.code;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'ERROR';
}
