import type { Clock, TimerId } from '../clock.ts';
import { InvalidArgumentError } from '../errors.ts';

/** A database whose SQLite handles can be closed while it is idle and reopened on use. */
export interface Hibernatable {
  /** Closes the handles; false when that is not safe now (it is then asked again later). */
  hibernate(): boolean;
}

export interface HandleCacheOptions {
  clock: Clock;
  /** Handles idle this long are closed; `false` never closes them for idleness. */
  hibernateAfterMs: number | false;
  /** At most this many databases with open handles; `false` for no cap. */
  maxOpen: number | false;
}

/**
 * The databases of one node whose handles are open, least recently used first. One node-wide
 * sweep closes the idle ones, and opening one past the cap closes the least recently used idle
 * one first, so nothing runs per database while nothing happens.
 */
export class HandleCache {
  readonly #clock: Clock;
  readonly #idleMs: number | false;
  readonly #maxOpen: number;
  /** Last use of each database with open handles; Map order is least recently used first. */
  readonly #open = new Map<Hibernatable, number>();
  #timer: TimerId | undefined;
  #stopped = false;

  constructor(options: HandleCacheOptions) {
    const { hibernateAfterMs, maxOpen } = options;
    if (hibernateAfterMs !== false && !(hibernateAfterMs >= 0)) {
      throw new InvalidArgumentError(
        `hibernateAfterMs must be >= 0 or false, got ${hibernateAfterMs}`,
      );
    }
    if (maxOpen !== false && !(Number.isSafeInteger(maxOpen) && maxOpen >= 1)) {
      throw new InvalidArgumentError(
        `maxOpenDatabases must be a positive integer or false, got ${maxOpen}`,
      );
    }
    this.#clock = options.clock;
    this.#idleMs = hibernateAfterMs;
    this.#maxOpen = maxOpen === false ? Number.POSITIVE_INFINITY : maxOpen;
  }

  /** How many databases have open handles (at most the cap, unless every one of them is busy). */
  get openCount(): number {
    return this.#open.size;
  }

  /** `db` is being used (its handles are or are about to be open): most recently used now. */
  touch(db: Hibernatable): void {
    const known = this.#open.delete(db);
    this.#open.set(db, this.#clock.now());
    if (!known && this.#open.size > this.#maxOpen) this.#evict(db);
  }

  /** `db` closed its handles itself (closed for good, or a role change dropped them). */
  forget(db: Hibernatable): void {
    this.#open.delete(db);
  }

  /** Closes the handles idle for `hibernateAfterMs`; the node calls it every few seconds. */
  sweep(): void {
    if (this.#idleMs === false) return;
    const idleSince = this.#clock.now() - this.#idleMs;
    for (const [db, lastUsed] of [...this.#open]) {
      // Least recently used first: the rest were used later.
      if (lastUsed > idleSince) break;
      if (db.hibernate()) this.#open.delete(db);
    }
  }

  /** Sweeps every `intervalMs` on the clock until {@link stop}. */
  start(intervalMs: number): void {
    if (this.#idleMs === false || this.#stopped) return;
    const tick = () => {
      this.#timer = undefined;
      if (this.#stopped) return;
      this.sweep();
      this.#timer = this.#clock.setTimeout(tick, intervalMs);
    };
    this.#timer = this.#clock.setTimeout(tick, intervalMs);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Over the cap: the least recently used that can close does, except `keep`. */
  #evict(keep: Hibernatable): void {
    // No copy of the keys: deleting the entry being visited is safe while iterating a Map.
    for (const db of this.#open.keys()) {
      if (this.#open.size <= this.#maxOpen) return;
      if (db !== keep && db.hibernate()) this.#open.delete(db);
    }
  }
}

/** A sweep period that notices idleness within about half of `hibernateAfterMs`, 5 s at most. */
export function sweepIntervalMs(hibernateAfterMs: number): number {
  return Math.min(5000, Math.max(20, Math.floor(hibernateAfterMs / 2)));
}
