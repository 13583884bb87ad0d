import { InvalidArgumentError } from '../errors.ts';
import { Fifo } from '../fifo.ts';

/**
 * Runs the heavy steps of role changes (opening a new leader's files, turning a stopped leader's
 * file back into a follower copy) a few at a time for the whole node, each after a turn of the
 * event loop. When thousands of databases change role at once (a node whose lease lapsed, or a
 * node taking over from one that is gone) their mostly synchronous file work would otherwise run
 * back to back in one go: lease renewals, claims, timers and I/O of every other database would
 * wait seconds behind it. A step that finds others running or waiting starts after a turn of the
 * event loop; one alone starts at once. First come, first served; none is refused.
 */
export class StepLimiter {
  readonly limit: number;
  #running = 0;
  #waiting = new Fifo<() => void>();

  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new InvalidArgumentError(`limit must be a positive integer, got ${limit}`);
    }
    this.limit = limit;
  }

  /** Steps running now. */
  get running(): number {
    return this.#running;
  }

  /** Steps waiting for their turn. */
  get queued(): number {
    return this.#waiting.length;
  }

  /**
   * Runs `step` when its turn comes; settles as `step` does. When `wanted` says no by then (the
   * database stopped leading while it waited), the turn passes at once and `step` never runs.
   */
  async run<T>(step: () => Promise<T>, wanted?: () => boolean): Promise<T | undefined> {
    let busy = this.#running > 0;
    if (this.#running >= this.limit || this.queued > 0) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
      busy = true;
    } else {
      this.#running++;
    }
    try {
      if (wanted && !wanted()) return undefined;
      // Alone, a step starts at once; among others, after a turn of the event loop.
      if (busy) await new Promise<void>((resolve) => setImmediate(resolve));
      if (wanted && !wanted()) return undefined;
      return await step();
    } finally {
      this.#running--;
      this.#next();
    }
  }

  #next(): void {
    while (this.queued > 0 && this.#running < this.limit) {
      this.#running++;
      (this.#waiting.shift() as () => void)();
    }
  }
}
