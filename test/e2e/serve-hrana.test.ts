import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { type Client, createClient, LibsqlError } from '@libsql/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnHadb, type WatchedProcess, watch } from './support/cli.ts';

// Two `hadb serve` processes on a shared folder (fs storage, fs leases), driven by the real
// libSQL client over Hrana/HTTP.

const TOKEN = 'client-token-for-the-test';
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-serve-'));
const storageUrl = pathToFileURL(path.join(root, 'storage')).href;
const leasesUrl = pathToFileURL(path.join(root, 'leases')).href;

interface Served {
  id: string;
  child: ChildProcess;
  watched: WatchedProcess;
  hrana: string;
  peer: string;
}

const served: Served[] = [];
let leader: Served;
let follower: Served;
let onLeader: Client;
let onFollower: Client;

async function start(id: string): Promise<Served> {
  const child = spawnHadb(
    [
      'serve',
      '--id',
      id,
      '--data',
      path.join(root, id),
      '--storage',
      storageUrl,
      '--leases',
      leasesUrl,
      '--db',
      'app',
      '--listen',
      '127.0.0.1:0',
    ],
    {
      cwd: root,
      env: { HADB_SECRET: 'a-cluster-secret-of-the-test', HADB_AUTH_TOKEN: TOKEN },
    },
  );
  const watched = watch(child);
  const line = await watched.waitForLine((text) => text.includes('"listening"'));
  const { hrana, peer } = JSON.parse(line) as { hrana: string; peer: string };
  const entry = { id, child, watched, hrana, peer };
  served.push(entry);
  return entry;
}

async function role(node: Served): Promise<string | undefined> {
  const status = (await (await fetch(`${node.peer}/status`)).json()) as {
    databases: { name: string; role: string }[];
  };
  return status.databases.find((database) => database.name === 'app')?.role;
}

beforeAll(async () => {
  const a = await start('a');
  const b = await start('b');
  const deadline = Date.now() + 15_000;
  for (;;) {
    const roles = [await role(a), await role(b)];
    if (roles.includes('leader') && roles.includes('follower')) {
      [leader, follower] = roles[0] === 'leader' ? [a, b] : [b, a];
      break;
    }
    if (Date.now() > deadline) throw new Error(`no leader and follower: ${roles.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  onLeader = createClient({ url: leader.hrana, authToken: TOKEN, intMode: 'bigint' });
  onFollower = createClient({ url: follower.hrana, authToken: TOKEN, intMode: 'bigint' });
}, 30_000);

afterAll(async () => {
  onLeader?.close();
  onFollower?.close();
  await Promise.all(
    served.map(async ({ child, watched }) => {
      child.kill('SIGTERM');
      await watched.done;
    }),
  );
  fs.rmSync(root, { recursive: true, force: true });
});

const BIG = 2n ** 62n + 3n;
const BLOB = new Uint8Array([0, 1, 2, 254, 255]);

describe('hadb serve speaks Hrana over HTTP to @libsql/client', () => {
  it('creates a table and inserts every value type, positional and named', async () => {
    await onLeader.execute(
      'create table items(id integer primary key, n integer, f real, t text, b blob, z)',
    );
    const inserted = await onLeader.execute({
      sql: 'insert into items(n, f, t, b, z) values (?, ?, ?, ?, ?)',
      args: [BIG, 1.5, 'héllo; "quoted"', BLOB, null],
    });
    expect(inserted.rowsAffected).toBe(1);
    expect(inserted.lastInsertRowid).toBe(1n);
    // Through the follower: forwarded to the leader.
    const named = await onFollower.execute({
      sql: 'insert into items(id, n, f, t, b, z) values (:id, :n, $f, @t, :b, :z)',
      args: { id: 10, n: -7n, f: -0.25, t: '', b: new Uint8Array([]), z: null },
    });
    expect(named.lastInsertRowid).toBe(10n);
  });

  it('reads typed values back on both nodes', async () => {
    const expected = [
      { id: 1n, n: BIG, f: 1.5, t: 'héllo; "quoted"', b: BLOB, z: null },
      { id: 10n, n: -7n, f: -0.25, t: '', b: new Uint8Array([]), z: null },
    ];
    for (const client of [onLeader, onFollower]) {
      const result = await client.execute('select id, n, f, t, b, z from items order by id');
      expect(result.columns).toEqual(['id', 'n', 'f', 't', 'b', 'z']);
      const rows = result.rows.map((row) => ({
        id: row.id,
        n: row.n,
        f: row.f,
        t: row.t,
        b: row.b === null ? null : new Uint8Array(row.b as ArrayBuffer),
        z: row.z,
      }));
      expect(rows).toEqual(expected);
    }
  });

  it('applies a batch atomically, and a failing step rolls the whole batch back', async () => {
    const ok = await onFollower.batch(
      [
        { sql: 'insert into items(id, t) values (?, ?)', args: [20, 'batch-1'] },
        { sql: 'insert into items(id, t) values (?, ?)', args: [21, 'batch-2'] },
        'select count(*) as n from items',
      ],
      'write',
    );
    expect(ok).toHaveLength(3);
    expect(ok[2]?.rows[0]?.n).toBe(4n);

    const failing = onLeader.batch(
      [
        { sql: 'insert into items(id, t) values (?, ?)', args: [30, 'lost'] },
        { sql: 'update items set t = ? where id = 1', args: ['lost too'] },
        { sql: 'insert into items(id, t) values (?, ?)', args: [20, 'duplicate'] },
      ],
      'write',
    );
    await expect(failing).rejects.toBeInstanceOf(LibsqlError);
    // The failed statement is located (the third), so the client reports its index.
    await expect(failing).rejects.toMatchObject({
      code: 'SQLITE_CONSTRAINT_PRIMARYKEY',
      statementIndex: 2,
    });
    const after = await onLeader.execute('select id, t from items order by id');
    expect(after.rows.map((row) => [row.id, row.t])).toEqual([
      [1n, 'héllo; "quoted"'],
      [10n, ''],
      [20n, 'batch-1'],
      [21n, 'batch-2'],
    ]);
  });

  it('lands a write sent to the follower on the leader', async () => {
    await onFollower.execute({
      sql: 'insert into items(id, t) values (?, ?)',
      args: [40, 'via f'],
    });
    // The leader answers from its own copy: the row is there because it committed it.
    const onLeaderRow = await onLeader.execute('select t from items where id = 40');
    expect(onLeaderRow.rows[0]?.t).toBe('via f');
    // The follower's read waits for its own write to reach its copy.
    const onFollowerRow = await onFollower.execute('select t from items where id = 40');
    expect(onFollowerRow.rows[0]?.t).toBe('via f');
  });

  it('runs a semicolon-separated sequence (executeMultiple)', async () => {
    await onFollower.executeMultiple(
      'create trigger stamp after insert on items when new.id = 51 begin ' +
        "update items set z = 'stamped' where id = new.id; end;\n" +
        "insert into items(id, t) values (50, 'a;b'); -- a comment; with a semicolon\n" +
        "insert into items(id, t) values (51, 'x');",
    );
    const rows = await onLeader.execute('select t, z from items where id >= 50 order by id');
    expect(rows.rows.map((row) => [row.t, row.z])).toEqual([
      ['a;b', null],
      ['x', 'stamped'],
    ]);
  });

  it('evaluates raw batch conditions; steps outside a transaction autocommit', async () => {
    const step = (sql: string, condition?: unknown) => ({ stmt: { sql }, condition });
    const response = await fetch(`${follower.hrana}/v2/pipeline`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({
        baton: null,
        requests: [
          {
            type: 'batch',
            batch: {
              steps: [
                step("insert into items(id, t) values (70, 'kept')"),
                step("insert into items(id, t) values (1, 'duplicate')"),
                step("insert into items(id, t) values (71, 'after error')", {
                  type: 'and',
                  conds: [
                    { type: 'error', step: 1 },
                    { type: 'not', cond: { type: 'ok', step: 1 } },
                  ],
                }),
                step("insert into items(id, t) values (72, 'skipped')", { type: 'ok', step: 1 }),
                step("insert into items(id, t) values (73, 'or')", {
                  type: 'or',
                  conds: [
                    { type: 'ok', step: 3 },
                    { type: 'ok', step: 0 },
                  ],
                }),
              ],
            },
          },
          { type: 'close' },
        ],
      }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      baton: string | null;
      results: {
        type: string;
        response: {
          result: { step_results: (object | null)[]; step_errors: ({ code: string } | null)[] };
        };
      }[];
    };
    expect(body.baton).toBeNull();
    const result = body.results[0]?.response.result;
    expect(result?.step_results.map((r) => r !== null)).toEqual([true, false, true, false, true]);
    expect(result?.step_errors.map((e) => e?.code ?? null)).toEqual([
      null,
      'SQLITE_CONSTRAINT_PRIMARYKEY',
      null,
      null,
      null,
    ]);
    const rows = await onLeader.execute('select id from items where id >= 70 order by id');
    expect(rows.rows.map((row) => row.id)).toEqual([70n, 71n, 73n]);
  });

  it('maps SQLite errors to Hrana errors with their code', async () => {
    await expect(
      onFollower.execute({ sql: 'insert into items(id) values (?)', args: [1] }),
    ).rejects.toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    await expect(onLeader.execute('select * from no_such_table')).rejects.toMatchObject({
      code: 'SQLITE_ERROR',
    });
  });

  it('rolls back a transaction whose stream is closed; get_autocommit follows it', async () => {
    const post = async (body: unknown) => {
      const response = await fetch(`${follower.hrana}/v2/pipeline`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify(body),
      });
      expect(response.status).toBe(200);
      return (await response.json()) as {
        baton: string | null;
        results: { type: string; response?: { is_autocommit?: boolean } }[];
      };
    };
    const first = await post({
      baton: null,
      requests: [
        { type: 'execute', stmt: { sql: 'BEGIN' } },
        { type: 'execute', stmt: { sql: "insert into items(id, t) values (80, 'never')" } },
        { type: 'get_autocommit' },
      ],
    });
    expect(first.results.map((result) => result.type)).toEqual(['ok', 'ok', 'ok']);
    expect(first.results[2]?.response?.is_autocommit).toBe(false);
    const second = await post({ baton: first.baton, requests: [{ type: 'close' }] });
    expect(second.baton).toBeNull();
    // Rolled back, and the writer is free.
    await onFollower.execute("insert into items(id, t) values (81, 'next')");
    const rows = await onLeader.execute('select id from items where id in (80, 81)');
    expect(rows.rows.map((row) => row.id)).toEqual([81n]);
  });

  it('answers 401 without the token or with a wrong one, and executes nothing', async () => {
    for (const headers of [{}, { authorization: 'Bearer wrong' }]) {
      const response = await fetch(`${follower.hrana}/v2/pipeline`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({
          baton: null,
          requests: [
            { type: 'execute', stmt: { sql: "insert into items(id, t) values (60, 'no')" } },
            { type: 'close' },
          ],
        }),
      });
      expect(response.status).toBe(401);
    }
    const anonymous = createClient({ url: leader.hrana });
    await expect(
      anonymous.execute("insert into items(id, t) values (61, 'no')"),
    ).rejects.toBeInstanceOf(LibsqlError);
    anonymous.close();
    const rows = await onLeader.execute('select count(*) as n from items where id in (60, 61)');
    expect(rows.rows[0]?.n).toBe(0n);
  });

  it('answers the version probes', async () => {
    for (const version of ['v2', 'v3']) {
      const response = await fetch(`${leader.hrana}/${version}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(response.status).toBe(200);
    }
  });
});
