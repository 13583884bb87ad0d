/** The assertions every hostile test makes after its attack. */
import { expect } from 'vitest';
import {
  type AttackReport,
  codeOf,
  DATABASES,
  type FinalCheck,
  HEALTH_BUDGET_MS,
  type HostileCluster,
} from './cluster.ts';

/** `/health` answered in time throughout, and no node lost or changed a lease. */
export function expectNodeUnharmed(report: AttackReport<unknown>): void {
  // Soft: a test goes on to show what else the attack did.
  expect.soft(report.health.length).toBeGreaterThan(0);
  expect
    .soft(Math.max(...report.health), '/health slowest answer, ms')
    .toBeLessThan(HEALTH_BUDGET_MS);
  expect
    .soft(report.leadershipAfter, 'who leads what, at which epoch')
    .toEqual(report.leadershipBefore);
  expect.soft(report.transitionsDuring, 'role transitions during the attack').toEqual([]);
}

/** The attack was refused with `code` (a LibsqlError over Hrana). */
export function expectRefused(report: AttackReport<unknown>, code: string): void {
  const outcome = report.outcome;
  expect.soft(outcome.ok ? 'succeeded' : codeOf(outcome.error)).toBe(code);
}

/** A write through each node still lands, and reads see it, on every database. */
export async function expectWritesWork(cluster: HostileCluster, tag: string): Promise<void> {
  for (const db of DATABASES) {
    for (const node of cluster.nodes) {
      const client = cluster.client(node, db);
      await client.execute('create table if not exists hostile_probe(tag text, node text)');
      await client.execute({
        sql: 'insert into hostile_probe(tag, node) values (?, ?)',
        args: [tag, node.id],
      });
      const seen = await client.execute({
        sql: 'select count(*) as n from hostile_probe where tag = ? and node = ?',
        args: [tag, node.id],
      });
      expect(Number(seen.rows[0]?.n)).toBe(1);
    }
  }
}

/** Every copy passes `integrity_check` and equals what storage restores; `verify` is clean. */
export function expectCopiesMatchStorage(check: FinalCheck): void {
  for (const db of DATABASES) {
    expect({ db, code: check.verify[db]?.code, ok: check.verify[db]?.ok }).toEqual({
      db,
      code: 0,
      ok: true,
    });
    for (const [node, copy] of Object.entries(check.copies[db] ?? {})) {
      expect({ db, node, ...copy }).toEqual({ db, node, integrity: 'ok', equalsStorage: true });
    }
  }
}

/** No serve process's own peak memory grew by `limitMb` or more during the attack. */
export function expectPeakMemoryBounded(report: AttackReport<unknown>, limitMb: number): void {
  const growth = Object.fromEntries(
    Object.entries(report.hwmAfterMb).map(([id, after]) => [
      id,
      Math.round(after - (report.hwmBeforeMb[id] ?? 0)),
    ]),
  );
  for (const [id, grew] of Object.entries(growth)) {
    expect.soft(grew, `peak RSS growth of node ${id}, MiB`).toBeLessThan(limitMb);
  }
}

/** No serve process kept `limitMb` or more of the memory the attack made it take. */
export function expectMemoryReleased(report: AttackReport<unknown>, limitMb: number): void {
  for (const [id, after] of Object.entries(report.rssAfterMb)) {
    const kept = Math.round(after - (report.rssBeforeMb[id] ?? 0));
    expect.soft(kept, `RSS kept by node ${id} after the attack, MiB`).toBeLessThan(limitMb);
  }
}
