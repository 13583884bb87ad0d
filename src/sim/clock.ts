import type { Clock, TimerId } from '../clock.ts';

interface Timer {
  id: number;
  at: number;
  fn: () => void;
}

/**
 * A discrete-event clock: `runUntil` moves time to each timer's deadline in turn and lets the
 * caller drain pending promises in between, so every callback sees the exact time it was due.
 * (XState's SimulatedClock jumps to the end of an increment before firing what fell inside it.)
 */
export class SimClock implements Clock {
  #now = 0;
  #nextId = 0;
  readonly #timers = new Map<number, Timer>();

  now(): number {
    return this.#now;
  }

  setTimeout(fn: (...args: unknown[]) => void, ms: number): TimerId {
    const id = this.#nextId++;
    this.#timers.set(id, { id, at: this.#now + Math.max(0, ms), fn: () => fn() });
    return id;
  }

  clearTimeout(id: TimerId): void {
    this.#timers.delete(id as number);
  }

  get pendingTimers(): number {
    return this.#timers.size;
  }

  /**
   * Fires every timer due up to `until`, in deadline order (ties by creation order). Timers due
   * within `batchMs` of each other fire before one `drain`, which keeps long simulations cheap.
   */
  async runUntil(until: number, drain: () => Promise<void>, batchMs = 0): Promise<void> {
    await drain();
    for (;;) {
      const first = this.#earliest();
      if (!first || first.at > until) break;
      const batchEnd = Math.min(until, first.at + batchMs);
      for (
        let timer: Timer | undefined = first;
        timer && timer.at <= batchEnd;
        timer = this.#earliest()
      ) {
        this.#timers.delete(timer.id);
        this.#now = Math.max(this.#now, timer.at);
        timer.fn();
      }
      await drain();
    }
    this.#now = Math.max(this.#now, until);
  }

  #earliest(): Timer | undefined {
    let best: Timer | undefined;
    for (const timer of this.#timers.values()) {
      if (!best || timer.at < best.at || (timer.at === best.at && timer.id < best.id)) best = timer;
    }
    return best;
  }
}

/**
 * One node's monotonic clock over the shared simulated time, running at its own rate
 * (1.02 = 2% fast). Only rates matter for leases: offsets between nodes never do.
 */
export class DriftingClock implements Clock {
  readonly #base: Clock;
  #rate = 1;
  #anchorBase: number;
  #anchorLocal: number;

  constructor(base: Clock, startAt = 0) {
    this.#base = base;
    this.#anchorBase = base.now();
    this.#anchorLocal = startAt;
  }

  get rate(): number {
    return this.#rate;
  }

  setRate(rate: number): void {
    this.#anchorLocal = this.now();
    this.#anchorBase = this.#base.now();
    this.#rate = rate;
  }

  now(): number {
    return this.#anchorLocal + (this.#base.now() - this.#anchorBase) * this.#rate;
  }

  setTimeout(fn: (...args: unknown[]) => void, ms: number): TimerId {
    return this.#base.setTimeout(fn, ms / this.#rate);
  }

  clearTimeout(id: TimerId): void {
    this.#base.clearTimeout(id);
  }
}
