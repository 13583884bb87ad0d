import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createClient } from '@libsql/client';
import { afterAll, describe, expect, it } from 'vitest';
import { hadb } from './support/cli.ts';
import { serveCluster } from './support/serve.ts';

// `hadb serve` with two databases, one of which has a damaged changeset in storage that the
// starting node has never applied: it serves the healthy one and reports the damaged one.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-serve-damaged-'));
const cluster = serveCluster(root, ['--db', 'healthy', '--db', 'damaged']);

afterAll(async () => {
  await cluster.stop();
  fs.rmSync(root, { recursive: true, force: true });
}, 30_000);

interface Status {
  databases: {
    name: string;
    role: string;
    seq: number;
    problem: { state: string; code: string; seq: number } | null;
  }[];
}

async function statusOf(peer: string, db: string) {
  const status = (await (await fetch(`${peer}/status`)).json()) as Status;
  return status.databases.find((d) => d.name === db);
}

async function eventually<T>(read: () => Promise<T>, ok: (value: T) => boolean, what: string) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('hadb serve with a damaged database', () => {
  it('keeps serving the healthy one, reports the damaged one, and recovers once repaired', async () => {
    const first = await cluster.start('a');
    for (const db of ['healthy', 'damaged']) {
      const client = createClient({ url: `${first.hrana}/${db}/`, authToken: cluster.token });
      await client.execute('create table t(k text)');
      for (const k of ['one', 'two', 'three'])
        await client.execute({ sql: 'insert into t values (?)', args: [k] });
      client.close();
    }
    first.child.kill('SIGTERM');
    await first.watched.done;

    // The last changeset of `damaged` gets a flipped byte: a new node cannot get past it.
    const logDir = path.join(root, 'storage', 'damaged', 'log');
    const last = fs
      .readdirSync(logDir)
      .filter((name) => /^[0-9a-f]{16}$/.test(name))
      .sort()
      .at(-1);
    const file = path.join(logDir, last as string);
    const original = fs.readFileSync(file);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 2] = (damaged[damaged.length - 2] as number) ^ 0xff;
    fs.writeFileSync(file, damaged);
    const badSeq = Number.parseInt(last as string, 16);

    const second = await cluster.start('b');
    const healthy = createClient({ url: `${second.hrana}/healthy/`, authToken: cluster.token });
    const broken = createClient({ url: `${second.hrana}/damaged/`, authToken: cluster.token });
    try {
      const status = await eventually(
        () => statusOf(second.peer, 'damaged'),
        (s) => s?.problem !== null,
        'the problem on /status',
      );
      expect(status?.role).not.toBe('leader');
      expect(status).toMatchObject({
        seq: badSeq - 1,
        problem: { state: 'stuck', code: 'CHANGESET_CORRUPT', seq: badSeq },
      });
      await eventually(
        () => statusOf(second.peer, 'healthy'),
        (s) => s?.role === 'leader',
        'b to lead healthy',
      );
      await healthy.execute("insert into t values ('four')");
      expect((await healthy.execute('select count(*) as n from t')).rows[0]?.n).toBe(4);
      await expect(broken.execute('select count(*) as n from t')).rejects.toThrow(
        /CATCH_UP_FAILED/,
      );
      expect(await (await fetch(`${second.peer}/metrics`)).text()).toContain(
        'hadb_database_problems{state="stuck",code="CHANGESET_CORRUPT"} 1',
      );
      const report = await hadb(['status', '--json', '--nodes', second.peer], { cwd: root });
      expect(report.code).toBe(1);
      expect(JSON.parse(report.stdout).problems).toContain(
        `database damaged: b cannot catch up: CHANGESET_CORRUPT at seq ${badSeq}`,
      );
      expect(second.child.exitCode).toBeNull();

      fs.writeFileSync(file, original);
      await eventually(
        () => statusOf(second.peer, 'damaged'),
        (s) => s?.role === 'leader',
        'b to lead damaged',
      );
      expect((await broken.execute('select count(*) as n from t')).rows[0]?.n).toBe(3);
    } finally {
      healthy.close();
      broken.close();
    }
  }, 90_000);

  it('serves the databases it could open when one of them cannot be opened at all', async () => {
    // Local damage on this node only: a directory where a leader's state file would be, so the
    // database's actor crashes at every start until the node gives up on it.
    fs.mkdirSync(path.join(root, 'c', 'broken.db-hadb-leader.json'), { recursive: true });
    const third = await cluster.start('c', ['--db', 'broken']);
    const listening = JSON.parse(
      await third.watched.waitForLine((line) => line.includes('"listening"')),
    ) as { databases: string[] };
    expect(listening.databases).toEqual(['healthy', 'damaged']);
    const client = createClient({ url: `${third.hrana}/healthy/`, authToken: cluster.token });
    try {
      expect((await client.execute('select count(*) as n from t')).rows[0]?.n).toBeGreaterThan(0);
    } finally {
      client.close();
    }
    third.child.kill('SIGTERM');
    const run = await third.watched.done;
    expect(run.stderr).toMatch(
      /not serving broken: DATABASE_FAILED: broken stopped after \d+ crashes/,
    );
  }, 60_000);
});
