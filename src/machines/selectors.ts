import type { LeaseRecord } from '../wire/lease-record.ts';
import type { CatchUpIntent, DemoteReason, HeldLease, Observation, RoleSnapshot } from './role.ts';

/**
 * What the runtime may know of a role snapshot, by name: nothing outside `src/machines` reads its
 * context, so the machine can change how it keeps these without its readers changing.
 */

/** The lease this node holds (as leader, or while demoting), if any. */
export function heldLeaseOf(snapshot: RoleSnapshot): Readonly<HeldLease> | null {
  return snapshot.context.lease;
}

/** The epoch of the lease this node holds, or null when it holds none. */
export function leaseEpochOf(snapshot: RoleSnapshot | undefined): number | null {
  return snapshot?.context.lease?.epoch ?? null;
}

/** What the last usable lease read showed (revision, record, when first seen), if any. */
export function observationOf(snapshot: RoleSnapshot): Readonly<Observation> | null {
  return snapshot.context.observed;
}

/** The lease record the last read found, or null when it found none. */
export function observedRecordOf(snapshot: RoleSnapshot | undefined): LeaseRecord | null {
  return snapshot?.context.observed?.record ?? null;
}

/** The node the last lease read named as holder, released or not. */
export function observedHolderOf(snapshot: RoleSnapshot | undefined): string | null {
  return observedRecordOf(snapshot)?.holder ?? null;
}

/** Why the lease could not be read, if it could not (shown in status). */
export function leaseProblemOf(snapshot: RoleSnapshot | undefined): string | null {
  return snapshot?.context.leaseProblem ?? null;
}

/** Why the lease record is unusable (malformed), until a read finds a usable record or none. */
export function leaseRecordProblemOf(snapshot: RoleSnapshot): string | null {
  return snapshot.context.leaseRecordProblem;
}

/** Why this node is (or was last) stepping down; cleared once it follows again. */
export function demoteReasonOf(snapshot: RoleSnapshot | undefined): DemoteReason | null {
  return snapshot?.context.demoteReason ?? null;
}

/** Whether the last catch-up was to claim the lease or to sync a copy that fell behind. */
export function catchUpIntentOf(snapshot: RoleSnapshot): CatchUpIntent {
  return snapshot.context.intent;
}

/** True while this node leads but its files are still being opened: no commit yet. */
export function startsLeading(snapshot: RoleSnapshot | undefined): boolean {
  return snapshot?.matches({ leader: { writes: 'starting' } }) === true;
}

/** True while this node leads under the lease of `epoch` (whether or not it is writable yet). */
export function leadsEpoch(snapshot: RoleSnapshot | undefined, epoch: number): boolean {
  return snapshot?.matches('leader') === true && snapshot.context.lease?.epoch === epoch;
}

/**
 * May changesets of `epoch` be shipped at `now` (on this node's clock): the lease of that epoch is
 * held and still valid, while leading or while demoting for any reason but a lost lease (a
 * handoff or an expiry still ships what was committed before the lease runs out).
 */
export function mayShip(snapshot: RoleSnapshot | undefined, epoch: number, now: number): boolean {
  const lease = snapshot?.context.lease;
  if (!snapshot || !lease || lease.epoch !== epoch || now >= lease.validUntil) return false;
  return (
    snapshot.matches('leader') ||
    (snapshot.matches('demoting') && snapshot.context.demoteReason !== 'lost')
  );
}
