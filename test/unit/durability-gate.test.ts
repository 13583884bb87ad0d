import { describe, expect, it } from 'vitest';
import { type RoleContext, type RoleSnapshot, roleMachine } from '../../src/machines/role.ts';
import { DurabilityGate } from '../../src/runtime/durability-gate.ts';
import { unitTiming } from '../support/role-timing.ts';

const timing = unitTiming;

function snapshotOf(value: object, changes: Partial<RoleContext> = {}): RoleSnapshot {
  const context: RoleContext = {
    db: 'db',
    node: 'a',
    session: 'a#1',
    timing,
    observed: null,
    lease: { revision: '7', epoch: 2, validUntil: 1000, delegated: false },
    intent: 'claim',
    epochFloor: 0,
    lastAt: 0,
    demoteReason: null,
    stopping: false,
    leaseProblem: null,
    leaseRecordProblem: null,
    ...changes,
  };
  return roleMachine.resolveState({ value: value as never, context });
}

const serving = { leader: { renewal: 'idle', validity: 'valid', writes: 'serving' } };
const starting = { leader: { renewal: 'idle', validity: 'valid', writes: 'starting' } };

function gate(
  snapshot: RoleSnapshot,
  options: { now?: number; writerEpoch?: number | null; nodeLease?: boolean; closed?: boolean },
) {
  const nodeLease = options.nodeLease;
  return new DurabilityGate({
    snapshot: () => snapshot,
    clock: { now: () => options.now ?? 500 },
    liveness: () => (nodeLease === undefined ? undefined : { validAt: () => nodeLease }),
    writerEpoch: () => (options.writerEpoch === undefined ? 2 : options.writerEpoch),
    closed: () => options.closed ?? false,
  });
}

describe('the durability gate', () => {
  it('lets a commit through only while serving, with the writer epoch and a valid lease', () => {
    expect(gate(snapshotOf(serving), {}).mayCommit()).toBe(true);
    expect(gate(snapshotOf(starting), {}).mayCommit()).toBe(false);
    expect(gate(snapshotOf(serving), { writerEpoch: null }).mayCommit()).toBe(false);
    expect(gate(snapshotOf(serving), { writerEpoch: 1 }).mayCommit()).toBe(false);
    expect(gate(snapshotOf(serving), { now: 999 }).mayCommit()).toBe(true);
    expect(gate(snapshotOf(serving), { now: 1000 }).mayCommit()).toBe(false);
    expect(gate(snapshotOf(serving), { nodeLease: true }).mayCommit()).toBe(true);
    expect(gate(snapshotOf(serving), { nodeLease: false }).mayCommit()).toBe(false);
    const demoting = snapshotOf({ demoting: 'stoppingWrites' }, { demoteReason: 'handoff' });
    expect(gate(demoting, {}).mayCommit()).toBe(false);
  });

  it('ships an epoch while its lease is valid, when leading or demoting but not when lost', () => {
    expect(gate(snapshotOf(serving), {}).mayShip(2)).toBe(true);
    expect(gate(snapshotOf(serving), {}).mayShip(1)).toBe(false);
    expect(gate(snapshotOf(serving), { now: 1000 }).mayShip(2)).toBe(false);
    expect(gate(snapshotOf(serving), { nodeLease: false }).mayShip(2)).toBe(false);
    for (const reason of ['handoff', 'expired', 'stop'] as const) {
      const demoting = snapshotOf({ demoting: 'stoppingWrites' }, { demoteReason: reason });
      expect(gate(demoting, {}).mayShip(2), reason).toBe(true);
    }
    const lost = snapshotOf({ demoting: 'stoppingWrites' }, { demoteReason: 'lost' });
    expect(gate(lost, {}).mayShip(2)).toBe(false);
  });

  it('leads an epoch while leader under it, starting or serving, until closed', () => {
    expect(gate(snapshotOf(starting), {}).leads(2)).toBe(true);
    expect(gate(snapshotOf(serving), {}).leads(2)).toBe(true);
    expect(gate(snapshotOf(serving), {}).leads(3)).toBe(false);
    expect(gate(snapshotOf(serving), { closed: true }).leads(2)).toBe(false);
  });
});
