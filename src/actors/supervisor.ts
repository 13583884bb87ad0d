import type { AnyActorRef, SnapshotFrom } from 'xstate';
import { doublingDelay } from '../adapters/retry.ts';
import { type Clock, systemClock, type TimerId } from '../clock.ts';
import { InvalidArgumentError } from '../errors.ts';

export interface RestartPolicy {
  /** Delay before the first restart; doubles with each crash inside the window. */
  initialDelayMs: number;
  maxDelayMs: number;
  /** More crashes than this within `windowMs` and the actor stays stopped. */
  maxCrashes: number;
  windowMs: number;
}

export const defaultRestartPolicy: RestartPolicy = {
  initialDelayMs: 100,
  maxDelayMs: 30_000,
  maxCrashes: 5,
  windowMs: 60_000,
};

export type SupervisorEvent =
  | { type: 'crashed'; name: string; error: unknown; restartInMs: number }
  | { type: 'restarted'; name: string }
  | { type: 'gave-up'; name: string; error: unknown; crashes: number }
  | { type: 'stop-timed-out'; name: string; timeoutMs: number };

export type ActorStatus = 'running' | 'restarting' | 'failed' | 'stopped';

export interface SupervisorOptions<TActor extends AnyActorRef> {
  clock?: Clock;
  restart?: Partial<RestartPolicy>;
  /** A graceful stop that takes longer than this is cut short. */
  stopTimeoutMs?: number;
  onEvent?: (event: SupervisorEvent) => void;
  onSnapshot?: (name: string, snapshot: SnapshotFrom<TActor>) => void;
}

interface Entry<TActor extends AnyActorRef> {
  create: () => TActor;
  actor: TActor | undefined;
  status: ActorStatus;
  crashTimes: number[];
  restartTimer: TimerId | undefined;
}

/**
 * A registry of independent root actors, one per name: a `Map`, not children of one parent
 * machine, because spawning thousands of children into one XState parent is quadratic.
 * Every actor has an error observer (an unobserved root error would be rethrown and kill the
 * process); a crashed actor is restarted with exponential backoff until its crash budget is spent.
 */
export class Supervisor<TActor extends AnyActorRef> {
  readonly #entries = new Map<string, Entry<TActor>>();
  readonly #clock: Clock;
  readonly #policy: RestartPolicy;
  readonly #stopTimeoutMs: number;
  readonly #onEvent: (event: SupervisorEvent) => void;
  readonly #onSnapshot: ((name: string, snapshot: SnapshotFrom<TActor>) => void) | undefined;

  constructor(options: SupervisorOptions<TActor> = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#policy = { ...defaultRestartPolicy, ...options.restart };
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 10_000;
    this.#onEvent = options.onEvent ?? (() => {});
    this.#onSnapshot = options.onSnapshot;
  }

  /** Starts a supervised actor; `create` is called again for every restart. */
  start(name: string, create: () => TActor): TActor {
    if (this.#entries.has(name))
      throw new InvalidArgumentError(
        `an actor named ${JSON.stringify(name)} is already supervised`,
      );
    const entry: Entry<TActor> = {
      create,
      actor: undefined,
      status: 'running',
      crashTimes: [],
      restartTimer: undefined,
    };
    this.#entries.set(name, entry);
    try {
      return this.#launch(name, entry);
    } catch (error) {
      this.#entries.delete(name);
      throw error;
    }
  }

  get(name: string): TActor | undefined {
    const entry = this.#entries.get(name);
    return entry?.status === 'running' ? entry.actor : undefined;
  }

  status(name: string): ActorStatus | undefined {
    return this.#entries.get(name)?.status;
  }

  names(): string[] {
    return [...this.#entries.keys()];
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Delivers an event to a running actor; returns false when there is none. */
  send(name: string, event: Parameters<TActor['send']>[0]): boolean {
    const actor = this.get(name);
    if (!actor) return false;
    actor.send(event);
    return true;
  }

  /**
   * Asks the actor to stop (`{ type: 'stop' }`) and waits until it reaches its final state,
   * cutting it short after the stop timeout. The actor is no longer supervised afterwards.
   */
  async stop(name: string): Promise<void> {
    const entry = this.#entries.get(name);
    if (!entry) return;
    this.#entries.delete(name);
    if (entry.restartTimer !== undefined) this.#clock.clearTimeout(entry.restartTimer);
    const actor = entry.actor;
    entry.status = 'stopped';
    if (actor?.getSnapshot().status !== 'active') return;
    const finished = new Promise<boolean>((resolve) => {
      const timer = this.#clock.setTimeout(() => resolve(false), this.#stopTimeoutMs);
      const done = () => {
        this.#clock.clearTimeout(timer);
        resolve(true);
      };
      actor.subscribe({ complete: done, error: done });
    });
    actor.send({ type: 'stop' });
    if (!(await finished)) {
      this.#onEvent({ type: 'stop-timed-out', name, timeoutMs: this.#stopTimeoutMs });
    }
    actor.stop();
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.names().map((name) => this.stop(name)));
  }

  /** Stops every actor at once without letting it clean up, as a process crash would. */
  killAll(): void {
    for (const [name, entry] of this.#entries) {
      this.#entries.delete(name);
      if (entry.restartTimer !== undefined) this.#clock.clearTimeout(entry.restartTimer);
      entry.status = 'stopped';
      entry.actor?.stop();
    }
  }

  #launch(name: string, entry: Entry<TActor>): TActor {
    const actor = entry.create();
    entry.actor = actor;
    entry.status = 'running';
    actor.subscribe({
      next: (snapshot) => this.#onSnapshot?.(name, snapshot as SnapshotFrom<TActor>),
      error: (error) => this.#crashed(name, entry, actor, error),
    });
    actor.start();
    return actor;
  }

  #crashed(name: string, entry: Entry<TActor>, actor: TActor, error: unknown): void {
    if (entry.actor !== actor || entry.status !== 'running') return;
    this.#recordCrash(name, entry, error);
  }

  /** Counts a crash against the budget and schedules the restart, or gives up. */
  #recordCrash(name: string, entry: Entry<TActor>, error: unknown): void {
    entry.actor = undefined;
    const now = this.#clock.now();
    const { windowMs, maxCrashes, initialDelayMs, maxDelayMs } = this.#policy;
    entry.crashTimes = [...entry.crashTimes.filter((t) => now - t < windowMs), now];
    const crashes = entry.crashTimes.length;
    if (crashes > maxCrashes) {
      entry.status = 'failed';
      this.#onEvent({ type: 'gave-up', name, error, crashes });
      return;
    }
    const restartInMs = doublingDelay(crashes, initialDelayMs, maxDelayMs);
    entry.status = 'restarting';
    this.#onEvent({ type: 'crashed', name, error, restartInMs });
    entry.restartTimer = this.#clock.setTimeout(() => {
      entry.restartTimer = undefined;
      if (this.#entries.get(name) !== entry) return;
      try {
        this.#launch(name, entry);
      } catch (launchError) {
        this.#recordCrash(name, entry, launchError);
        return;
      }
      this.#onEvent({ type: 'restarted', name });
    }, restartInMs);
  }
}
