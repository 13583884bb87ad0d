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
  expect(report.health.length).toBeGreaterThan(0);
  expect(Math.max(...report.health)).toBeLessThan(HEALTH_BUDGET_MS);
  expect(report.leadershipAfter).toEqual(report.leadershipBefore);
  expect(report.transitionsDuring).toEqual([]);
}

/** The attack was refused with `code` (a LibsqlError over Hrana). */
export function expectRefused(report: AttackReport<unknown>, code: string): void {
  const outcome = report.outcome;
  expect(outcome.ok ? 'succeeded' : codeOf(outcome.error)).toBe(code);
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
