import type { Logger } from 'pino';
import { doublingDelay } from '../adapters/retry.ts';
import { type Clock, sleep, type TimerId } from '../clock.ts';
import { PeerUnreachableError } from '../errors.ts';
import type { NodeClient } from '../http/node-client.ts';
import { Wakeup } from '../wait.ts';
import {
  decodeNodeTailResponse,
  type NodeTailChange,
  type NodeTailResponse,
} from '../wire/forward.ts';
import { encodeNodeTailQuery, NODE_TAIL_PATH } from '../wire/node-protocol.ts';

/** How long the leader side holds a node tail request open when nothing changes. */
export const NODE_TAIL_WAIT_MS = 20_000;

/**
 * The leader side of the node tail: the newest durable position of every database this node
 * leads (or stopped leading), each stamped with a cursor so a peer hears only what changed.
 */
export class ShipLog {
  readonly session: string;
  #cursor = 0;
  readonly #entries = new Map<string, NodeTailChange & { cursor: number }>();
  readonly #waiters = new Wakeup();

  constructor(session: string) {
    this.session = session;
  }

  note(db: string, epoch: number, seq: number, leading: boolean): void {
    const previous = this.#entries.get(db);
    if (previous?.epoch === epoch && previous.seq === seq && previous.leading === leading) return;
    // Nothing to tell about a database this node never led.
    if (!previous && !leading) return;
    this.#cursor += 1;
    this.#entries.set(db, { db, epoch, seq, leading, cursor: this.#cursor });
    this.#waiters.wake();
  }

  /** Changes after `after`, or everything when the peer's cursor belongs to another session. */
  since(after: number, session: string): NodeTailResponse {
    const from = session === this.session && after <= this.#cursor ? after : 0;
    const changes: NodeTailChange[] = [];
    for (const { cursor, ...change } of this.#entries.values()) {
      if (cursor > from) changes.push(change);
    }
    return { session: this.session, cursor: this.#cursor, changes };
  }

  /** Resolves once something changed after `after` (or at once for a stale cursor), or on timeout. */
  async wait(
    after: number,
    session: string,
    clock: Clock,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<NodeTailResponse> {
    const stale = session !== this.session || after > this.#cursor;
    if (stale || this.#cursor > after || signal.aborted) return this.since(after, session);
    await this.#waiters.wait(clock, timeoutMs, signal);
    return this.since(after, session);
  }
}

/** What the follower side needs of a database. */
export interface TailedDatabase {
  readonly name: string;
  /** The leader's address while this copy follows it; null otherwise. */
  readonly followedAddress: string | null;
  /** Whether this copy follows a leader at all (and so may need a storage pull). */
  readonly following: boolean;
  applyTail(change: NodeTailChange, from: string): Promise<void>;
  pullFromStorage(): Promise<void>;
}

export interface NodeTailOptions {
  client: NodeClient;
  clock: Clock;
  logger: Logger;
  /** This node's own address, sent so the leader's cluster view knows its followers. */
  self: () => string | undefined;
  databases: () => Iterable<TailedDatabase>;
  lookup: (name: string) => TailedDatabase | undefined;
  /** How often to look for new leaders, and to poll storage for copies no leader tells about. */
  intervalMs: number;
}

/**
 * The follower side: one long poll per leader node, whatever the number of databases it leads.
 * Copies whose leader cannot be reached (or has no address) are pulled from storage on a slow,
 * backing-off schedule, by one node-wide timer.
 */
export class NodeTailFollower {
  readonly #options: NodeTailOptions;
  readonly #loops = new Map<string, { failures: number }>();
  /**
   * The latest change for each database that was not open here when it came (a leader node's
   * first answer tells of all it leads): told to the database once it follows that leader, so a
   * copy opened later also knows it is at the tip and a takeover need not ask storage.
   */
  readonly #held = new Map<string, { change: NodeTailChange; from: string }>();
  readonly #closing = new AbortController();
  #timer: TimerId | undefined;
  #fallbackDueAt = 0;
  #fallbackFailures = 0;

  constructor(options: NodeTailOptions) {
    this.#options = options;
  }

  start(): void {
    this.#schedule(0);
  }

  close(): void {
    this.#closing.abort();
    if (this.#timer !== undefined) this.#options.clock.clearTimeout(this.#timer);
  }

  /**
   * Starts loops for leader addresses not tailed yet: of `changed` alone when one database's role
   * changed (a full pass per role change would be quadratic while thousands open), else of all.
   */
  reconcile(changed?: TailedDatabase): void {
    if (this.#closing.signal.aborted) return;
    if (changed) this.#tellHeld(changed);
    for (const database of changed ? [changed] : this.#options.databases()) {
      const address = database.followedAddress;
      if (address && !this.#loops.has(address)) this.#startLoop(address);
    }
  }

  #schedule(ms: number): void {
    if (this.#closing.signal.aborted) return;
    this.#timer = this.#options.clock.setTimeout(() => {
      this.#timer = undefined;
      const next = () => this.#schedule(this.#options.intervalMs);
      this.#tick().then(next, (error: unknown) => {
        this.#options.logger.error({ err: error }, 'node tail tick failed');
        next();
      });
    }, ms);
  }

  async #tick(): Promise<void> {
    this.reconcile();
    const { clock, intervalMs } = this.#options;
    if (clock.now() < this.#fallbackDueAt) return;
    const stranded: TailedDatabase[] = [];
    for (const database of this.#options.databases()) {
      if (!database.following) continue;
      const address = database.followedAddress;
      const loop = address ? this.#loops.get(address) : undefined;
      if (!address || (loop && loop.failures > 0)) stranded.push(database);
    }
    if (stranded.length === 0) {
      this.#fallbackFailures = 0;
      return;
    }
    // Storage polling only for copies no leader tells about, backing off while it lasts.
    this.#fallbackFailures += 1;
    // At most 2^5 intervals (and 30 s) apart.
    const backoff = doublingDelay(Math.min(this.#fallbackFailures, 6), intervalMs, 30_000);
    this.#fallbackDueAt = clock.now() + backoff;
    await forEachLimited(stranded, 8, (database) => database.pullFromStorage());
  }

  #tellHeld(database: TailedDatabase): void {
    const held = this.#held.get(database.name);
    if (!held || database.followedAddress !== held.from) return;
    this.#held.delete(database.name);
    database.applyTail(held.change, held.from).catch(() => {});
  }

  #startLoop(address: string): void {
    const state = { failures: 0 };
    this.#loops.set(address, state);
    void this.#run(address, state).finally(() => this.#loops.delete(address));
  }

  async #run(address: string, state: { failures: number }): Promise<void> {
    const { client, clock, logger } = this.#options;
    const signal = this.#closing.signal;
    let session = '';
    let cursor = 0;
    while (!signal.aborted && this.#inUse(address)) {
      try {
        const query = encodeNodeTailQuery({
          after: cursor,
          session,
          from: this.#options.self() ?? null,
        });
        const { status, body } = await client.request(
          'GET',
          `${address}${NODE_TAIL_PATH}?${query}`,
          null,
          NODE_TAIL_WAIT_MS + 5000,
          signal,
        );
        if (status !== 200) throw new PeerUnreachableError(`node tail answered ${status}`);
        const response = decodeNodeTailResponse(body);
        session = response.session;
        cursor = response.cursor;
        state.failures = 0;
        await forEachLimited(response.changes, 16, async (change) => {
          const database = this.#options.lookup(change.db);
          if (database) {
            this.#held.delete(change.db);
            await database.applyTail(change, address);
          } else this.#held.set(change.db, { change, from: address });
        });
      } catch (error) {
        if (signal.aborted) return;
        state.failures += 1;
        logger.debug({ err: error, leader: address }, 'node tail unavailable; storage polling');
        await sleep(clock, doublingDelay(state.failures + 1, this.#options.intervalMs, 30_000));
      }
    }
  }

  #inUse(address: string): boolean {
    for (const database of this.#options.databases()) {
      if (database.followedAddress === address) return true;
    }
    return false;
  }
}

async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item).catch(() => {});
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
