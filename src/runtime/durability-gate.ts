import type { Clock } from '../clock.ts';
import { canCommit, type RoleSnapshot } from '../machines/role.ts';
import { leadsEpoch, leaseEpochOf, mayShip } from '../machines/selectors.ts';

/** What the gate judges from: each read at the moment a question is asked, never cached. */
export interface DurabilitySources {
  /** The role machine's latest snapshot, undefined before the first. */
  snapshot: () => RoleSnapshot | undefined;
  clock: Pick<Clock, 'now'>;
  /** Node-level leases: the node's own liveness record; absent when each database has its lease. */
  liveness?: (() => { validAt(now: number): boolean } | undefined) | undefined;
  /** The epoch whose leader file is open and accepting writes, null when none is. */
  writerEpoch: () => number | null;
  /** The database is closing or closed: it leads nothing any more. */
  closed: () => boolean;
}

/**
 * The one rule for "may this write become durable", asked by the commit path (before a commit,
 * and again before it is acknowledged) and by the shipper (before each upload).
 *
 * - `mayCommit()`: true only while this node leads with its leader file open (the role machine's
 *   `leader.writes.serving`, the writer epoch set), its own lease of that epoch is valid
 *   on its own monotonic clock (I5: it stops `margin` before anyone may claim), and, under
 *   node-level leases, the node's liveness record is valid too. With fencing in storage (a
 *   changeset of an older epoch is refused once a newer epoch started) this gives I1: at most one
 *   node makes writes durable at any moment.
 * - `mayShip(epoch)`: true only while the lease of `epoch` is held and valid (and the node's
 *   lease, as above), while leading or while demoting for any reason but a lost lease: commits
 *   acknowledged before the lease ran out are shipped, nothing of an epoch that lost its lease is.
 *   An upload it allows still carries its epoch and sequence, so storage refuses it if another
 *   node took over meanwhile (I1), and writes each sequence once (I2).
 * - `leads(epoch)`: this node leads under `epoch` and is not closing: worth opening (or keep
 *   waiting to open) the leader file of that epoch. It lets no write through by itself.
 */
export class DurabilityGate {
  readonly #sources: DurabilitySources;

  constructor(sources: DurabilitySources) {
    this.#sources = sources;
  }

  mayCommit(): boolean {
    const snapshot = this.#sources.snapshot();
    const epoch = this.#sources.writerEpoch();
    const now = this.#sources.clock.now();
    return (
      snapshot !== undefined &&
      epoch !== null &&
      leaseEpochOf(snapshot) === epoch &&
      canCommit(snapshot, now) &&
      this.nodeLeaseValid(now)
    );
  }

  mayShip(epoch: number): boolean {
    const now = this.#sources.clock.now();
    return mayShip(this.#sources.snapshot(), epoch, now) && this.nodeLeaseValid(now);
  }

  /** Under node-level leases, a database lease is worth what the node's own lease is. */
  nodeLeaseValid(now: number): boolean {
    return this.#sources.liveness?.()?.validAt(now) ?? true;
  }

  leads(epoch: number): boolean {
    return !this.#sources.closed() && leadsEpoch(this.#sources.snapshot(), epoch);
  }
}
