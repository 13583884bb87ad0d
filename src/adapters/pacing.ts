import type { Clock } from '../clock.ts';
import { InvalidArgumentError } from '../errors.ts';
import { Fifo } from '../fifo.ts';

/**
 * Paces requests to a remote service: at most `maxConcurrent` in flight, and no more than
 * `ratePerSecond` started per second (a token bucket holding up to `burst` tokens). A request
 * over either limit waits its turn, first come first served; none is refused.
 *
 * A request started inside {@link urgently} (a takeover's catch-up and epoch-start record) is
 * paced by `maxConcurrent` alone and starts before every waiting ordinary one: a failover of
 * thousands of databases is a burst bounded by the number of databases, and each waits for it.
 */

export interface PacingOptions {
  /** Requests in flight at once (default 64; `Infinity` for no cap). */
  maxConcurrent?: number;
  /** Requests started per second, on average (default 2000; `Infinity` for no limit). */
  ratePerSecond?: number;
  /** Requests that may start at once after a quiet spell (default: a tenth of a second's worth). */
  burst?: number;
  clock?: Clock;
}

export const DEFAULT_STORAGE_PACING = { maxConcurrent: 64, ratePerSecond: 2000 } as const;

/**
 * Timers that keep the process alive: a paced request waiting for a token must not let the
 * process exit under it (the system clock's timers are unref'd).
 */
const pacingClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id as ReturnType<typeof setTimeout>),
};

export class RequestPacer {
  readonly maxConcurrent: number;
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly #clock: Clock;
  #tokens: number;
  #refilledAt: number;
  #inFlight = 0;
  /** Waiting requests, oldest first. */
  #waiting = new Fifo<() => void>();
  /** Waiting urgent requests, oldest first: they need a slot, not a token. */
  #urgent = new Fifo<() => void>();
  #timerPending = false;

  constructor(options: PacingOptions = {}) {
    this.maxConcurrent = atLeastOne(
      'maxConcurrent',
      options.maxConcurrent ?? DEFAULT_STORAGE_PACING.maxConcurrent,
    );
    this.ratePerSecond = positive(
      'ratePerSecond',
      options.ratePerSecond ?? DEFAULT_STORAGE_PACING.ratePerSecond,
    );
    this.burst = atLeastOne(
      'burst',
      options.burst ??
        (Number.isFinite(this.ratePerSecond) ? Math.max(1, Math.ceil(this.ratePerSecond / 10)) : 1),
    );
    this.#clock = options.clock ?? pacingClock;
    this.#tokens = this.burst;
    this.#refilledAt = this.#clock.now();
  }

  /** Requests running now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests waiting for their turn. */
  get queued(): number {
    return this.#waiting.length + this.#urgent.length;
  }

  /** Runs `call` when its turn comes; settles as `call` does. */
  async run<T>(call: () => Promise<T>): Promise<T> {
    if (urgentDepth > 0) {
      // Read before the first await: urgency applies to the request being started now.
      if (this.#urgent.length > 0 || this.#inFlight >= this.maxConcurrent) {
        await new Promise<void>((resolve) => this.#urgent.push(resolve));
      } else {
        this.#inFlight++;
      }
    } else if (this.#waiting.length > 0 || !this.#tryStart()) {
      await new Promise<void>((resolve) => {
        this.#waiting.push(resolve);
      });
    }
    try {
      return await call();
    } finally {
      this.#inFlight--;
      this.#pump();
    }
  }

  /** Takes a slot and a token when both are free. */
  #tryStart(): boolean {
    if (this.#inFlight >= this.maxConcurrent) return false;
    if (Number.isFinite(this.ratePerSecond)) {
      this.#refill();
      if (this.#tokens < 1) {
        this.#wakeForToken();
        return false;
      }
      this.#tokens--;
    }
    this.#inFlight++;
    return true;
  }

  /** Starts waiting requests in order while there is room; the oldest blocks the rest (FIFO). */
  #pump(): void {
    while (this.#urgent.length > 0 && this.#inFlight < this.maxConcurrent) {
      this.#inFlight++;
      (this.#urgent.shift() as () => void)();
    }
    while (this.#waiting.length > 0 && this.#tryStart()) {
      (this.#waiting.shift() as () => void)();
    }
  }

  #refill(): void {
    const now = this.#clock.now();
    const elapsed = Math.max(0, now - this.#refilledAt);
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.ratePerSecond) / 1000);
    this.#refilledAt = now;
  }

  /** One timer at a time, for when the next token is due. */
  #wakeForToken(): void {
    if (this.#timerPending) return;
    this.#timerPending = true;
    const ms = ((1 - this.#tokens) * 1000) / this.ratePerSecond;
    this.#clock.setTimeout(
      () => {
        this.#timerPending = false;
        this.#pump();
      },
      Math.max(0, ms),
    );
  }
}

/** How many {@link urgently} calls are starting requests right now (they start synchronously). */
let urgentDepth = 0;

/**
 * Starts `start`'s requests as urgent: every {@link RequestPacer.run} entered synchronously
 * inside it skips the rate limit (not the concurrency cap) and the queue of ordinary requests.
 * Only what `start` calls before its first `await` counts: wrap each request, not a whole flow.
 */
export function urgently<T>(start: () => T): T {
  urgentDepth++;
  try {
    return start();
  } finally {
    urgentDepth--;
  }
}

let processPacer: RequestPacer | undefined;

/** The storage pacer every node of this process shares unless told otherwise. */
export function sharedStoragePacer(): RequestPacer {
  processPacer ??= new RequestPacer(DEFAULT_STORAGE_PACING);
  return processPacer;
}

function atLeastOne(name: string, value: number): number {
  if (value === Infinity) return value;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`${name} must be a positive integer or Infinity, got ${value}`);
  }
  return value;
}

function positive(name: string, value: number): number {
  if (Number.isNaN(value) || value <= 0) {
    throw new InvalidArgumentError(`${name} must be a positive number, got ${value}`);
  }
  return value;
}
