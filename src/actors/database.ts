import { createActor, fromPromise, type InspectionEvent, type Observer } from 'xstate';
import type { LeaseStore } from '../adapters/lease/types.ts';
import type { Clock } from '../clock.ts';
import { InternalError } from '../errors.ts';
import {
  assertValidTiming,
  type CatchUpIntent,
  type CatchUpOutput,
  type DemoteReason,
  defaultLeaseTiming,
  type LeaseTiming,
  type ReadLeaseOutput,
  roleMachine,
  type WriteLeaseInput,
  type WriteLeaseOutput,
} from '../machines/role.ts';
import { leaseActors } from './lease-actors.ts';
import type { NodeLeaseServices } from './node-liveness.ts';

/** What the replication layer plugs into a database's role machine. */
export interface DatabaseHooks {
  /** Before the first lease read: open or restore the local copy. */
  bootstrap?(db: string, signal: AbortSignal): Promise<void>;
  /** Bring the local copy up to the latest state in storage (before a claim, or when behind). */
  catchUp?(db: string, intent: CatchUpIntent, signal: AbortSignal): Promise<CatchUpOutput>;
  /** On becoming leader of `epoch`: open the leader's files; commits wait until this resolves. */
  startLeading?(db: string, epoch: number, signal: AbortSignal): Promise<void>;
  /** After writes have stopped: ship what is unshipped, or park it. */
  demote?(db: string, reason: DemoteReason, signal: AbortSignal): Promise<void>;
}

export interface DatabaseActorOptions {
  db: string;
  node: string;
  /** Identity of this incarnation; a fresh one each time the actor is (re)started. */
  session: string;
  clock: Clock;
  leases: LeaseStore;
  timing?: Partial<LeaseTiming>;
  /** Lease key of a database (default: the database name). */
  leaseKeyOf?: (db: string) => string;
  /** Default: the renew interval, so a hung call never delays the next attempt by more than that. */
  leaseCallTimeoutMs?: number;
  hooks?: DatabaseHooks;
  address?: string;
  /** Node-level leases: ownership records kept alive by the node's own liveness record. */
  nodeLeases?: NodeLeaseServices | undefined;
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
}

type ActorName =
  | 'readLease'
  | 'claimLease'
  | 'renewLease'
  | 'releaseLease'
  | 'bootstrap'
  | 'catchUp'
  | 'demote'
  | 'startLeading';
// biome-ignore lint/suspicious/noExplicitAny: the arguments xstate passes to a promise creator
type PromiseCreator = (args: any) => Promise<unknown>;

/** Each database actor's own implementations, found through its actor system. */
const implementationsBySystem = new WeakMap<object, Record<ActorName, PromiseCreator>>();

/** Runs the implementation the invoking database actor registered for `name`. */
function dispatch<TOutput, TInput>(name: ActorName) {
  return fromPromise<TOutput, TInput>(async (args) => {
    const run = implementationsBySystem.get(args.system)?.[name];
    if (!run) throw new InternalError(`actor "${name}" was not provided to this database actor`);
    return (await run(args)) as TOutput;
  });
}

/**
 * One machine for every database actor: `provide()` copies every state node (about 30 KB), so a
 * machine per database would dominate an idle database's memory.
 */
let sharedLogic: ReturnType<typeof provideShared> | undefined;
function provideShared() {
  return roleMachine.provide({
    actors: {
      readLease: dispatch<ReadLeaseOutput, { db: string }>('readLease'),
      claimLease: dispatch<WriteLeaseOutput, WriteLeaseInput>('claimLease'),
      renewLease: dispatch<WriteLeaseOutput, WriteLeaseInput>('renewLease'),
      releaseLease: dispatch<WriteLeaseOutput, WriteLeaseInput>('releaseLease'),
      bootstrap: dispatch<void, { db: string }>('bootstrap'),
      catchUp: dispatch<CatchUpOutput, { db: string; intent: CatchUpIntent }>('catchUp'),
      demote: dispatch<void, { db: string; reason: DemoteReason }>('demote'),
      startLeading: dispatch<void, { db: string; epoch: number }>('startLeading'),
    },
  });
}

/** One database's root actor: the role machine wired to its lease store and replication hooks. */
export function createDatabaseActor(options: DatabaseActorOptions) {
  const timing = { ...defaultLeaseTiming, ...options.timing };
  assertValidTiming(timing);
  const hooks = options.hooks ?? {};
  const lease = leaseActors({
    store: options.leases,
    clock: options.clock,
    keyOf: options.leaseKeyOf ?? ((db) => db),
    callTimeoutMs: options.leaseCallTimeoutMs ?? timing.renewIntervalMs,
    nodeLeases: options.nodeLeases && {
      ...options.nodeLeases,
      nodeId: options.node,
      session: options.session,
    },
  });
  sharedLogic ??= provideShared();
  const input = { db: options.db, node: options.node, session: options.session, timing };
  const actor = createActor(sharedLogic, {
    id: options.db,
    clock: options.clock,
    input: options.address === undefined ? input : { ...input, address: options.address },
    ...(options.inspect ? { inspect: options.inspect } : {}),
  });
  implementationsBySystem.set(actor.system, {
    readLease: lease.readLease,
    claimLease: lease.claimLease,
    renewLease: lease.renewLease,
    releaseLease: lease.releaseLease,
    bootstrap: async ({ input, signal }) => {
      await hooks.bootstrap?.(input.db, signal);
    },
    catchUp: async ({ input, signal }) =>
      hooks.catchUp ? hooks.catchUp(input.db, input.intent, signal) : {},
    demote: async ({ input, signal }) => {
      await hooks.demote?.(input.db, input.reason, signal);
    },
    startLeading: async ({ input, signal }) => {
      await hooks.startLeading?.(input.db, input.epoch, signal);
    },
  });
  return actor;
}

export type DatabaseActor = ReturnType<typeof createDatabaseActor>;
