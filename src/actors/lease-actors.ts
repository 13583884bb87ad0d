import { fromPromise } from 'xstate';
import type { LeaseStore } from '../adapters/lease/types.ts';
import { type Clock, withTimeout } from '../clock.ts';
import { HadbError } from '../errors.ts';
import type { ReadLeaseOutput, WriteLeaseInput, WriteLeaseOutput } from '../machines/role.ts';
import { decodeLeaseRecord, encodeLeaseRecord } from '../wire/lease-record.ts';

export interface LeaseActorOptions {
  store: LeaseStore;
  clock: Clock;
  /** The lease key of a database. */
  keyOf: (db: string) => string;
  /** A store call that has not answered by then counts as unavailable; its write may still land. */
  callTimeoutMs: number;
}

/**
 * The role machine's lease actors over a {@link LeaseStore}. Store failures become outcomes, not
 * errors, so the machine decides what they mean; every outcome carries clock readings.
 */
export function leaseActors({ store, clock, keyOf, callTimeoutMs }: LeaseActorOptions) {
  const call = <T>(promise: Promise<T>, what: string) =>
    withTimeout(clock, promise, callTimeoutMs, what);

  const readLease = fromPromise<ReadLeaseOutput, { db: string }>(async ({ input }) => {
    const key = keyOf(input.db);
    let entry: Awaited<ReturnType<LeaseStore['get']>>;
    try {
      entry = await call(store.get(key), `reading lease ${key}`);
    } catch (error) {
      return { outcome: 'unavailable', reason: describe(error), at: clock.now() };
    }
    const at = clock.now();
    if (entry === null) return { outcome: 'absent', at };
    try {
      return {
        outcome: 'record',
        record: decodeLeaseRecord(entry.value),
        revision: entry.revision,
        at,
      };
    } catch (error) {
      return { outcome: 'invalid', revision: entry.revision, reason: describe(error), at };
    }
  });

  const writeLease = fromPromise<WriteLeaseOutput, WriteLeaseInput>(({ input }) =>
    writeOnce(input),
  );

  async function writeOnce(input: WriteLeaseInput): Promise<WriteLeaseOutput> {
    const key = keyOf(input.db);
    const value = encodeLeaseRecord(input.record);
    const sentAt = clock.now();
    try {
      const result = await call(
        input.expectedRevision === null
          ? store.create(key, value)
          : store.update(key, value, input.expectedRevision),
        `writing lease ${key}`,
      );
      const at = clock.now();
      return result.ok
        ? { outcome: 'written', revision: result.revision, sentAt, at }
        : { outcome: 'conflict', at };
    } catch (error) {
      return { outcome: 'unavailable', reason: describe(error), at: clock.now() };
    }
  }

  /**
   * A release that meets a conflict re-reads once: a renewal still in flight when the leader
   * stopped may have moved the revision on, and the lease is still ours to give up.
   */
  const releaseLease = fromPromise<WriteLeaseOutput, WriteLeaseInput>(async ({ input }) => {
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
  });

  return { readLease, claimLease: writeLease, renewLease: writeLease, releaseLease };
}

function describe(error: unknown): string {
  if (error instanceof HadbError) return error.message;
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
