import type { LeaseStore } from '../adapters/lease/types.ts';
import { type Clock, sleep, withTimeout } from '../clock.ts';
import { HadbError, LeaseRecordInvalidError } from '../errors.ts';
import type { ReadLeaseOutput, WriteLeaseInput, WriteLeaseOutput } from '../machines/role.ts';
import { decodeLeaseRecord, encodeLeaseRecord, type LeaseRecord } from '../wire/lease-record.ts';
import type { NodeLiveness, OwnershipCache } from './node-liveness.ts';

export interface LeaseActorOptions {
  store: LeaseStore;
  clock: Clock;
  /** The lease key of a database. */
  keyOf: (db: string) => string;
  /** A store call that has not answered by then counts as unavailable; its write may still land. */
  callTimeoutMs: number;
  /** Node-level leases: ownership records kept alive by this node's liveness record. */
  nodeLeases?: NodeLeaseContext | undefined;
}

export interface NodeLeaseContext {
  liveness: NodeLiveness;
  ownership: OwnershipCache;
  nodeId: string;
  /** The database actor's own session (a restarted actor must not adopt its predecessor's claim). */
  session: string;
  /**
   * Balancing: how long to hold back before claiming a record `holder` released (0: at once), so
   * that a node under its share claims first.
   */
  claimDelayMs?: ((holder: string) => number) | undefined;
}

/** Ownership records are never judged by time: the holder node's liveness decides. */
const NEVER_BY_TIME_MS = Number.MAX_SAFE_INTEGER;

/**
 * The role machine's lease actors over a {@link LeaseStore}, as the promise creators the database
 * actor runs for them. Store failures become outcomes, not errors, so the machine decides what
 * they mean; every outcome carries clock readings.
 */
export function leaseActors({ store, clock, keyOf, callTimeoutMs, nodeLeases }: LeaseActorOptions) {
  const call = <T>(promise: Promise<T>, what: string) =>
    withTimeout(clock, promise, callTimeoutMs, what);

  const readLease = async ({ input }: { input: { db: string } }): Promise<ReadLeaseOutput> => {
    let read = await readOnce(input.db);
    if (read.outcome === 'unavailable' && nodeLeases && !nodeLeases.liveness.validAt(clock.now())) {
      // The store does not answer and the node holds no lease of its own: the node's record is
      // retried for all its databases, so rather than every database polling a store that does
      // not answer, read again once the node holds its record (or stops).
      await nodeLeases.liveness.whenHeld();
      read = await readOnce(input.db);
    }
    if (!nodeLeases || nodeLeases.liveness.validAt(clock.now()) || !mightClaim(read)) return read;
    // Nothing to claim with until the node holds its own lease; the node says when it does.
    return { outcome: 'unavailable', reason: 'this node holds no valid node lease', at: read.at };
  };

  function mightClaim(read: ReadLeaseOutput): boolean {
    if (read.outcome === 'absent') return true;
    if (read.outcome !== 'record' || !nodeLeases) return false;
    const { record } = read;
    return (
      record.released ||
      (record.holder === nodeLeases.nodeId && record.session === nodeLeases.session)
    );
  }

  async function readOnce(db: string, gated = false): Promise<ReadLeaseOutput> {
    const key = keyOf(db);
    const cached = nodeLeases?.ownership.get(key);
    let entry: Awaited<ReturnType<LeaseStore['get']>>;
    // When the read was answered: a node record read sent after this saw a state at least as new.
    let readAt: number;
    if (cached) {
      ({ entry, readAt } = cached);
    } else {
      try {
        entry = await call(store.get(key), `reading lease ${key}`);
      } catch (error) {
        // The store answered, with a record it cannot give (fs: a revision that is not a number).
        if (error instanceof LeaseRecordInvalidError) {
          return { outcome: 'invalid', revision: '', reason: describe(error), at: clock.now() };
        }
        return { outcome: 'unavailable', reason: describe(error), at: clock.now() };
      }
      readAt = clock.now();
    }
    const at = clock.now();
    if (entry === null) {
      nodeLeases?.ownership.set(key, null, readAt);
      return { outcome: 'absent', at };
    }
    let record: LeaseRecord;
    try {
      record = decodeLeaseRecord(entry.value);
    } catch (error) {
      return { outcome: 'invalid', revision: entry.revision, reason: describe(error), at };
    }
    if (!nodeLeases) {
      if (record.nodeSession !== undefined) {
        const reason = `${key} is held under node-level leases; every node of a cluster must use the same lease mode`;
        return { outcome: 'invalid', revision: entry.revision, reason, at };
      }
      return { outcome: 'record', record, revision: entry.revision, at };
    }
    // A per-database record (a cluster moving to node-level leases) is renewed: read it each time.
    if (record.nodeSession === undefined || record.released) {
      nodeLeases.ownership.invalidate(key);
      const handedOff = record.released && record.nodeSession !== undefined;
      const delayMs =
        handedOff && !gated && record.holder !== nodeLeases.nodeId
          ? (nodeLeases.claimDelayMs?.(record.holder) ?? 0)
          : 0;
      if (delayMs > 0) {
        // Then read again: by now a node under its share has most likely claimed it.
        await sleep(clock, delayMs);
        return readOnce(db, true);
      }
      return { outcome: 'record', record, revision: entry.revision, at };
    }
    nodeLeases.ownership.set(key, entry, readAt);
    return {
      outcome: 'record',
      ...judgeOwnership(nodeLeases, record, readAt),
      revision: entry.revision,
      at,
    };
  }

  const writeLease = ({ input }: { input: WriteLeaseInput }) => writeOnce(input);

  async function writeOnce(input: WriteLeaseInput): Promise<WriteLeaseOutput> {
    const key = keyOf(input.db);
    const sentAt = clock.now();
    let record = input.record;
    if (nodeLeases) {
      if (!record.released && !nodeLeases.liveness.validAt(sentAt)) {
        const reason = 'this node holds no valid node lease';
        return { outcome: 'unavailable', reason, at: sentAt };
      }
      record = { ...record, nodeSession: nodeLeases.liveness.session };
    }
    const value = encodeLeaseRecord(record);
    try {
      const result = await call(
        input.expectedRevision === null
          ? store.create(key, value)
          : store.update(key, value, input.expectedRevision),
        `writing lease ${key}`,
      );
      const at = clock.now();
      if (!result.ok) {
        nodeLeases?.ownership.invalidate(key);
        return { outcome: 'conflict', at };
      }
      if (!nodeLeases) return { outcome: 'written', revision: result.revision, sentAt, at };
      nodeLeases.ownership.set(key, { value, revision: result.revision }, at);
      if (record.released) nodeLeases.liveness.noteRelease();
      return { outcome: 'written', revision: result.revision, sentAt, at, delegated: true };
    } catch (error) {
      nodeLeases?.ownership.invalidate(key);
      return { outcome: 'unavailable', reason: describe(error), at: clock.now() };
    }
  }

  /**
   * A release that meets a conflict re-reads once: a renewal still in flight when the leader
   * stopped may have moved the revision on, and the lease is still ours to give up.
   */
  const releaseLease = async ({ input }: { input: WriteLeaseInput }): Promise<WriteLeaseOutput> => {
    const first = await writeOnce(input);
    if (first.outcome !== 'conflict') return first;
    const key = keyOf(input.db);
    try {
      const entry = await call(store.get(key), `reading lease ${key}`);
      if (entry === null) return first;
      const current = decodeLeaseRecord(entry.value);
      const { holder, session, epoch } = input.record;
      const stillOurs =
        current.holder === holder && current.session === session && current.epoch === epoch;
      if (!stillOurs || current.released) return first;
      return await writeOnce({ ...input, expectedRevision: entry.revision });
    } catch {
      return first;
    }
  };

  return { readLease, claimLease: writeLease, renewLease: writeLease, releaseLease };
}

function describe(error: unknown): string {
  if (error instanceof HadbError) return error.message;
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * An ownership record as the role machine should see it: released once its holder node's
 * incarnation is gone, otherwise never expiring by time, and pushed (the node tells of changes).
 */
function judgeOwnership(
  nodeLeases: NodeLeaseContext,
  record: LeaseRecord,
  readSentAt: number,
): { record: LeaseRecord; pushed: boolean } {
  const nodeSession = record.nodeSession as string;
  const ownNode =
    record.holder === nodeLeases.nodeId && nodeSession === nodeLeases.liveness.session;
  // A claim by an earlier actor of this database on this node: that actor is gone.
  if (ownNode && record.session !== nodeLeases.session) {
    return { record: { ...record, released: true }, pushed: false };
  }
  const verdict = ownNode
    ? 'alive'
    : nodeLeases.liveness.judge(record.holder, nodeSession, readSentAt);
  if (verdict === 'gone') return { record: { ...record, released: true }, pushed: false };
  return { record: { ...record, ttlMs: NEVER_BY_TIME_MS }, pushed: true };
}
