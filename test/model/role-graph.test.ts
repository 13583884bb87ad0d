import { describe, expect, it } from 'vitest';
import type { AnyStateNode, EventFromLogic } from 'xstate';
import { getAdjacencyMap, getShortestPaths } from 'xstate/graph';
import { FencedError } from '../../src/errors.ts';
import { type RoleInput, type RoleSnapshot, roleMachine } from '../../src/machines/role.ts';
import type { LeaseRecord } from '../../src/wire/lease-record.ts';

type Event = EventFromLogic<typeof roleMachine>;

const input: RoleInput = {
  db: 'db',
  node: 'me',
  session: 'me#1',
  timing: {
    ttlMs: 1000,
    renewIntervalMs: 250,
    retryIntervalMs: 100,
    pollIntervalMs: 200,
    marginMs: 100,
  },
};
const other: LeaseRecord = {
  holder: 'other',
  session: 'other#1',
  epoch: 3,
  ttlMs: 1000,
  released: false,
};
const mine: LeaseRecord = { ...other, holder: 'me', session: 'me#1' };

const done = (id: string, output?: unknown) =>
  ({ type: `xstate.done.actor.${id}`, output }) as unknown as Event;
const after = (delay: string, stateId: string) =>
  ({ type: `xstate.after.${delay}.${stateId}` }) as unknown as Event;
const failed = (id: string) =>
  ({ type: `xstate.error.actor.${id}`, error: new Error('boom') }) as unknown as Event;

/** Every outcome each actor can report, every timer, every external event. */
function allEvents(claimOutcomes: 'all' | 'never-written'): Event[] {
  const write = (id: string) => [
    ...(id === 'claimLease' && claimOutcomes === 'never-written'
      ? []
      : [
          done(id, { outcome: 'written', revision: '9', sentAt: 100, at: 101 }),
          // Node-level leases: validity comes from the node's own record.
          done(id, { outcome: 'written', revision: '9', sentAt: 100, at: 101, delegated: true }),
        ]),
    done(id, { outcome: 'conflict', at: 101 }),
    done(id, { outcome: 'unavailable', reason: 'down', at: 101 }),
    failed(id),
  ];
  return [
    done('bootstrap'),
    done('readLease', { outcome: 'absent', at: 10 }),
    done('readLease', { outcome: 'record', record: other, revision: '1', at: 10 }),
    done('readLease', { outcome: 'record', record: other, revision: '1', at: 2000 }),
    done('readLease', {
      outcome: 'record',
      record: { ...other, released: true },
      revision: '2',
      at: 10,
    }),
    done('readLease', { outcome: 'record', record: mine, revision: '3', at: 10 }),
    done('readLease', { outcome: 'record', record: other, revision: '5', at: 10, pushed: true }),
    done('readLease', { outcome: 'invalid', revision: '4', reason: 'garbage', at: 10 }),
    done('readLease', { outcome: 'unavailable', reason: 'down', at: 10 }),
    done('catchUp', {}),
    failed('catchUp'),
    ...write('claimLease'),
    ...write('renewLease'),
    ...write('releaseLease'),
    done('demote'),
    done('startLeading'),
    failed('startLeading'),
    {
      type: 'xstate.error.actor.startLeading',
      error: new FencedError(4, 'a newer epoch is in storage'),
    } as unknown as Event,
    after('nextLeaseCheck', 'role.follower.waiting'),
    after('renewInterval', 'role.leader.renewal.idle'),
    after('retryInterval', 'role.leader.renewal.backoff'),
    after('validity', 'role.leader.validity.valid'),
    { type: 'stop' },
    { type: 'handoff' },
    { type: 'lease.changed' },
    { type: 'lease.expired' },
    { type: 'fenced' },
    { type: 'replication.behind' },
  ];
}

function atomicStateIds(node: AnyStateNode): string[] {
  const children = Object.values(node.states) as AnyStateNode[];
  if (children.length === 0) return [node.id];
  return children.flatMap(atomicStateIds);
}

function activeAtomicIds(snapshot: RoleSnapshot): string[] {
  return snapshot._nodes.filter((n) => Object.keys(n.states).length === 0).map((n) => n.id);
}

const isLeader = (snapshot: RoleSnapshot) => snapshot.matches('leader');

type Edge = { event: { type: string; output?: { outcome?: string } }; state: RoleSnapshot };
const edges = (transitions: object) => Object.values(transitions) as Edge[];

describe('role machine graph (xstate/graph, exhaustive)', () => {
  it('reaches every state of the machine', () => {
    const paths = getShortestPaths(roleMachine, { events: allEvents('all'), input });
    const reached = new Set(paths.flatMap((path) => activeAtomicIds(path.state)));
    const expected = atomicStateIds(roleMachine.root);
    expect(expected.length).toBeGreaterThanOrEqual(10);
    expect([...reached].sort()).toEqual([...expected].sort());
  });

  it('enters leader only through a successful claim', () => {
    const adjacency = getAdjacencyMap(roleMachine, { events: allEvents('all'), input });
    let entries = 0;
    for (const { state, transitions } of Object.values(adjacency)) {
      if (isLeader(state)) continue;
      for (const { event, state: next } of edges(transitions)) {
        if (!isLeader(next)) continue;
        entries += 1;
        expect(event.type).toBe('xstate.done.actor.claimLease');
        expect(event.output?.outcome).toBe('written');
        // A delegated lease is bounded by the node's own record, which the runtime checks.
        const delegated = (event.output as { delegated?: boolean }).delegated === true;
        expect(next.context.lease?.delegated).toBe(delegated);
        expect(next.context.lease?.validUntil).toBe(
          delegated ? Number.POSITIVE_INFINITY : 100 + 1000 - 100,
        );
        // And it never renews on its own: no renewal or validity timer of the database's.
        const own = { leader: { renewal: 'idle', validity: 'valid' } } as const;
        const byNode = { leader: { renewal: 'delegated', validity: 'delegated' } } as const;
        expect(next.matches(delegated ? byNode : own), JSON.stringify(next.value)).toBe(true);
      }
    }
    expect(entries).toBeGreaterThan(0);
  });

  it('never reaches leader when no claim succeeds', () => {
    const paths = getShortestPaths(roleMachine, { events: allEvents('never-written'), input });
    expect(paths.length).toBeGreaterThan(5);
    expect(paths.some((path) => isLeader(path.state))).toBe(false);
  });

  it('never claims a record it cannot read', () => {
    const adjacency = getAdjacencyMap(roleMachine, { events: allEvents('all'), input });
    for (const { state, transitions } of Object.values(adjacency)) {
      for (const { event, state: next } of edges(transitions)) {
        const readInvalid =
          event.type === 'xstate.done.actor.readLease' && event.output?.outcome === 'invalid';
        if (state.matches({ follower: 'reading' }) && readInvalid) {
          expect(
            next.matches('catchingUp') || next.matches('candidate'),
            JSON.stringify(state.value),
          ).toBe(false);
          expect(next.context.leaseProblem).toBe('garbage');
        }
      }
    }
  });
});
