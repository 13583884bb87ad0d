import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import { HadbError } from '../../src/errors.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import type { HadbNode } from '../../src/runtime/node.ts';
import { type TestCluster, testClusters, waitFor } from './support/nodes.ts';

const cluster = testClusters('hadb-damaged-');
const NAMES = ['healthy-one', 'damaged', 'healthy-two'];
const SCHEMA = 'create table if not exists t(k text)';

interface LogLine {
  level: number;
  db?: string;
  msg: string;
  seq?: number;
  code?: string;
}

/** A logger whose lines the test reads back. */
function capturedLogger() {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: 'info' },
    { write: (line: string) => lines.push(JSON.parse(line) as LogLine) },
  );
  return { logger, lines };
}

/**
 * Leader `a` and follower `b` with every database; `b` stops, `a` writes on, and the first
 * changeset `b` has not applied of `damaged` gets a flipped byte in storage.
 */
async function clusterWithDamagedChangeset(c: TestCluster, leaseScope: 'database' | 'node') {
  const a = await c.start('a', { leaseScope });
  for (const name of NAMES) {
    const db = await a.open(name, { schema: SCHEMA });
    await db.execute("insert into t values ('before')");
  }
  let b = await c.start('b', { leaseScope });
  for (const name of NAMES) await b.open(name);
  const leaderSeqs = () => a.status().databases.map((d) => d.seq);
  await waitFor(
    () => b.status().databases.every((d, i) => d.seq === leaderSeqs()[i]),
    10_000,
    'b to catch up',
  );
  const stoppedAt = b.status().databases.find((d) => d.name === 'damaged')?.seq as number;
  await b.close();
  for (const db of a.databases()) await db.execute("insert into t values ('while b was down')");
  const file = path.join(c.dir, 'storage', ...logKey('', 'damaged', stoppedAt + 1).split('/'));
  const original = fs.readFileSync(file);
  const damaged = Buffer.from(original);
  damaged[damaged.length - 3] = (damaged[damaged.length - 3] as number) ^ 0xff;
  fs.writeFileSync(file, damaged);
  const captured = capturedLogger();
  b = await c.start('b', { logger: captured.logger, forwardTimeoutMs: 3000, leaseScope });
  return {
    a,
    b,
    badSeq: stoppedAt + 1,
    lines: captured.lines,
    repair: () => fs.writeFileSync(file, original),
  };
}

function statusOf(node: HadbNode, name: string) {
  const status = node.status().databases.find((d) => d.name === name);
  if (!status) throw new Error(`${name} is not open on ${node.id}`);
  return status;
}

describe.each(['database', 'node'] as const)(
  'a database whose copy cannot catch up with a damaged changeset (%s-level leases)',
  (leaseScope) => {
    test('is reported and out of service while the other databases on the node keep serving', async () => {
      const { a, b, badSeq, lines, repair } = await clusterWithDamagedChangeset(
        cluster(),
        leaseScope,
      );
      const opened = await Promise.all(NAMES.map((name) => b.open(name, { timeoutMs: 10_000 })));
      const [one, damaged, two] = opened as [
        (typeof opened)[0],
        (typeof opened)[0],
        (typeof opened)[0],
      ];

      // The healthy ones catch up, read and write as usual.
      for (const db of [one, two]) {
        await db.execute("insert into t values ('after')");
        expect(
          await db.all('select k from t order by rowid', [], { consistency: 'strong' }),
        ).toEqual([{ k: 'before' }, { k: 'while b was down' }, { k: 'after' }]);
        await waitFor(
          () => db.isCaughtUp && db.position.seq === statusOf(a, db.name).seq,
          5000,
          'catch up',
        );
        expect(await db.all('select count(*) as n from t')).toEqual([{ n: 3 }]);
      }

      // The damaged one says why, where, and since when, in status and on /status.
      await waitFor(() => statusOf(b, 'damaged').problem !== null, 5000, 'the problem in status');
      const status = statusOf(b, 'damaged');
      expect(status).toMatchObject({
        role: 'follower',
        seq: badSeq - 1,
        caughtUp: false,
        problem: { state: 'stuck', code: 'CHANGESET_CORRUPT', seq: badSeq },
      });
      expect(status.problem?.message).toContain('CRC32');
      expect(damaged.problem).toMatchObject({ state: 'stuck', code: 'CHANGESET_CORRUPT' });
      const served = (await (await fetch(`${b.address}/status`)).json()) as {
        databases: { name: string; problem: unknown }[];
      };
      expect(served.databases.find((d) => d.name === 'damaged')?.problem).toMatchObject({
        state: 'stuck',
        code: 'CHANGESET_CORRUPT',
        seq: badSeq,
      });

      // Its stale copy is not served; a write goes to the leader, which holds everything.
      const refused = await damaged.all('select count(*) as n from t').catch((error) => error);
      expect(refused).toBeInstanceOf(HadbError);
      expect(refused).toMatchObject({ code: 'CATCH_UP_FAILED', seq: badSeq });
      await damaged.execute("insert into t values ('forwarded')");
      expect(
        await damaged.all('select count(*) as n from t', [], { consistency: 'strong' }),
      ).toEqual([{ n: 3 }]);

      // A gauge and a counter by state and code, never by database.
      const metrics = await (await fetch(`${b.address}/metrics`)).text();
      expect(metrics).toContain('hadb_database_problems{state="stuck",code="CHANGESET_CORRUPT"} 1');
      expect(metrics).toContain(
        'hadb_database_problems_total{state="stuck",code="CHANGESET_CORRUPT"} 1',
      );
      expect(metrics).not.toContain('damaged');

      // Retried with backoff, warned once.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const warnings = lines.filter((line) => line.level === 40 && line.db === 'damaged');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({ seq: badSeq, code: 'CHANGESET_CORRUPT' });

      // Storage repaired: it catches up, serves again, and says so.
      repair();
      await waitFor(
        () => statusOf(b, 'damaged').problem === null,
        15_000,
        'the retry after repair',
      );
      await waitFor(() => damaged.isCaughtUp, 5000, 'catch up after repair');
      expect(await damaged.all('select k from t order by rowid')).toEqual([
        { k: 'before' },
        { k: 'while b was down' },
        { k: 'forwarded' },
      ]);
      const after = await (await fetch(`${b.address}/metrics`)).text();
      expect(after).not.toMatch(/hadb_database_problems\{/);
      expect(lines.some((line) => line.db === 'damaged' && /caught up again/.test(line.msg))).toBe(
        true,
      );
    }, 60_000);

    test('never takes the lease while behind storage, and takes it once storage is repaired', async () => {
      const { a, b, badSeq, repair } = await clusterWithDamagedChangeset(cluster(), leaseScope);
      await Promise.all(NAMES.map((name) => b.open(name, { timeoutMs: 10_000 })));
      await waitFor(() => statusOf(b, 'damaged').problem !== null, 5000, 'the problem in status');
      await a.close();

      // The healthy ones fail over to b; the damaged one stays a follower with no leader.
      await waitFor(
        () =>
          statusOf(b, 'healthy-one').role === 'leader' &&
          statusOf(b, 'healthy-two').role === 'leader',
        10_000,
        'b to lead the healthy databases',
      );
      const healthy = b.databases().find((db) => db.name === 'healthy-one');
      await healthy?.execute("insert into t values ('on b')");
      const roles = new Set<string>();
      let roleChanges = 0;
      const countChange = () => {
        roleChanges++;
      };
      const damagedOnB = b.databases().find((db) => db.name === 'damaged');
      damagedOnB?.on('role', countChange);
      const until = Date.now() + 3000;
      while (Date.now() < until) {
        roles.add(statusOf(b, 'damaged').role);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      damagedOnB?.off('role', countChange);
      expect(roles.has('leader')).toBe(false);
      expect(roles.has('candidate')).toBe(false);
      // It waits for its retry as catching-up, not flapping with every lease poll (about 24).
      expect(roleChanges).toBeLessThan(10);
      expect(statusOf(b, 'damaged')).toMatchObject({ seq: badSeq - 1, problem: { seq: badSeq } });
      const damaged = b.databases().find((db) => db.name === 'damaged');
      await expect(damaged?.execute("insert into t values ('no leader')")).rejects.toMatchObject({
        code: 'LEADER_UNAVAILABLE',
        message: expect.stringContaining('CHANGESET_CORRUPT'),
      });

      repair();
      await waitFor(
        () => statusOf(b, 'damaged').role === 'leader',
        20_000,
        'b to lead after repair',
      );
      await damaged?.execute("insert into t values ('led by b')");
      expect(await damaged?.all('select k from t order by rowid')).toEqual([
        { k: 'before' },
        { k: 'while b was down' },
        { k: 'led by b' },
      ]);
    }, 60_000);
  },
);

/** Flips a byte of changeset `seq` of `damaged` in the cluster's storage; returns the repair. */
function damageChangeset(dir: string, seq: number): () => void {
  const file = path.join(dir, 'storage', ...logKey('', 'damaged', seq).split('/'));
  const original = fs.readFileSync(file);
  const damaged = Buffer.from(original);
  damaged[damaged.length - 3] = (damaged[damaged.length - 3] as number) ^ 0xff;
  fs.writeFileSync(file, damaged);
  return () => fs.writeFileSync(file, original);
}

describe('a damaged changeset met by a running node', () => {
  test('a follower serving reads goes out of service, and back once storage is repaired', async () => {
    const c = cluster();
    const a = await c.start('a');
    const onA = await a.open('damaged', { schema: SCHEMA });
    await onA.execute("insert into t values ('before')");
    const late = lateChangesets(createFsStorage({ root: path.join(c.dir, 'storage') }));
    const b = await c.start('b', { storage: late.storage, logger: pino({ level: 'silent' }) });
    const onB = await b.open('damaged');
    await waitFor(() => onB.position.seq === onA.position.seq, 5000, 'b to catch up');
    expect(await onB.all('select k from t')).toEqual([{ k: 'before' }]);
    const seq = onB.position.seq + 1;

    // Written by the leader, damaged in storage before b could read it.
    late.hideFrom(seq);
    await onA.execute("insert into t values ('damaged in storage')");
    const repair = damageChangeset(c.dir, seq);
    late.reveal();

    await waitFor(() => onB.problem !== null, 10_000, 'b to meet the damaged changeset');
    expect(onB.problem).toMatchObject({ state: 'stuck', code: 'CHANGESET_CORRUPT', seq });
    await expect(onB.all('select k from t')).rejects.toMatchObject({ code: 'CATCH_UP_FAILED' });
    await onB.execute("insert into t values ('forwarded')");

    repair();
    await waitFor(() => onB.problem === null, 15_000, 'the retry after repair');
    await waitFor(() => onB.isCaughtUp, 5000, 'b to catch up again');
    expect(await onB.all('select k from t order by rowid')).toEqual([
      { k: 'before' },
      { k: 'damaged in storage' },
      { k: 'forwarded' },
    ]);
  }, 60_000);

  test('a claim that meets it while taking over is handed back, never written under', async () => {
    const c = cluster();
    const a = await c.start('a');
    const onA = await a.open('damaged', { schema: SCHEMA });
    await onA.execute("insert into t values ('before')");
    const late = lateChangesets(createFsStorage({ root: path.join(c.dir, 'storage') }));
    const b = await c.start('b', { storage: late.storage, logger: pino({ level: 'silent' }) });
    const onB = await b.open('damaged');
    await waitFor(() => onB.position.seq === onA.position.seq, 5000, 'b to catch up');
    const seq = onB.position.seq + 1;

    // Changeset `seq` lands damaged, and b's listings and reads miss it until b tries its slot:
    // an old leader's late upload that b meets only while writing its epoch-start record.
    late.hideFrom(seq);
    await onA.execute("insert into t values ('late')");
    const repair = damageChangeset(c.dir, seq);
    const roles: string[] = [];
    let everWritable = false;
    onB.on('role', ({ role }) => {
      roles.push(role);
      everWritable ||= onB.writable;
    });
    await a.close();

    await waitFor(() => statusOf(b, 'damaged').problem !== null, 10_000, 'the problem in status');
    await waitFor(() => onB.role === 'follower', 5000, 'b to give the claim back');
    expect(roles).toContain('leader');
    expect(roles.slice(roles.indexOf('leader'))).toEqual(
      expect.arrayContaining(['demoting', 'follower']),
    );
    expect(everWritable || onB.writable).toBe(false);
    expect(statusOf(b, 'damaged').problem).toMatchObject({ code: 'CHANGESET_CORRUPT', seq });

    repair();
    await waitFor(() => onB.writable, 20_000, 'b to lead after repair');
    expect(await onB.all('select k from t order by rowid')).toEqual([
      { k: 'before' },
      { k: 'late' },
    ]);
  }, 60_000);
});

/** Storage that misses changesets of `damaged` from `seq` on until revealed or a slot is tried. */
function lateChangesets(inner: StorageBackend) {
  let hiddenFrom = Number.POSITIVE_INFINITY;
  const hidden = (key: string) => {
    const match = /^damaged\/log\/([0-9a-f]{16})$/.exec(key);
    return match !== null && Number.parseInt(match[1] as string, 16) >= hiddenFrom;
  };
  const storage: StorageBackend = {
    put: (key, body) => inner.put(key, body),
    putIfAbsent: (key, body) => {
      if (hidden(key)) hiddenFrom = Number.POSITIVE_INFINITY;
      return inner.putIfAbsent(key, body);
    },
    get: async (key, range) => (hidden(key) ? null : inner.get(key, range)),
    list: async (prefix, options) => {
      const page = await inner.list(prefix, options);
      return { ...page, objects: page.objects.filter((object) => !hidden(object.key)) };
    },
    delete: (keys) => inner.delete(keys),
  };
  return {
    storage,
    hideFrom: (seq: number) => {
      hiddenFrom = seq;
    },
    reveal: () => {
      hiddenFrom = Number.POSITIVE_INFINITY;
    },
  };
}
