import { createActor, fromPromise, type InspectionEvent, type Observer } from 'xstate';
import type { LeaseStore } from '../adapters/lease/types.ts';
import type { Clock } from '../clock.ts';
import {
  assertValidTiming,
  type CatchUpIntent,
  type CatchUpOutput,
  type DemoteReason,
  defaultLeaseTiming,
  type LeaseTiming,
  roleMachine,
} from '../machines/role.ts';
import { leaseActors } from './lease-actors.ts';
import type { NodeLiveness, OwnershipCache } from './node-liveness.ts';

/** What the replication layer plugs into a database's role machine. */
export interface DatabaseHooks {
  /** Before the first lease read: open or restore the local copy. */
  bootstrap?(db: string, signal: AbortSignal): Promise<void>;
  /** Bring the local copy up to the latest state in storage (before a claim, or when behind). */
  catchUp?(db: string, intent: CatchUpIntent, signal: AbortSignal): Promise<CatchUpOutput>;
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
  nodeLeases?: { liveness: NodeLiveness; ownership: OwnershipCache } | undefined;
  inspect?: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
}

/** One database's root actor: the role machine wired to its lease store and replication hooks. */
export function createDatabaseActor(options: DatabaseActorOptions) {
  const timing = { ...defaultLeaseTiming, ...options.timing };
  assertValidTiming(timing);
  const hooks = options.hooks ?? {};
  const logic = roleMachine.provide({
    actors: {
      ...leaseActors({
        store: options.leases,
        clock: options.clock,
        keyOf: options.leaseKeyOf ?? ((db) => db),
        callTimeoutMs: options.leaseCallTimeoutMs ?? timing.renewIntervalMs,
        nodeLeases: options.nodeLeases && {
          ...options.nodeLeases,
          nodeId: options.node,
          session: options.session,
        },
      }),
      bootstrap: fromPromise<void, { db: string }>(async ({ input, signal }) => {
        await hooks.bootstrap?.(input.db, signal);
      }),
      catchUp: fromPromise<CatchUpOutput, { db: string; intent: CatchUpIntent }>(
        async ({ input, signal }) =>
          hooks.catchUp ? hooks.catchUp(input.db, input.intent, signal) : {},
      ),
      demote: fromPromise<void, { db: string; reason: DemoteReason }>(async ({ input, signal }) => {
        await hooks.demote?.(input.db, input.reason, signal);
      }),
    },
  });
  const input = { db: options.db, node: options.node, session: options.session, timing };
  return createActor(logic, {
    id: options.db,
    clock: options.clock,
    input: options.address === undefined ? input : { ...input, address: options.address },
    ...(options.inspect ? { inspect: options.inspect } : {}),
  });
}

export type DatabaseActor = ReturnType<typeof createDatabaseActor>;
