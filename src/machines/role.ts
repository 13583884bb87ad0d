import { assign, fromPromise, raise, type SnapshotFrom, setup } from 'xstate';
import type { Role } from '../api-types.ts';
import { FencedError, InternalError, InvalidArgumentError } from '../errors.ts';
import { type LeaseRecord, MAX_TTL_MS } from '../wire/lease-record.ts';

/**
 * The role machine of one database on one node. It is pure: every store call is a named actor
 * the runtime provides, and every time it needs arrives inside an actor's output (`at`, `sentAt`,
 * read from the node's monotonic clock), so the same machine runs under a simulated clock.
 *
 * Safety rests on two clocks never being compared:
 * - a leader may commit until `sentAt(last successful renewal) + ttl - margin` on its own clock (I5);
 * - a follower claims only after the record's revision stayed unchanged for `ttl + margin` on its
 *   own clock, counted from the moment it first saw that revision, and only by CAS on it.
 * Every new holder writes `epoch + 1` (I2); a release is a CAS write, never a delete.
 *
 * A new leader starts in `leader.writes.starting` (its files are being opened) and commits only
 * in `leader.writes.serving`; both are the public role `leader`.
 */

export interface LeaseTiming {
  /** Lease lifetime after each renewal. */
  ttlMs: number;
  /** Leader renews this often. */
  renewIntervalMs: number;
  /** Leader retries a failed renewal this soon. */
  retryIntervalMs: number;
  /** Follower reads the lease this often. */
  pollIntervalMs: number;
  /** Safety margin against clock-rate drift: a leader stops `margin` early, a follower waits `margin` late. */
  marginMs: number;
}

/** Lease durations and intervals used when `NodeOptions.timing` leaves them out. */
export const defaultLeaseTiming: LeaseTiming = {
  ttlMs: 5000,
  renewIntervalMs: 1000,
  retryIntervalMs: 250,
  pollIntervalMs: 1000,
  marginMs: 500,
};

/** Rejects timings under which a leader could never renew in time, or a lease could never be read back. */
export function assertValidTiming(timing: LeaseTiming): void {
  const { ttlMs, renewIntervalMs, retryIntervalMs, pollIntervalMs, marginMs } = timing;
  for (const [name, value] of Object.entries(timing)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new InvalidArgumentError(
        `lease timing ${name} must be a positive integer of ms, got ${value}`,
      );
    }
  }
  const problem =
    ttlMs > MAX_TTL_MS
      ? `ttlMs must be at most ${MAX_TTL_MS}`
      : marginMs * 2 >= ttlMs
        ? 'marginMs must be less than half of ttlMs'
        : renewIntervalMs >= ttlMs - marginMs
          ? 'renewIntervalMs must be less than ttlMs - marginMs, or the lease lapses between renewals'
          : retryIntervalMs > renewIntervalMs
            ? 'retryIntervalMs must not exceed renewIntervalMs'
            : pollIntervalMs > ttlMs
              ? 'pollIntervalMs must not exceed ttlMs'
              : null;
  if (problem)
    throw new InvalidArgumentError(`invalid lease timing ${JSON.stringify(timing)}: ${problem}`);
}

export type ReadLeaseOutput =
  | { outcome: 'absent'; at: number }
  | {
      outcome: 'record';
      record: LeaseRecord;
      revision: string;
      at: number;
      /** The runtime sends `lease.changed` when this record or its holder's liveness changes: no need to poll. */
      pushed?: boolean;
    }
  | { outcome: 'invalid'; revision: string; reason: string; at: number }
  | { outcome: 'unavailable'; reason: string; at: number };

export interface WriteLeaseInput {
  db: string;
  /** CAS condition: the revision the key must still have, or `null` for "must not exist". */
  expectedRevision: string | null;
  record: LeaseRecord;
}

export type WriteLeaseOutput =
  | {
      outcome: 'written';
      revision: string;
      sentAt: number;
      at: number;
      /** Validity comes from the node's own lease (node-level leases): never renewed per database. */
      delegated?: boolean;
    }
  | { outcome: 'conflict'; at: number }
  | { outcome: 'unavailable'; reason: string; at: number };

export type CatchUpIntent = 'claim' | 'sync';

export interface CatchUpOutput {
  /** The highest epoch found in storage: a claim must go above it even if the lease record was lost. */
  epochFloor?: number;
}

export type DemoteReason = 'lost' | 'expired' | 'handoff' | 'stop';

export interface RoleInput {
  db: string;
  node: string;
  session: string;
  timing: LeaseTiming;
  address?: string;
}

export interface Observation {
  /** `null` when the key was absent. */
  revision: string | null;
  record: LeaseRecord | null;
  firstSeenAt: number;
  pushed: boolean;
}

export interface HeldLease {
  revision: string;
  epoch: number;
  /**
   * On this node's clock: commits are allowed strictly before this instant. Infinite when
   * `delegated`: the runtime's node lease bounds commits instead.
   */
  validUntil: number;
  delegated: boolean;
}

export interface RoleContext extends RoleInput {
  observed: Observation | null;
  lease: HeldLease | null;
  intent: CatchUpIntent;
  epochFloor: number;
  /** Clock reading carried by the event that caused the latest transition; delays count from it. */
  lastAt: number;
  demoteReason: DemoteReason | null;
  stopping: boolean;
  /** Why the lease could not be read, if it could not; shown in status, never overwritten by a claim. */
  leaseProblem: string | null;
  /**
   * Why the lease record is unusable (malformed), until a read finds a usable record or none:
   * unlike a store that does not answer, it lasts until someone repairs the record.
   */
  leaseRecordProblem: string | null;
}

export type RoleEvent =
  | { type: 'stop' }
  | { type: 'handoff' }
  /** Storage showed a newer epoch's changeset: the lease is someone else's, whatever it says. */
  | { type: 'fenced' }
  | { type: 'lease.changed' }
  /** The node-level lease lapsed on this node's clock: its leaders stop (node-level leases). */
  | { type: 'lease.expired' }
  | { type: 'replication.behind' }
  | { type: 'lease.renewed' };

/** Stands in for an actor the runtime must provide with `roleMachine.provide({ actors })`. */
function required<TOutput, TInput>(name: string) {
  return fromPromise<TOutput, TInput>(async () => {
    throw new InternalError(`actor "${name}" was not provided to the role machine`);
  });
}

/** Folds a read into the observation, keeping `firstSeenAt` while the revision is unchanged. */
function observe(previous: Observation | null, read: ReadLeaseOutput): Observation | null {
  if (read.outcome === 'unavailable') return previous;
  const revision = read.outcome === 'absent' ? null : read.revision;
  const record = read.outcome === 'record' ? read.record : null;
  const pushed = read.outcome === 'record' && read.pushed === true;
  if (previous && previous.revision === revision) return { ...previous, record, pushed };
  return { revision, record, firstSeenAt: read.at, pushed };
}

function isClaimable(context: RoleContext, read: ReadLeaseOutput): boolean {
  if (read.outcome === 'absent') return true;
  if (read.outcome !== 'record') return false;
  const { record } = read;
  const own = isOwnRecord(context, record);
  if (record.released !== own) return true;
  // Someone else's live lease, or one we just gave away (others get it first): claimable only
  // once it has stayed unchanged for ttl + margin.
  const observed = observe(context.observed, read);
  return (
    observed !== null && read.at - observed.firstSeenAt >= record.ttlMs + context.timing.marginMs
  );
}

/** A claim or renewal of ours whose answer we never heard: only a CAS renewal may adopt it. */
function isOwnRecord(context: RoleContext, record: LeaseRecord): boolean {
  return record.holder === context.node && record.session === context.session;
}

function claimRecord(context: RoleContext): {
  expectedRevision: string | null;
  record: LeaseRecord;
} {
  const observed = context.observed;
  const previous = observed?.record ?? null;
  // Only a claim of ours that never got going: once the log holds changesets of that epoch (a
  // leadership that ended without releasing), reusing it would be refused by storage forever.
  const adopt =
    previous !== null &&
    !previous.released &&
    isOwnRecord(context, previous) &&
    previous.epoch > context.epochFloor;
  const epoch = adopt ? previous.epoch : Math.max(previous?.epoch ?? 0, context.epochFloor) + 1;
  return {
    expectedRevision: observed?.revision ?? null,
    record: holderRecord(context, epoch, false),
  };
}

function holderRecord(context: RoleContext, epoch: number, released: boolean): LeaseRecord {
  const record: LeaseRecord = {
    holder: context.node,
    session: context.session,
    epoch,
    ttlMs: context.timing.ttlMs,
    released,
  };
  if (context.address !== undefined) record.address = context.address;
  return record;
}

function heldLeaseFrom(
  context: RoleContext,
  written: { revision: string; sentAt: number; delegated?: boolean },
  epoch: number,
): HeldLease {
  const { ttlMs, marginMs } = context.timing;
  const delegated = written.delegated === true;
  return {
    revision: written.revision,
    epoch,
    validUntil: delegated ? Number.POSITIVE_INFINITY : written.sentAt + ttlMs - marginMs,
    delegated,
  };
}

export const roleMachine = setup({
  types: {
    context: {} as RoleContext,
    events: {} as RoleEvent,
    input: {} as RoleInput,
  },
  actors: {
    bootstrap: required<void, { db: string }>('bootstrap'),
    readLease: required<ReadLeaseOutput, { db: string }>('readLease'),
    claimLease: required<WriteLeaseOutput, WriteLeaseInput>('claimLease'),
    renewLease: required<WriteLeaseOutput, WriteLeaseInput>('renewLease'),
    releaseLease: required<WriteLeaseOutput, WriteLeaseInput>('releaseLease'),
    catchUp: required<CatchUpOutput, { db: string; intent: CatchUpIntent }>('catchUp'),
    demote: required<void, { db: string; reason: DemoteReason }>('demote'),
    /**
     * Opens the leader's files of `epoch` (its epoch-start record first); retries what passes by
     * itself. Rejects with `FencedError` when storage holds a newer epoch, with another error when
     * this node cannot take over (e.g. its copy is behind storage): it gives the claim back.
     */
    startLeading: required<void, { db: string; epoch: number }>('startLeading'),
  },
  actions: {
    takeClaimedLease: assign(({ context }, claimed: WriteLeaseOutput) => ({
      lease:
        claimed.outcome === 'written'
          ? heldLeaseFrom(context, claimed, claimRecord(context).record.epoch)
          : null,
      lastAt: claimed.at,
      observed: null,
    })),
  },
  guards: {
    readIsInvalid: (_, read: ReadLeaseOutput) => read.outcome === 'invalid',
    readIsClaimable: ({ context }, read: ReadLeaseOutput) => isClaimable(context, read),
    wasWritten: (_, write: WriteLeaseOutput) => write.outcome === 'written',
    wasWrittenDelegated: (_, write: WriteLeaseOutput) =>
      write.outcome === 'written' && write.delegated === true,
    wasConflict: (_, write: WriteLeaseOutput) => write.outcome === 'conflict',
    /** On an actor's error event: storage holds a newer epoch. */
    isFenced: ({ event }) => (event as { error?: unknown }).error instanceof FencedError,
    intentIsClaim: ({ context }) => context.intent === 'claim',
    isStopping: ({ context }) => context.stopping,
    mustRelease: ({ context }) => context.lease !== null && context.demoteReason !== 'lost',
    leaseIsDelegated: ({ context }) => context.lease?.delegated === true,
    waitsForPush: ({ context }) =>
      context.observed?.pushed === true && context.leaseProblem === null,
  },
  delays: {
    renewInterval: ({ context }) => context.timing.renewIntervalMs,
    retryInterval: ({ context }) => context.timing.retryIntervalMs,
    /** Until the lease stops being valid on this node's clock. */
    validity: ({ context }) =>
      Math.min(2 ** 30, Math.max(0, (context.lease?.validUntil ?? 0) - context.lastAt)),
    /** The next poll, or sooner if the observed lease can be judged expired before then. */
    nextLeaseCheck: ({ context }) => {
      const { pollIntervalMs, marginMs } = context.timing;
      const record = context.observed?.record;
      if (!context.observed || !record || record.released !== isOwnRecord(context, record))
        return pollIntervalMs;
      const expiresAt = context.observed.firstSeenAt + record.ttlMs + marginMs;
      return Math.max(1, Math.min(pollIntervalMs, expiresAt - context.lastAt));
    },
  },
}).createMachine({
  id: 'role',
  context: ({ input }) => ({
    ...input,
    observed: null,
    lease: null,
    intent: 'sync',
    epochFloor: 0,
    lastAt: 0,
    demoteReason: null,
    stopping: false,
    leaseProblem: null,
    leaseRecordProblem: null,
  }),
  initial: 'bootstrapping',
  on: {
    stop: { target: '.stopped' },
  },
  states: {
    bootstrapping: {
      invoke: {
        id: 'bootstrap',
        src: 'bootstrap',
        input: ({ context }) => ({ db: context.db }),
        onDone: { target: 'follower' },
      },
    },

    follower: {
      entry: assign({ lease: null, demoteReason: null }),
      initial: 'reading',
      on: {
        'replication.behind': { target: 'catchingUp', actions: assign({ intent: 'sync' }) },
      },
      states: {
        reading: {
          // A change heard while a read is under way may postdate what that read judged.
          on: { 'lease.changed': { target: 'reading', reenter: true } },
          invoke: {
            id: 'readLease',
            src: 'readLease',
            input: ({ context }) => ({ db: context.db }),
            onDone: [
              {
                guard: { type: 'readIsInvalid', params: ({ event }) => event.output },
                target: 'waiting',
                actions: assign({
                  observed: ({ context, event }) => observe(context.observed, event.output),
                  lastAt: ({ event }) => event.output.at,
                  leaseProblem: ({ event }) =>
                    event.output.outcome === 'invalid' ? event.output.reason : null,
                  leaseRecordProblem: ({ event }) =>
                    event.output.outcome === 'invalid' ? event.output.reason : null,
                }),
              },
              {
                guard: { type: 'readIsClaimable', params: ({ event }) => event.output },
                target: '#role.catchingUp',
                actions: assign({
                  observed: ({ context, event }) => observe(context.observed, event.output),
                  lastAt: ({ event }) => event.output.at,
                  leaseProblem: null,
                  leaseRecordProblem: null,
                  intent: 'claim',
                }),
              },
              {
                target: 'waiting',
                actions: assign({
                  observed: ({ context, event }) => observe(context.observed, event.output),
                  lastAt: ({ event }) => event.output.at,
                  leaseProblem: ({ event }) =>
                    event.output.outcome === 'unavailable' ? event.output.reason : null,
                  // A store that does not answer says nothing of the record.
                  leaseRecordProblem: ({ context, event }) =>
                    event.output.outcome === 'unavailable' ? context.leaseRecordProblem : null,
                }),
              },
            ],
            onError: { target: 'waiting' },
          },
        },
        waiting: {
          on: { 'lease.changed': 'reading' },
          initial: 'timed',
          states: {
            timed: {
              always: { guard: 'waitsForPush', target: 'pushed' },
              after: { nextLeaseCheck: '#role.follower.reading' },
            },
            // No timer: the runtime tells of every change (node-level leases).
            pushed: {},
          },
        },
      },
    },

    catchingUp: {
      invoke: {
        id: 'catchUp',
        src: 'catchUp',
        input: ({ context }) => ({ db: context.db, intent: context.intent }),
        onDone: [
          {
            guard: 'intentIsClaim',
            target: 'candidate',
            actions: assign({
              epochFloor: ({ context, event }) =>
                Math.max(context.epochFloor, event.output.epochFloor ?? 0),
            }),
          },
          { target: 'follower' },
        ],
        // Wait a poll before trying again: a failing catch-up must not spin.
        onError: { target: '#role.follower.waiting' },
      },
    },

    candidate: {
      invoke: {
        id: 'claimLease',
        src: 'claimLease',
        input: ({ context }) => ({ db: context.db, ...claimRecord(context) }),
        onDone: [
          {
            // The node renews one record for all its databases: straight to the delegated
            // states, with no renewal or validity timer set up only to be cancelled.
            guard: { type: 'wasWrittenDelegated', params: ({ event }) => event.output },
            target: ['#role.leader.renewal.delegated', '#role.leader.validity.delegated'],
            actions: { type: 'takeClaimedLease', params: ({ event }) => event.output },
          },
          {
            guard: { type: 'wasWritten', params: ({ event }) => event.output },
            target: 'leader',
            actions: { type: 'takeClaimedLease', params: ({ event }) => event.output },
          },
          { target: 'follower', actions: assign({ lastAt: ({ event }) => event.output.at }) },
        ],
        onError: { target: 'follower' },
      },
    },

    leader: {
      type: 'parallel',
      on: {
        handoff: { target: 'demoting', actions: assign({ demoteReason: 'handoff' }) },
        fenced: { target: 'demoting', actions: assign({ demoteReason: 'lost' }) },
        'lease.expired': { target: 'demoting', actions: assign({ demoteReason: 'expired' }) },
        stop: { target: 'demoting', actions: assign({ demoteReason: 'stop', stopping: true }) },
      },
      states: {
        renewal: {
          initial: 'idle',
          states: {
            idle: {
              always: { guard: 'leaseIsDelegated', target: 'delegated' },
              after: { renewInterval: 'renewing' },
            },
            // The node renews one record for all its databases.
            delegated: {},
            renewing: {
              invoke: {
                id: 'renewLease',
                src: 'renewLease',
                input: ({ context }) => {
                  const lease = context.lease as HeldLease;
                  return {
                    db: context.db,
                    expectedRevision: lease.revision,
                    record: holderRecord(context, lease.epoch, false),
                  };
                },
                onDone: [
                  {
                    guard: { type: 'wasWritten', params: ({ event }) => event.output },
                    target: 'idle',
                    actions: [
                      assign({
                        lease: ({ context, event }) => {
                          const lease = context.lease as HeldLease;
                          return event.output.outcome === 'written'
                            ? heldLeaseFrom(context, event.output, lease.epoch)
                            : lease;
                        },
                        lastAt: ({ event }) => event.output.at,
                      }),
                      raise({ type: 'lease.renewed' }),
                    ],
                  },
                  {
                    guard: { type: 'wasConflict', params: ({ event }) => event.output },
                    target: '#role.demoting',
                    actions: assign({ demoteReason: 'lost' }),
                  },
                  { target: 'backoff' },
                ],
                onError: { target: 'backoff' },
              },
            },
            backoff: { after: { retryInterval: 'renewing' } },
          },
        },
        validity: {
          initial: 'valid',
          states: {
            valid: {
              always: { guard: 'leaseIsDelegated', target: 'delegated' },
              after: {
                validity: {
                  target: '#role.demoting',
                  actions: assign({ demoteReason: 'expired' }),
                },
              },
              on: { 'lease.renewed': { target: 'valid', reenter: true } },
            },
            // Bounded by the node's lease, which the runtime checks at every commit.
            delegated: {},
          },
        },
        writes: {
          initial: 'starting',
          states: {
            starting: {
              invoke: {
                id: 'startLeading',
                src: 'startLeading',
                input: ({ context }) => ({
                  db: context.db,
                  epoch: (context.lease as HeldLease).epoch,
                }),
                onDone: { target: 'serving' },
                onError: [
                  {
                    guard: 'isFenced',
                    target: '#role.demoting',
                    actions: assign({ demoteReason: 'lost' }),
                  },
                  // Not writable here: give the claim back rather than hold it.
                  { target: '#role.demoting', actions: assign({ demoteReason: 'handoff' }) },
                ],
              },
            },
            serving: {},
          },
        },
      },
    },

    demoting: {
      on: { stop: { actions: assign({ stopping: true }) } },
      initial: 'stoppingWrites',
      states: {
        stoppingWrites: {
          invoke: {
            id: 'demote',
            src: 'demote',
            input: ({ context }) => ({ db: context.db, reason: context.demoteReason ?? 'stop' }),
            onDone: [
              { guard: 'mustRelease', target: 'releasing' },
              { guard: 'isStopping', target: '#role.stopped' },
              { target: '#role.follower' },
            ],
          },
        },
        releasing: {
          invoke: {
            id: 'releaseLease',
            src: 'releaseLease',
            input: ({ context }) => {
              const lease = context.lease as HeldLease;
              return {
                db: context.db,
                expectedRevision: lease.revision,
                record: holderRecord(context, lease.epoch, true),
              };
            },
            onDone: [
              { guard: 'isStopping', target: '#role.stopped' },
              { target: '#role.follower' },
            ],
            onError: [
              { guard: 'isStopping', target: '#role.stopped' },
              { target: '#role.follower' },
            ],
          },
        },
      },
    },

    stopped: {
      type: 'final',
      entry: assign({ lease: null }),
    },
  },
});

export type RoleMachine = typeof roleMachine;
export type RoleSnapshot = SnapshotFrom<RoleMachine>;

export function roleOf(snapshot: RoleSnapshot): Role {
  const value = snapshot.value;
  const top = typeof value === 'string' ? value : Object.keys(value)[0];
  switch (top) {
    case 'catchingUp':
      return 'catching-up';
    case 'bootstrapping':
    case 'follower':
    case 'candidate':
    case 'leader':
    case 'demoting':
    case 'stopped':
      return top;
    default:
      throw new InternalError(`unknown role state ${JSON.stringify(value)}`);
  }
}

/**
 * The write gate: true only while this node leads, its files are open (`leader.writes.serving`)
 * and its lease is valid on its own clock. Every commit must pass it at the moment it becomes
 * durable, whatever the timers are doing.
 */
export function canCommit(snapshot: RoleSnapshot, now: number): boolean {
  const lease = snapshot.context.lease;
  return (
    snapshot.status === 'active' &&
    snapshot.matches({ leader: { writes: 'serving' } }) &&
    lease !== null &&
    now < lease.validUntil
  );
}
