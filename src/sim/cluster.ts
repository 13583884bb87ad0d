import pino from 'pino';
import { createDatabaseActor, type DatabaseActor } from '../actors/database.ts';
import { NODE_KEY_PREFIX, NodeLiveness, OwnershipCache } from '../actors/node-liveness.ts';
import { Supervisor } from '../actors/supervisor.ts';
import type { CutOffMode, Latency } from '../adapters/faults.ts';
import { type LeaseWrite, MemoryLeaseStore } from '../adapters/lease/memory.ts';
import { InvalidArgumentError } from '../errors.ts';
import { canCommit, type LeaseTiming, type RoleSnapshot, roleOf } from '../machines/role.ts';
import { leaseProblemOf, observationOf } from '../machines/selectors.ts';
import { decodeLeaseRecord } from '../wire/lease-record.ts';
import { DriftingClock, SimClock } from './clock.ts';

/** Options of `SimCluster`. */
export interface SimClusterOptions {
  nodes: number;
  dbs: number;
  timing: LeaseTiming;
  /** Bound on every node's clock-rate error, e.g. 0.05 for ±5%. */
  maxDrift: number;
  /** Source of randomness (store latency), in [0, 1). */
  random: () => number;
  /** Awaited before each store call takes effect: where a model test's scheduler reorders calls. */
  gate?: (label: string) => Promise<void>;
  /** Lets every pending promise settle; called between timer firings. */
  drain: () => Promise<void>;
  /** Timers due within this many ms of each other fire before one drain. */
  batchMs?: number;
  /** `'node'`: one liveness record per node keeps all its ownership records alive. */
  leaseScope?: 'node' | 'database';
}

/** One simulated node of a `SimCluster`. */
export interface SimNode {
  id: string;
  clock: DriftingClock;
  /** `null` while crashed. */
  supervisor: Supervisor<DatabaseActor> | null;
  incarnation: number;
  partitioned: CutOffMode | null;
  /** Under node-level leases: this incarnation's liveness record. */
  liveness: NodeLiveness | null;
}

/** An epoch a simulated node claimed for a database. */
export interface EpochGrant {
  db: string;
  epoch: number;
  holder: string;
  session: string;
  /** Simulated time at which the claim took effect in the store. */
  at: number;
}

/**
 * N nodes × M databases running the real role machines and lease actors against one in-memory
 * lease store, on simulated time with per-node clock drift and injected faults. It checks safety
 * at the instant anything changes and records every violation:
 * - I1: never two nodes allowed to commit one database (leader with a lease valid on its own clock);
 * - I2: the epochs written to a lease key never go back, and every epoch has exactly one holder.
 */
export class SimCluster {
  readonly clock = new SimClock();
  readonly store: MemoryLeaseStore;
  readonly nodes: SimNode[];
  readonly dbs: string[];
  readonly timing: LeaseTiming;
  readonly violations: string[] = [];
  readonly grants: EpochGrant[] = [];
  readonly #options: SimClusterOptions;
  readonly #lastEpoch = new Map<string, number>();
  readonly #holderOfEpoch = new Map<string, string>();

  constructor(options: SimClusterOptions) {
    this.#options = options;
    this.timing = options.timing;
    this.dbs = Array.from({ length: options.dbs }, (_, i) => `db${i}`);
    this.store = new MemoryLeaseStore({
      clock: this.clock,
      random: options.random,
      ...(options.gate ? { gate: options.gate } : {}),
      onWrite: (write) => this.#checkLeaseWrite(write),
    });
    this.nodes = Array.from({ length: options.nodes }, (_, i) => ({
      id: `n${i}`,
      clock: new DriftingClock(this.clock, 1_000_000 * (i + 1)),
      supervisor: null,
      incarnation: 0,
      partitioned: null,
      liveness: null,
    }));
    for (const node of this.nodes) this.#boot(node);
  }

  get now(): number {
    return this.clock.now();
  }

  /** Moves simulated time forward by `ms`, running everything that falls due. */
  async advance(ms: number): Promise<void> {
    await this.clock.runUntil(
      this.clock.now() + ms,
      this.#options.drain,
      this.#options.batchMs ?? 0,
    );
  }

  /** The node stops dead: no release, no cleanup; its in-flight store calls may still land. */
  crash(index: number): void {
    const node = this.#node(index);
    node.supervisor?.killAll();
    node.supervisor = null;
    node.liveness?.halt();
    node.liveness = null;
  }

  restart(index: number): void {
    const node = this.#node(index);
    if (node.supervisor) return;
    this.#boot(node);
  }

  partition(index: number, mode: CutOffMode): void {
    const node = this.#node(index);
    node.partitioned = mode;
    this.store.faults.cutOff(node.id, mode);
  }

  /** Heals every store fault: partitions, latency, pending injected failures. Drift stays. */
  heal(): void {
    this.store.faults.heal();
    for (const node of this.nodes) node.partitioned = null;
  }

  setLatency(latency: Latency): void {
    this.store.faults.setLatency(latency);
  }

  failNextStoreCalls(count: number): void {
    this.store.faults.failNext(count);
  }

  drift(index: number, rate: number): void {
    const { maxDrift } = this.#options;
    if (Math.abs(rate - 1) > maxDrift + 1e-9)
      throw new InvalidArgumentError(`drift ${rate} is outside ±${maxDrift}`);
    this.#node(index).clock.setRate(rate);
  }

  get storeHealthy(): boolean {
    return this.store.faults.healthy;
  }

  isUp(index: number): boolean {
    return this.#node(index).supervisor !== null;
  }

  snapshot(node: SimNode, db: string): RoleSnapshot | undefined {
    return node.supervisor?.get(db)?.getSnapshot();
  }

  /** Nodes allowed to commit `db` right now, each judged on its own clock. */
  committers(db: string): string[] {
    const result: string[] = [];
    for (const node of this.nodes) {
      const snapshot = this.snapshot(node, db);
      const now = node.clock.now();
      const nodeLeaseValid = node.liveness?.validAt(now) ?? this.#options.leaseScope !== 'node';
      if (snapshot && canCommit(snapshot, now) && nodeLeaseValid) result.push(node.id);
    }
    return result;
  }

  /** role of each database on each live node, for summaries and failure messages. */
  describe(): string {
    return this.dbs
      .map((db) => {
        const roles = this.nodes.map((node) => {
          const snapshot = this.snapshot(node, db);
          return `${node.id}=${snapshot ? roleOf(snapshot) : 'down'}`;
        });
        const summary = `${db}: ${roles.join(' ')} epoch=${this.#lastEpoch.get(db) ?? 0}`;
        // A database without exactly one leader: what each node's machine last saw of it.
        return this.committers(db).length === 1 ? summary : `${summary}\n${this.#detail(db)}`;
      })
      .join('\n');
  }

  #detail(db: string): string {
    return this.nodes
      .map((node) => {
        const snapshot = this.snapshot(node, db);
        if (!snapshot) return `  ${node.id}: down`;
        const observed = JSON.stringify(observationOf(snapshot));
        return `  ${node.id}: ${JSON.stringify(snapshot.value)} observed=${observed} problem=${leaseProblemOf(snapshot)}`;
      })
      .join('\n');
  }

  /**
   * The longest a database may go without a leader once nothing is failing any more: a follower
   * must watch an unchanged lease for ttl + margin on a clock that may run slow, plus up to two
   * polls (one to see the last revision, one to notice the expiry) and a claim round trip.
   */
  livenessBoundMs(): number {
    const { ttlMs, marginMs, pollIntervalMs, renewIntervalMs } = this.timing;
    // Node-level leases: a restarted node first waits out its earlier incarnation's record.
    const restart = this.#options.leaseScope === 'node' ? ttlMs + marginMs + pollIntervalMs : 0;
    return (
      Math.ceil((ttlMs + marginMs + restart) / (1 - this.#options.maxDrift)) +
      2 * pollIntervalMs +
      renewIntervalMs
    );
  }

  async stop(): Promise<void> {
    for (const node of this.nodes) {
      node.supervisor?.killAll();
      node.supervisor = null;
      node.liveness?.halt();
      node.liveness = null;
    }
  }

  #node(index: number): SimNode {
    const node = this.nodes[index];
    if (!node) throw new InvalidArgumentError(`no node ${index}`);
    return node;
  }

  #boot(node: SimNode): void {
    node.incarnation += 1;
    const session = `${node.id}#${node.incarnation}`;
    const supervisor = new Supervisor<DatabaseActor>({
      clock: node.clock,
      onSnapshot: (db) => this.#checkCommitters(db),
      onEvent: (event) => {
        if (event.type === 'crashed' || event.type === 'gave-up') {
          this.violations.push(
            `t=${this.now}: actor ${node.id}/${event.name} ${event.type}: ${String(event.error)}`,
          );
        }
      },
    });
    node.supervisor = supervisor;
    const leases = this.store.forNode(node.id);
    const nodeLeases =
      this.#options.leaseScope === 'node' ? this.#startLiveness(node, session) : undefined;
    for (const db of this.dbs) {
      supervisor.start(db, () =>
        createDatabaseActor({
          db,
          node: node.id,
          session: `${session}/${db}`,
          clock: node.clock,
          leases,
          timing: this.timing,
          nodeLeases,
        }),
      );
    }
  }

  /** The node's liveness record, wired to its actors as a node does it. */
  #startLiveness(node: SimNode, session: string) {
    const send = (event: Parameters<DatabaseActor['send']>[0]) => {
      for (const db of this.dbs) {
        const actor = node.supervisor?.get(db);
        if (actor && actor.getSnapshot().status === 'active') actor.send(event);
      }
    };
    const liveness = new NodeLiveness({
      store: this.store.forNode(node.id),
      clock: node.clock,
      nodeId: node.id,
      session,
      timing: this.timing,
      logger: pino({ level: process.env.HADB_SIM_LOG ?? 'silent' }),
      onLapse: (reason) => {
        send({ type: reason === 'lost' ? 'fenced' : 'lease.expired' });
        for (const db of this.dbs) this.#checkCommitters(db);
      },
      onHeld: () => send({ type: 'lease.changed' }),
      onPeerChanged: (_, released) => {
        if (released) for (const db of this.dbs) ownership.invalidate(db);
        send({ type: 'lease.changed' });
      },
    });
    const ownership = new OwnershipCache();
    node.liveness = liveness;
    liveness.start();
    return { liveness, ownership };
  }

  #checkCommitters(db: string): void {
    const committers = this.committers(db);
    if (committers.length > 1) {
      this.violations.push(
        `t=${this.now}: I1 violated for ${db}: ${committers.join(', ')} may all commit`,
      );
    }
  }

  #checkLeaseWrite(write: LeaseWrite): void {
    const db = write.key;
    // Node records are liveness, not fencing tokens: an incarnation renews its own epoch.
    if (db.startsWith(NODE_KEY_PREFIX)) return;
    let record: ReturnType<typeof decodeLeaseRecord>;
    try {
      record = decodeLeaseRecord(write.value);
    } catch (error) {
      this.violations.push(
        `t=${this.now}: unreadable lease record written for ${db}: ${String(error)}`,
      );
      return;
    }
    const last = this.#lastEpoch.get(db) ?? 0;
    if (record.epoch < last) {
      this.violations.push(
        `t=${this.now}: I2 violated for ${db}: epoch went back from ${last} to ${record.epoch}`,
      );
    }
    const epochKey = `${db}@${record.epoch}`;
    const holder = this.#holderOfEpoch.get(epochKey);
    if (holder === undefined) {
      this.#holderOfEpoch.set(epochKey, record.session);
      this.grants.push({
        db,
        epoch: record.epoch,
        holder: record.holder,
        session: record.session,
        at: this.now,
      });
    } else if (holder !== record.session) {
      this.violations.push(
        `t=${this.now}: I2 violated for ${db}: epoch ${record.epoch} held by ${holder} and by ${record.session}`,
      );
    }
    this.#lastEpoch.set(db, Math.max(last, record.epoch));
  }
}
