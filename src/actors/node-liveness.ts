import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { LeaseEntry, LeaseStore } from '../adapters/lease/types.ts';
import { type Clock, type TimerId, withTimeout } from '../clock.ts';
import type { LeaseTiming } from '../machines/role.ts';
import { decodeLeaseRecord, encodeLeaseRecord, type LeaseRecord } from '../wire/lease-record.ts';

/** Lease keys of node records; database names cannot contain `/`, so these never collide. */
export const NODE_KEY_PREFIX = '_nodes/';

export function nodeLeaseKey(nodeId: string): string {
  return `${NODE_KEY_PREFIX}${nodeId}`;
}

export type PeerVerdict = 'alive' | 'gone' | 'unknown';

export interface NodeLivenessOptions {
  store: LeaseStore;
  clock: Clock;
  nodeId: string;
  /** This incarnation of the node. */
  session: string;
  address?: string | undefined;
  timing: LeaseTiming;
  logger: Logger;
  /** A store call that has not answered by then counts as failed (its write may still land). */
  callTimeoutMs?: number;
  /** This node may no longer commit anywhere: `lost` (another incarnation holds the record) or `expired`. */
  onLapse(reason: 'lost' | 'expired'): void;
  /**
   * What is known of a peer changed (it went away, a new incarnation): re-judge its databases.
   * `released`: it gave some of them up since; re-read their ownership records.
   */
  onPeerChanged(nodeId: string, released: boolean): void;
  /** This node holds its record again (or for the first time): claims can go ahead. */
  onHeld(): void;
  /** How many databases this node leads, published with each renewal (for balancing). */
  leaders?: () => number;
}

/** A peer as last read: `record` is null while absent or unreadable. */
export interface PeerView {
  nodeId: string;
  record: LeaseRecord | null;
  gone: boolean;
}

interface PeerObservation {
  revision: string | null;
  record: LeaseRecord | null;
  /** When this revision (or absence) was first seen, on this node's clock. */
  firstSeenAt: number;
  /** When the last read that answered was sent. */
  readSentAt: number;
  verdictGone: boolean;
}

/**
 * Node-level leases: one liveness record per node, renewed by one CAS per interval whatever the
 * number of databases. A database's ownership record names (node, node session, epoch) and is
 * written only on claim and release; it stays valid while the node's record does.
 *
 * The same two clocks as per-database leases, never compared: this node commits only before
 * `sentAt(last successful renewal) + ttl - margin` on its own clock; a peer is judged gone only
 * after its record's revision stayed unchanged for `ttl + margin` on the observer's clock, or when
 * it was released or taken over by a newer incarnation.
 */
export class NodeLiveness {
  readonly key: string;
  readonly #options: NodeLivenessOptions;
  readonly #callTimeoutMs: number;
  /** This incarnation; a new one after a peer declared this node gone. */
  #session: string;
  #revision: string | null = null;
  #epoch = 0;
  #validUntil = Number.NEGATIVE_INFINITY;
  #lapsed = true;
  #timer: TimerId | undefined;
  #expiryTimer: TimerId | undefined;
  #peerTimer: TimerId | undefined;
  readonly #peers = new Map<string, PeerObservation>();
  readonly #reading = new Set<string>();
  /** Peers whose databases wait for the next read of their record. */
  readonly #owed = new Set<string>();
  #releases = 0;
  #renewFailures = 0;
  #closed = false;
  /** Settles the next time this node holds its record, or when it stops. */
  #heldAgain: { promise: Promise<void>; resolve: () => void } | null = null;

  constructor(options: NodeLivenessOptions) {
    this.#options = options;
    this.key = nodeLeaseKey(options.nodeId);
    this.#callTimeoutMs = options.callTimeoutMs ?? options.timing.renewIntervalMs;
    this.#session = options.session;
  }

  get session(): string {
    return this.#session;
  }

  /** Until when (on this node's clock) this node may commit; -Infinity while it holds no record. */
  get validUntil(): number {
    return this.#validUntil;
  }

  validAt(now: number): boolean {
    return now < this.#validUntil;
  }

  /**
   * Resolves once this node holds its record (at once while it does), or once it stops: one
   * promise for every database that waits, however many.
   */
  whenHeld(): Promise<void> {
    if (this.#closed || this.validAt(this.#options.clock.now())) return Promise.resolve();
    if (!this.#heldAgain) {
      let resolve = () => {};
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.#heldAgain = { promise, resolve };
    }
    return this.#heldAgain.promise;
  }

  #wakeHeldWaiters(): void {
    const waiters = this.#heldAgain;
    this.#heldAgain = null;
    waiters?.resolve();
  }

  /** Starts taking and renewing this node's record, and watching peers; returns at once. */
  start(): void {
    this.#schedule(0);
    this.#schedulePeers(this.#options.timing.pollIntervalMs);
  }

  /**
   * Whether the incarnation `nodeSession` of `nodeId` still holds its node record, as far as this
   * node can tell. `readAfter`: a judgement of `gone` by a changed session needs a read of the
   * node record sent after this instant (the ownership record may be newer than what we saw).
   */
  judge(nodeId: string, nodeSession: string, readAfter: number): PeerVerdict {
    if (nodeId === this.#options.nodeId && nodeSession === this.#session) return 'alive';
    const peer = this.#peers.get(nodeId);
    if (!peer) {
      this.#owed.add(nodeId);
      this.#readPeerSoon(nodeId);
      return 'unknown';
    }
    const record = peer.record;
    if (record && record.session !== nodeSession) {
      if (peer.readSentAt <= readAfter) {
        this.#owed.add(nodeId);
        this.#readPeerSoon(nodeId);
        return 'unknown';
      }
      return 'gone';
    }
    // Time alone never decides: only a record released (by the node, or by a peer's CAS on the
    // revision it watched lapse), or a newer incarnation, means the node can no longer renew.
    return record?.released ? 'gone' : 'alive';
  }

  /** Reads `nodeId`'s record with the other peers from now on, or again if it was gone. */
  track(nodeId: string): void {
    if (nodeId === this.#options.nodeId) return;
    const peer = this.#peers.get(nodeId);
    if (!peer || peer.verdictGone || peer.record?.released) this.#readPeerSoon(nodeId);
  }

  /** Every peer this node has read, as last read. */
  peers(): PeerView[] {
    return [...this.#peers].map(([nodeId, peer]) => ({
      nodeId,
      record: peer.record,
      gone: peer.verdictGone || peer.record?.released === true,
    }));
  }

  /** This node released an ownership record: peers learn of it with the next renewal. */
  noteRelease(): void {
    this.#releases += 1;
  }

  /** The lease store reported a change under {@link NODE_KEY_PREFIX}. */
  keyChanged(key: string): void {
    if (!key.startsWith(NODE_KEY_PREFIX)) return;
    const nodeId = key.slice(NODE_KEY_PREFIX.length);
    if (nodeId !== this.#options.nodeId && this.#peers.has(nodeId)) this.#readPeerSoon(nodeId);
  }

  /** Stops dead, as in a crash: no release; a call in flight may still land. */
  halt(): void {
    this.#closed = true;
    this.#wakeHeldWaiters();
    for (const timer of [this.#timer, this.#expiryTimer, this.#peerTimer]) {
      if (timer !== undefined) this.#options.clock.clearTimeout(timer);
    }
    this.#validUntil = Number.NEGATIVE_INFINITY;
  }

  /** Releases this node's record (by CAS) so peers may take its databases over at once. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeHeldWaiters();
    for (const timer of [this.#timer, this.#expiryTimer, this.#peerTimer]) {
      if (timer !== undefined) this.#options.clock.clearTimeout(timer);
    }
    this.#validUntil = Number.NEGATIVE_INFINITY;
    if (this.#revision === null) return;
    try {
      await this.#call(
        this.#options.store.update(this.key, this.#encode(true), this.#revision),
        'releasing the node record',
      );
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'could not release the node record');
    }
  }

  // ---- own record ---------------------------------------------------------------------------

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = this.#options.clock.setTimeout(() => {
      this.#timer = undefined;
      this.#step().catch((error: unknown) => {
        this.#options.logger.error({ err: error }, 'node record step failed');
        this.#schedule(this.#options.timing.retryIntervalMs);
      });
    }, ms);
  }

  /** One renewal, or one attempt to take the record; schedules the next. */
  async #step(): Promise<void> {
    const { timing, clock, store } = this.#options;
    if (this.#revision !== null) {
      const sentAt = clock.now();
      let result: Awaited<ReturnType<LeaseStore['update']>>;
      try {
        result = await this.#call(
          store.update(this.key, this.#encode(false), this.#revision),
          'renewing the node record',
        );
      } catch (error) {
        // Once per outage at warn; the retries that follow at debug.
        const level = this.#renewFailures++ === 0 ? 'warn' : 'debug';
        this.#options.logger[level]({ err: error }, 'node record renewal failed; retrying');
        this.#schedule(timing.retryIntervalMs);
        return;
      }
      if (this.#closed) return;
      if (result.ok) {
        this.#held(result.revision, sentAt);
        this.#schedule(timing.renewIntervalMs);
        return;
      }
      // Our own renewal may have landed unanswered; anything else means we lost the record.
      this.#revision = null;
    }
    await this.#take();
  }

  /** Takes the record: at once if absent, released or ours; after ttl + margin unchanged otherwise. */
  async #take(): Promise<void> {
    const { timing, clock, store } = this.#options;
    let entry: Awaited<ReturnType<LeaseStore['get']>>;
    const readAt = clock.now();
    try {
      entry = await this.#call(store.get(this.key), 'reading the node record');
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'cannot read the node record; retrying');
      this.#schedule(timing.retryIntervalMs);
      return;
    }
    if (this.#closed) return;
    // An unreadable record is overwritten only after it stayed unchanged for long enough.
    const record = readableRecord(entry);
    // Released under our own session: a peer declared this incarnation gone. Its ownership
    // records must stay void, so take the record as a new incarnation.
    const declaredGone = record?.session === this.#session && record.released;
    if (declaredGone) this.#session = randomUUID();
    const own = record?.session === this.#session;
    const free = entry === null || own || record?.released === true;
    if (!own && Number.isFinite(this.#validUntil)) {
      this.#lapse('lost');
      this.#options.logger.error(
        { key: this.key, declaredGone },
        declaredGone
          ? 'peers declared this node gone (it could not renew in time); leaders stopped'
          : 'the node record was taken by another incarnation of this node id; leaders stopped',
      );
    }
    if (!free && entry) {
      const peer = this.#observeOwn(entry.revision, record, readAt);
      const waitFor = (record?.ttlMs ?? timing.ttlMs) + timing.marginMs;
      if (readAt - peer.firstSeenAt < waitFor) {
        this.#options.logger.warn(
          { key: this.key },
          'an earlier incarnation of this node holds its record; waiting for it to lapse',
        );
        this.#schedule(Math.min(timing.pollIntervalMs, waitFor - (readAt - peer.firstSeenAt)));
        return;
      }
    }
    this.#epoch = Math.max(this.#epoch, record?.epoch ?? 0) + (own ? 0 : 1);
    const sentAt = clock.now();
    let result: Awaited<ReturnType<LeaseStore['create']>>;
    try {
      const value = this.#encode(false);
      result = await this.#call(
        entry === null
          ? store.create(this.key, value)
          : store.update(this.key, value, entry.revision),
        'taking the node record',
      );
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'cannot take the node record; retrying');
      this.#schedule(timing.retryIntervalMs);
      return;
    }
    if (this.#closed) return;
    if (result.ok) {
      this.#ownObservation = null;
      this.#held(result.revision, sentAt);
      this.#schedule(timing.renewIntervalMs);
    } else {
      this.#schedule(timing.retryIntervalMs);
    }
  }

  #ownObservation: PeerObservation | null = null;

  #observeOwn(revision: string, record: LeaseRecord | null, at: number): PeerObservation {
    const seen = this.#ownObservation;
    if (seen && seen.revision === revision) return seen;
    this.#ownObservation = {
      revision,
      record,
      firstSeenAt: at,
      readSentAt: at,
      verdictGone: false,
    };
    return this.#ownObservation;
  }

  #held(revision: string, sentAt: number): void {
    const { timing } = this.#options;
    this.#revision = revision;
    this.#renewFailures = 0;
    this.#validUntil = sentAt + timing.ttlMs - timing.marginMs;
    const wasLapsed = this.#lapsed;
    this.#lapsed = false;
    if (wasLapsed) queueMicrotask(() => this.#options.onHeld());
    this.#armExpiry();
    this.#wakeHeldWaiters();
  }

  /** Timers may fire a little early on the monotonic clock: re-arm until really past. */
  #armExpiry(): void {
    const clock = this.#options.clock;
    if (this.#expiryTimer !== undefined) clock.clearTimeout(this.#expiryTimer);
    this.#expiryTimer = clock.setTimeout(
      () => {
        this.#expiryTimer = undefined;
        if (this.#closed || this.#lapsed) return;
        if (this.validAt(clock.now())) this.#armExpiry();
        else this.#lapse('expired');
      },
      Math.max(0, Math.ceil(this.#validUntil - clock.now())),
    );
  }

  #lapse(reason: 'lost' | 'expired'): void {
    this.#validUntil = Number.NEGATIVE_INFINITY;
    if (this.#lapsed && reason === 'expired') return;
    this.#lapsed = true;
    this.#options.logger.warn({ reason }, 'node lease lapsed: every leader on this node stops');
    this.#options.onLapse(reason);
  }

  #encode(released: boolean): Uint8Array {
    const { nodeId, timing, address } = this.#options;
    const record: LeaseRecord = {
      holder: nodeId,
      session: this.#session,
      epoch: Math.max(1, this.#epoch),
      ttlMs: timing.ttlMs,
      released,
      releases: this.#releases,
    };
    if (address !== undefined) record.address = address;
    const leaders = released ? undefined : this.#options.leaders?.();
    if (leaders !== undefined) record.leaders = leaders;
    return encodeLeaseRecord(record);
  }

  // ---- peers --------------------------------------------------------------------------------

  #expired(peer: PeerObservation, now: number): boolean {
    const ttl = peer.record?.ttlMs ?? this.#options.timing.ttlMs;
    return now - peer.firstSeenAt >= ttl + this.#options.timing.marginMs;
  }

  #readPeerSoon(nodeId: string): void {
    if (this.#closed || this.#reading.has(nodeId)) return;
    void this.#readPeer(nodeId);
  }

  async #readPeer(nodeId: string): Promise<void> {
    const { clock, store } = this.#options;
    this.#reading.add(nodeId);
    const sentAt = clock.now();
    try {
      const entry = await this.#call(store.get(nodeLeaseKey(nodeId)), `reading node ${nodeId}`);
      const at = clock.now();
      // An unreadable one is judged by its revision alone: it may still be renewed by someone.
      const record = readableRecord(entry);
      const revision = entry?.revision ?? null;
      const before = this.#peers.get(nodeId);
      const changed = !before || before.revision !== revision;
      const peer: PeerObservation =
        before && !changed
          ? { ...before, record, readSentAt: sentAt }
          : { revision, record, firstSeenAt: at, readSentAt: sentAt, verdictGone: false };
      this.#peers.set(nodeId, peer);
      // Renewals move the revision every interval: only a new incarnation or a release matters.
      const moved =
        !before ||
        before.verdictGone !== peer.verdictGone ||
        before.record?.session !== record?.session ||
        before.record?.released !== record?.released;
      const releasedMore = before?.record?.releases !== record?.releases;
      const owed = this.#owed.delete(nodeId);
      if (moved || releasedMore || owed) this.#options.onPeerChanged(nodeId, releasedMore);
      this.#checkPeer(nodeId, peer, at);
    } catch (error) {
      this.#options.logger.debug({ err: error, peer: nodeId }, 'cannot read a peer node record');
    } finally {
      this.#reading.delete(nodeId);
    }
  }

  /**
   * Tells the databases once when a peer is gone: released, or unchanged for ttl + margin and then
   * released by our CAS on that very revision. The CAS is what makes it safe: a renewal of the
   * peer still in flight now fails, so the peer gains no validity after we judged it gone.
   */
  #checkPeer(nodeId: string, peer: PeerObservation, now: number): void {
    if (peer.record?.released === true) {
      if (!peer.verdictGone) {
        peer.verdictGone = true;
        this.#options.onPeerChanged(nodeId, false);
      }
      return;
    }
    if (this.#expired(peer, now)) void this.#declareGone(nodeId, peer);
  }

  async #declareGone(nodeId: string, peer: PeerObservation): Promise<void> {
    if (this.#closed || this.#reading.has(nodeId)) return;
    this.#reading.add(nodeId);
    const { clock, store, logger, timing } = this.#options;
    // An absent or unreadable record is replaced the same way: by CAS on what we watched.
    const tombstone: LeaseRecord = peer.record
      ? { ...peer.record, released: true }
      : { holder: nodeId, session: 'gone', epoch: 1, ttlMs: timing.ttlMs, released: true };
    const key = nodeLeaseKey(nodeId);
    const value = encodeLeaseRecord(tombstone);
    let conflict = false;
    try {
      const result = await this.#call(
        peer.revision === null ? store.create(key, value) : store.update(key, value, peer.revision),
        `declaring node ${nodeId} gone`,
      );
      if (!result.ok) {
        // It renewed after all (perhaps a write that landed after a crash): look again.
        conflict = true;
        return;
      }
      logger.warn(
        { peer: nodeId },
        'a peer node stopped renewing; its databases can be taken over',
      );
      this.#peers.set(nodeId, {
        revision: result.revision,
        record: tombstone,
        firstSeenAt: clock.now(),
        readSentAt: clock.now(),
        verdictGone: true,
      });
      this.#options.onPeerChanged(nodeId, false);
    } catch (error) {
      logger.debug({ err: error, peer: nodeId }, 'cannot declare a peer gone yet');
    } finally {
      this.#reading.delete(nodeId);
      if (conflict) this.#readPeerSoon(nodeId);
    }
  }

  /** One timer for every peer: reads each record, and judges expiry on time. */
  #schedulePeers(ms: number): void {
    if (this.#closed) return;
    this.#peerTimer = this.#options.clock.setTimeout(() => {
      this.#peerTimer = undefined;
      const { clock, timing } = this.#options;
      const now = clock.now();
      let next = timing.pollIntervalMs;
      for (const [nodeId, peer] of this.#peers) {
        this.#checkPeer(nodeId, peer, now);
        if (!peer.verdictGone) {
          this.#readPeerSoon(nodeId);
          const ttl = peer.record?.ttlMs ?? timing.ttlMs;
          const due = peer.firstSeenAt + ttl + timing.marginMs - now;
          next = Math.max(1, Math.min(next, due));
        }
      }
      // Databases wait on these reads (a gone peer, or one never read yet): retry failed ones.
      for (const nodeId of this.#owed) this.#readPeerSoon(nodeId);
      this.#schedulePeers(next);
    }, ms);
  }

  #call<T>(promise: Promise<T>, what: string): Promise<T> {
    return withTimeout(this.#options.clock, promise, this.#callTimeoutMs, what);
  }
}

/** The record an entry holds, or null when there is none or it cannot be read. */
function readableRecord(entry: LeaseEntry | null): LeaseRecord | null {
  if (!entry) return null;
  try {
    return decodeLeaseRecord(entry.value);
  } catch {
    return null;
  }
}

interface CachedOwnership {
  entry: LeaseEntry | null;
  /** When the read or write that produced it was answered, on this node's clock. */
  readAt: number;
}

/**
 * Ownership records as last read or written by this node. Under node-level leases they change
 * only on claim and release, and the node invalidates an entry whenever it hears of a change
 * (a watch event, a leader saying it no longer leads, a newer epoch in storage), so an idle
 * follower reads nothing.
 */
export class OwnershipCache {
  readonly #entries = new Map<string, CachedOwnership>();

  get(key: string): CachedOwnership | undefined {
    return this.#entries.get(key);
  }

  set(key: string, entry: LeaseEntry | null, readAt: number): void {
    this.#entries.set(key, { entry, readAt });
  }

  invalidate(key: string): void {
    this.#entries.delete(key);
  }
}

/** What a node under node-level leases gives its databases. */
export interface NodeLeaseServices {
  liveness: NodeLiveness;
  ownership: OwnershipCache;
  /** Balancing's claim gate (see `NodeLeaseContext.claimDelayMs`). */
  claimDelayMs?: ((holder: string) => number) | undefined;
}
