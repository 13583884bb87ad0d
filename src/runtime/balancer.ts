import type { Logger } from 'pino';
import type { NodeLiveness } from '../actors/node-liveness.ts';
import type { LeaseStore } from '../adapters/lease/types.ts';
import type { Role } from '../api-types.ts';
import { type Clock, type TimerId, withTimeout } from '../clock.ts';
import { BadRequestError, InvalidArgumentError } from '../errors.ts';
import type { HttpAnswer } from '../http/listener.ts';
import type { NodeClient } from '../http/node-client.ts';
import { COPIES_PATH } from '../wire/node-protocol.ts';

export interface BalanceOptions {
  /** How often a node compares its share of leaders with its peers' (default 3000 ms). */
  intervalMs?: number;
  /** Handoffs per interval at most (default 2): leaders move gradually. */
  maxMovesPerInterval?: number;
  /**
   * How long a node at or above its share waits before claiming a database another live node
   * released, so that a node under its share gets it (default: poll + renew interval). Databases
   * of a node judged gone are not held back at all.
   */
  claimDelayMs?: number;
}

/**
 * Which nodes balance together. Node records cannot be listed, so each node adds its id here once
 * and prunes nodes whose record is released; database names cannot contain `/`.
 */
export const MEMBERS_KEY = '_cluster/members';

const MEMBERS_FORMAT = 'hadb-members';

/** Under a store that watches, the members record is read every this many intervals. */
const MEMBERS_READS_WATCHED = 10;

/** Databases named in one copies request at most. */
const MAX_ASKED = 1000;

/** A follower this many changesets behind still takes over quickly: it catches up from storage. */
const MAX_LAG = 2;

/** What the balancer needs of a database hosted on this node. */
export interface Balanceable {
  readonly name: string;
  readonly role: Role;
  readonly position: { seq: number };
  readonly isCaughtUp: boolean;
  readonly inTransaction: boolean;
  handoff(): void;
}

export interface BalancerOptions {
  nodeId: string;
  store: LeaseStore;
  clock: Clock;
  logger: Logger;
  liveness: NodeLiveness;
  databases: () => Iterable<Balanceable>;
  lookup: (name: string) => Balanceable | undefined;
  client: NodeClient;
  /** A store call or peer request that has not answered by then counts as failed. */
  callTimeoutMs: number;
  /** The default claim delay. */
  defaultClaimDelayMs: number;
  options: BalanceOptions;
}

/** An even share of `total` leaders over `alive` nodes, and the band (±10%) a node may sit in. */
export interface Share {
  even: number;
  /** ceil(even): a node at or above it is not under-loaded. */
  target: number;
  /** Above this a node hands leaders off. */
  high: number;
  /** Below this a node is under-loaded enough for a node above `target` to give it one. */
  low: number;
}

export function shareOf(total: number, alive: number): Share {
  const even = alive > 0 ? total / alive : 0;
  const target = Math.ceil(even);
  // Integers within ±10% when there are any; otherwise the nearest integers around even.
  return {
    even,
    target,
    high: Math.max(target, Math.floor(even * 1.1 + 1e-9)),
    low: Math.min(Math.floor(even), Math.ceil(even * 0.9 - 1e-9)),
  };
}

/**
 * How many leaders a node leading `self` should hand off this interval, and to which nodes
 * (those below `target`, or below `low` for the last one), given every live node's count.
 */
export function planMoves(
  self: number,
  peers: ReadonlyMap<string, number>,
  maxMoves: number,
): { moves: number; receivers: Map<string, number> } {
  let total = self;
  for (const load of peers.values()) total += load;
  const share = shareOf(total, peers.size + 1);
  const receivers = new Map<string, number>();
  if (self > share.high) {
    for (const [node, load] of peers)
      if (load < share.target) receivers.set(node, share.target - load);
  } else if (self > share.target) {
    for (const [node, load] of peers) if (load < share.low) receivers.set(node, 1);
  }
  let room = 0;
  for (const deficit of receivers.values()) room += deficit;
  const excess = self > share.high ? self - share.high : receivers.size > 0 ? 1 : 0;
  return { moves: Math.max(0, Math.min(maxMoves, excess, room)), receivers };
}

/**
 * Spreads leadership across live nodes (node-level leases only). Each node publishes how many
 * databases it leads in its node record; one that leads more than its share hands the excess
 * off gracefully, a few per interval, choosing databases whose follower on an under-loaded node
 * is caught up; a node at or above its share waits a little before claiming a released database,
 * so the under-loaded node claims it. Nothing is ever moved by letting a lease expire.
 */
export class Balancer {
  readonly #o: BalancerOptions;
  readonly #intervalMs: number;
  readonly #maxMoves: number;
  readonly #claimDelayMs: number;
  /** When each database led here was first seen leading: the longest-led move first. */
  #leaderSince = new Map<string, number>();
  /** When to read the members record again (at once after a watch event). */
  #membersDueAt = 0;
  /** Claims let through the gate lately: not counted as leaders yet. */
  #recentClaims: number[] = [];
  /** Members seen gone at the last tick: pruned if still gone at this one. */
  #goneBefore = new Set<string>();
  #members: string[] = [];
  #counted: { at: number; count: number } | undefined;
  #timer: TimerId | undefined;
  #closed = false;

  constructor(options: BalancerOptions) {
    const { intervalMs = 3000, maxMovesPerInterval = 2 } = options.options;
    const claimDelayMs = options.options.claimDelayMs ?? options.defaultClaimDelayMs;
    for (const [name, value, min] of [
      ['intervalMs', intervalMs, 1],
      ['maxMovesPerInterval', maxMovesPerInterval, 1],
      ['claimDelayMs', claimDelayMs, 0],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < min) {
        throw new InvalidArgumentError(
          `balance.${name} must be an integer >= ${min}, got ${value}`,
        );
      }
    }
    this.#o = options;
    this.#intervalMs = intervalMs;
    this.#maxMoves = maxMovesPerInterval;
    this.#claimDelayMs = claimDelayMs;
  }

  start(): void {
    this.#schedule(0);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer);
  }

  /** How many databases this node leads now (counted at most every 50 ms: a release burst gates many claims). */
  leaders(): number {
    const now = this.#o.clock.now();
    if (this.#counted && now - this.#counted.at < 50) return this.#counted.count;
    let count = 0;
    for (const database of this.#o.databases()) if (database.role === 'leader') count += 1;
    this.#counted = { at: now, count };
    return count;
  }

  /** The receiving side of {@link COPIES_PATH}: sequences of the named databases followed here. */
  answerCopies(body: Uint8Array): HttpAnswer {
    let dbs: unknown;
    try {
      dbs = (JSON.parse(new TextDecoder().decode(body)) as { dbs?: unknown }).dbs;
    } catch {
      throw new BadRequestError('a copies request is JSON { dbs: string[] }');
    }
    if (!Array.isArray(dbs))
      throw new BadRequestError('a copies request is JSON { dbs: string[] }');
    const copies: Record<string, number> = {};
    for (const name of dbs.slice(0, MAX_ASKED)) {
      const database = typeof name === 'string' ? this.#o.lookup(name) : undefined;
      if (database?.role === 'follower' && database.isCaughtUp) {
        copies[database.name] = database.position.seq;
      }
    }
    return { status: 200, body: JSON.stringify({ copies }), contentType: 'application/json' };
  }

  /**
   * The claim gate: how long to wait before claiming what `holder` released. Only while both this
   * node and the holder are live and this node is not under its share.
   */
  claimDelayMs(holder: string): number {
    if (this.#closed || this.#claimDelayMs === 0) return 0;
    const peers = this.#o.liveness.peers();
    const holderPeer = peers.find((peer) => peer.nodeId === holder);
    if (!holderPeer || holderPeer.gone) return 0;
    const loads = this.#loads(peers);
    const now = this.#o.clock.now();
    this.#recentClaims = this.#recentClaims.filter((at) => now - at < this.#intervalMs);
    const self = this.leaders() + this.#recentClaims.length;
    let total = self;
    for (const load of loads.values()) total += load;
    const { target } = shareOf(total, loads.size + 1);
    if (self >= Math.max(1, target)) return this.#claimDelayMs;
    this.#recentClaims.push(now);
    return 0;
  }

  /** Leaders per live peer with a known count. */
  #loads(peers: ReturnType<NodeLiveness['peers']>): Map<string, number> {
    const loads = new Map<string, number>();
    for (const { nodeId, record, gone } of peers) {
      if (gone || !record || record.released || record.leaders === undefined) continue;
      loads.set(nodeId, record.leaders);
    }
    return loads;
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#tick()
        .catch((error: unknown) => this.#o.logger.debug({ err: error }, 'balancing step failed'))
        .finally(() => this.#schedule(this.#intervalMs));
    }, ms);
  }

  /** The lease store reported a change of {@link MEMBERS_KEY}: a node joined or was pruned. */
  membersChanged(): void {
    this.#membersDueAt = 0;
  }

  async #tick(): Promise<void> {
    const { clock, liveness, store } = this.#o;
    if (clock.now() >= this.#membersDueAt) {
      // A store that watches tells of joins at once: read the record rarely then.
      const every = store.watch ? MEMBERS_READS_WATCHED : 1;
      this.#membersDueAt = clock.now() + every * this.#intervalMs;
      let synced = false;
      try {
        synced = await this.#syncMembers();
      } finally {
        // A write that lost a race, or a store that did not answer: again at the next tick.
        if (!synced) this.#membersDueAt = 0;
      }
    }
    if (this.#closed || !liveness.validAt(clock.now())) return;
    const now = clock.now();
    const leading = new Map<string, Balanceable>();
    const since = new Map<string, number>();
    for (const database of this.#o.databases()) {
      if (database.role !== 'leader') continue;
      leading.set(database.name, database);
      since.set(database.name, this.#leaderSince.get(database.name) ?? now);
    }
    this.#leaderSince = since;
    const peers = liveness.peers();
    // Wait until every member has been read: a count missing would skew the share.
    const known = new Set(peers.map((peer) => peer.nodeId));
    if (this.#members.some((id) => id !== this.#o.nodeId && !known.has(id))) return;
    const loads = this.#loads(peers);
    const { moves, receivers } = planMoves(leading.size, loads, this.#maxMoves);
    if (moves === 0) return;
    const candidates = [...leading.values()]
      .filter((database) => !database.inTransaction)
      .sort((x, y) => (this.#leaderSince.get(x.name) ?? 0) - (this.#leaderSince.get(y.name) ?? 0))
      .slice(0, MAX_ASKED);
    const copies = await this.#copiesOn(receivers, peers, candidates);
    let moved = 0;
    for (const database of candidates) {
      if (moved >= moves || this.#closed) break;
      // The receiver with the most room whose copy is (nearly) caught up with this leader.
      let best: string | null = null;
      for (const [node, room] of receivers) {
        const seq = copies.get(node)?.get(database.name);
        if (room <= 0 || seq === undefined || database.position.seq - seq > MAX_LAG) continue;
        if (best === null || room > (receivers.get(best) ?? 0)) best = node;
      }
      if (best === null || database.role !== 'leader' || database.inTransaction) continue;
      receivers.set(best, (receivers.get(best) ?? 1) - 1);
      moved += 1;
      this.#leaderSince.delete(database.name);
      this.#o.logger.info(
        { db: database.name, leaders: leading.size, toward: best },
        'balancing: handing a database off',
      );
      database.handoff();
    }
  }

  /** Per receiver: the sequence of each candidate it follows, caught up. */
  async #copiesOn(
    receivers: Map<string, number>,
    peers: ReturnType<NodeLiveness['peers']>,
    candidates: Balanceable[],
  ): Promise<Map<string, Map<string, number>>> {
    const body = new TextEncoder().encode(
      JSON.stringify({ dbs: candidates.map((database) => database.name) }),
    );
    const found = new Map<string, Map<string, number>>();
    await Promise.all(
      [...receivers.keys()].map(async (node) => {
        const address = peers.find((peer) => peer.nodeId === node)?.record?.address;
        if (!address) return;
        try {
          const answer = await this.#o.client.request(
            'POST',
            `${address}${COPIES_PATH}`,
            body,
            this.#o.callTimeoutMs,
          );
          if (answer.status !== 200) return;
          const { copies } = JSON.parse(answer.body.toString('utf8')) as {
            copies: Record<string, number>;
          };
          found.set(node, new Map(Object.entries(copies)));
        } catch (error) {
          this.#o.logger.debug({ err: error, peer: node }, 'balancing: cannot ask a peer');
        }
      }),
    );
    return found;
  }

  /** Adds this node to the members record and prunes members gone twice in a row. */
  async #syncMembers(): Promise<boolean> {
    const { store, clock, nodeId, liveness, callTimeoutMs } = this.#o;
    const entry = await withTimeout(
      clock,
      store.get(MEMBERS_KEY),
      callTimeoutMs,
      'reading the members',
    );
    const members = entry ? parseMembers(entry.value) : [];
    const gone = new Set(
      liveness
        .peers()
        .filter((peer) => peer.gone || peer.record === null)
        .map((peer) => peer.nodeId),
    );
    const kept = members.filter(
      (id) => id === nodeId || !(gone.has(id) && this.#goneBefore.has(id)),
    );
    this.#goneBefore = gone;
    if (!kept.includes(nodeId)) kept.push(nodeId);
    this.#members = kept;
    for (const id of kept) liveness.track(id);
    if (entry && kept.length === members.length && members.includes(nodeId)) return true;
    const value = new TextEncoder().encode(
      JSON.stringify({ format: MEMBERS_FORMAT, v: 1, nodes: kept.sort() }),
    );
    const written = await withTimeout(
      clock,
      entry ? store.update(MEMBERS_KEY, value, entry.revision) : store.create(MEMBERS_KEY, value),
      callTimeoutMs,
      'writing the members',
    );
    return written.ok;
  }
}

/** Node ids in a members record; an unreadable one counts as empty (and is rewritten). */
function parseMembers(bytes: Uint8Array): string[] {
  try {
    const parsed = JSON.parse(new TextDecoder().decode(bytes)) as {
      format?: unknown;
      nodes?: unknown;
    };
    if (parsed.format !== MEMBERS_FORMAT || !Array.isArray(parsed.nodes)) return [];
    return parsed.nodes.filter((id): id is string => typeof id === 'string' && id !== '');
  } catch {
    return [];
  }
}
