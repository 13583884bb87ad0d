import type { Logger } from 'pino';
import type { DatabaseProblem } from '../api-types.ts';
import { LeaseRecordInvalidError } from '../errors.ts';

/** A lease record that comes and goes unusable is reported at warn at most this often. */
const WARN_EVERY_MS = 60_000;

/**
 * Whether a database's lease record is unusable (malformed): a database problem until someone
 * repairs or replaces the record, shown in status and metrics. Reported once at warn when it
 * begins, not at every poll.
 */
export class LeaseRecordProblem {
  #current: { reason: string; error: LeaseRecordInvalidError; since: number } | null = null;
  #lastWarnAt = Number.NEGATIVE_INFINITY;

  /** Takes the role machine's latest verdict; true when the problem began, changed or ended. */
  update(reason: string | null, logger: Logger, now = Date.now()): boolean {
    const current = this.#current;
    if (reason === (current?.reason ?? null)) return false;
    if (reason === null) {
      this.#current = null;
      logger.info('the lease record is usable again');
      return true;
    }
    // The reason is the message of a LeaseRecordInvalidError, its code in front already.
    const error = new LeaseRecordInvalidError(reason.replace(/^LEASE_RECORD_INVALID: /, ''));
    this.#current = { reason, error, since: current?.since ?? now };
    if (current === null && now - this.#lastWarnAt >= WARN_EVERY_MS) {
      this.#lastWarnAt = now;
      logger.warn(
        { code: 'LEASE_RECORD_INVALID', reason },
        'unusable lease record: no node can lead this database until it is repaired',
      );
    }
    return true;
  }

  get error(): LeaseRecordInvalidError | undefined {
    return this.#current?.error;
  }

  problem(seq: number): DatabaseProblem | null {
    const current = this.#current;
    if (!current) return null;
    const { error, since } = current;
    return {
      state: 'lease',
      code: error.code,
      message: error.message,
      seq,
      since,
      retryInMs: null,
    };
  }
}
