import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import type { HadbNode } from '../../src/runtime/node.ts';
import { testClusters, waitFor } from './support/nodes.ts';

// A lease record hadb cannot use (a garbage value, a revision that is not a number) is a
// database problem: reported once at warn, shown in /status and /metrics, and no role flapping.

const cluster = testClusters('hadb-lease-malformed-');
const WATCH_MS = 2000;

function capturingLogger() {
  const lines: { level: number; msg: string; db?: string }[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { logger, lines };
}

async function roleChanges(node: HadbNode): Promise<number> {
  const metrics = await (await fetch(`${node.address}/metrics`)).text();
  let total = 0;
  for (const match of metrics.matchAll(/^hadb_role_changes_total\{[^}]*\} (\d+)$/gm)) {
    total += Number(match[1]);
  }
  return total;
}

async function expectReportedNotFlapping(node: HadbNode, lines: { msg: string; db?: string }[]) {
  await waitFor(
    () => node.status().databases[0]?.problem?.state === 'lease',
    10_000,
    'the lease problem in status',
  );
  const before = await roleChanges(node);
  await new Promise((resolve) => setTimeout(resolve, WATCH_MS));
  // Bootstrapping to follower at most; no election loop.
  expect((await roleChanges(node)) - before).toBe(0);
  const [status] = node.status().databases;
  expect(status?.role).toBe('follower');
  expect(status?.problem).toMatchObject({ state: 'lease', code: 'LEASE_RECORD_INVALID' });
  expect(status?.problem?.message).toMatch(/^LEASE_RECORD_INVALID: unreadable lease record/);
  const metrics = await (await fetch(`${node.address}/metrics`)).text();
  expect(metrics).toContain('hadb_database_problems{state="lease",code="LEASE_RECORD_INVALID"} 1');
  const warnings = lines.filter((line) => /lease record/.test(line.msg));
  expect(warnings).toHaveLength(1);
}

describe('a malformed lease record', () => {
  test('a revision that is not a number (fs lease store) is reported, not fought over', async () => {
    const c = cluster();
    const first = await c.start('a');
    await first.open('db', { schema: 'create table if not exists t(k)' });
    await first.close();
    const file = new Database(path.join(c.dir, 'leases.sqlite'));
    file.prepare("update leases set revision = 'abc' where key = 'db'").run();
    file.close();

    const { logger, lines } = capturingLogger();
    const b = await c.start('b', { logger });
    await b.open('db');
    await expectReportedNotFlapping(b, lines);
  }, 60_000);

  test('a value that is not a lease record (memory lease store) is reported', async () => {
    const leases = new MemoryLeaseStore();
    await leases.create(
      'db',
      new TextEncoder().encode('{"format":"hadb-lease","v":1,"epoch":"x"}'),
    );
    const { logger, lines } = capturingLogger();
    const node = await cluster().start('a', { leases, logger });
    await node.open('db');
    await expectReportedNotFlapping(node, lines);
    expect(node.status().databases[0]?.problem?.message).toContain('holder');
  }, 60_000);
});
