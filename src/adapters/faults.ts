import { type Clock, sleep, systemClock } from '../clock.ts';

/**
 * Fault injection for the in-memory adapters, so tests can fail calls, slow them down and cut a
 * node off from the store. Faults are judged per calling node: `store.forNode(id)` gives a view.
 */
export type CutOffMode =
  /** Calls fail at once, as with a refused connection. */
  | 'fail'
  /** Requests and responses are dropped: calls never settle (callers must time out). */
  | 'drop';

/** A delay drawn uniformly between `minMs` and `maxMs`. */
export interface Latency {
  minMs: number;
  maxMs: number;
}

/** Fault injection settings of the in-memory backends. */
export interface FaultOptions {
  clock?: Clock;
  /** Source of randomness for latency, in [0, 1). */
  random?: () => number;
  /**
   * Awaited before each call reaches the store. Model tests route it through fast-check's
   * scheduler so every interleaving of concurrent calls can be explored and replayed.
   */
  gate?: (label: string) => Promise<void>;
}

/** Injected faults around a backend's calls: latency, failures, cut-offs and a gate for reordering. */
export class Faults {
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #gate: ((label: string) => Promise<void>) | undefined;
  readonly #cutOff = new Map<string, CutOffMode>();
  #failNext: { count: number; node: string | undefined } = { count: 0, node: undefined };
  #latency: Latency = { minMs: 0, maxMs: 0 };

  constructor(options: FaultOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#gate = options.gate;
  }

  /** The next `count` calls (from `node` only, if given) fail. */
  failNext(count: number, node?: string): void {
    this.#failNext = { count, node };
  }

  /** Each call waits this long before it reaches the store and again before it answers. */
  setLatency(latency: Latency | number): void {
    this.#latency = typeof latency === 'number' ? { minMs: latency, maxMs: latency } : latency;
  }

  cutOff(node: string, mode: CutOffMode = 'fail'): void {
    this.#cutOff.set(node, mode);
  }

  isCutOff(node: string | undefined): boolean {
    return node !== undefined && this.#cutOff.has(node);
  }

  /** Heals one node, or every fault when no node is given. */
  heal(node?: string): void {
    if (node !== undefined) {
      this.#cutOff.delete(node);
      return;
    }
    this.#cutOff.clear();
    this.#failNext = { count: 0, node: undefined };
    this.#latency = { minMs: 0, maxMs: 0 };
  }

  get healthy(): boolean {
    return this.#cutOff.size === 0 && this.#failNext.count === 0 && this.#latency.maxMs === 0;
  }

  /**
   * Runs `apply` as one store call from `node`: the request travels, `apply` takes effect
   * atomically at the store, the response travels back. A cut made while the call is in flight
   * drops it there, so a write can land while its caller never hears of it.
   */
  async call<T>(
    node: string | undefined,
    label: string,
    unavailable: (message: string) => Error,
    apply: () => T,
  ): Promise<T> {
    this.#refuseIfCut(node, label, unavailable);
    if (
      this.#failNext.count > 0 &&
      (this.#failNext.node === undefined || this.#failNext.node === node)
    ) {
      this.#failNext.count -= 1;
      throw unavailable(`injected failure of ${label}`);
    }
    await this.#travel();
    if (this.#gate) await this.#gate(label);
    await this.#interruptIfCut(node, label, unavailable);
    const result = apply();
    await this.#travel();
    await this.#interruptIfCut(node, label, unavailable);
    return result;
  }

  #refuseIfCut(node: string | undefined, label: string, unavailable: (m: string) => Error): void {
    if (node === undefined) return;
    if (this.#cutOff.get(node) === 'fail')
      throw unavailable(`${node} is cut off from the store (${label})`);
  }

  async #interruptIfCut(
    node: string | undefined,
    label: string,
    unavailable: (m: string) => Error,
  ): Promise<void> {
    this.#refuseIfCut(node, label, unavailable);
    if (node !== undefined && this.#cutOff.get(node) === 'drop') await new Promise<never>(() => {});
  }

  async #travel(): Promise<void> {
    const { minMs, maxMs } = this.#latency;
    if (maxMs <= 0) return;
    await sleep(this.#clock, minMs + Math.floor(this.#random() * (maxMs - minMs + 1)));
  }
}
