import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Client, createClient, LibsqlError } from '@libsql/client';
import { eq, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/libsql';
import { blob, integer, real, sqliteTable, text } from 'drizzle-orm/sqlite-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ServedNode, serveCluster } from './support/serve.ts';

// Three `hadb serve` processes serving two databases, driven by @libsql/client and drizzle-orm
// through followers: interactive transactions run on the leader, then the leader is killed.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-serve-cluster-'));
const cluster = serveCluster(root, [
  ...['--db', 'app', '--db', 'orders'],
  ...['--transaction-timeout', '2'],
]);
const TOKEN = cluster.token;

let leader: ServedNode;
let followers: ServedNode[];
/** Through a follower, `app` (the default database, at `/`). */
let client: Client;
/** Through the other follower. */
let other: Client;
const clients: Client[] = [];

/** Where clients reach `app` on `node` (a node serving several databases has no default one). */
function app(node: ServedNode): string {
  return `${node.hrana}/app/`;
}

function connect(url: string): Client {
  const opened = createClient({ url, authToken: TOKEN, intMode: 'bigint' });
  clients.push(opened);
  return opened;
}

beforeAll(async () => {
  await Promise.all(['a', 'b', 'c'].map((id) => cluster.start(id)));
  ({ leader, followers } = await cluster.roles('app'));
  client = connect(app(followers[0] as ServedNode));
  other = connect(app(followers[1] as ServedNode));
}, 60_000);

afterAll(async () => {
  for (const opened of clients) opened.close();
  await cluster.stop();
  fs.rmSync(root, { recursive: true, force: true });
}, 30_000);

const MAX = 2n ** 63n - 1n;
const MIN = -(2n ** 63n);
const BLOB = new Uint8Array([0, 1, 2, 127, 128, 254, 255]);

async function ids(on: Client, table: string): Promise<bigint[]> {
  const result = await on.execute(`select id from ${table} order by id`);
  return result.rows.map((row) => row.id as bigint);
}

function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms)),
  ]);
}

describe('hadb serve: a cluster of three behind @libsql/client and drizzle-orm', () => {
  it('creates tables and runs batches in every mode through a follower', async () => {
    await client.batch(
      [
        'create table kv(id integer primary key, v text)',
        'create table typed(id integer primary key, n integer, f real, t text, b blob, z)',
      ],
      'write',
    );
    const written = await client.batch(
      [
        { sql: 'insert into kv(id, v) values (?, ?)', args: [1, 'one'] },
        { sql: 'insert into kv(id, v) values (?, ?)', args: [2, 'two'] },
      ],
      'write',
    );
    expect(written.map((result) => result.rowsAffected)).toEqual([1, 1]);
    const deferred = await other.batch(
      [
        { sql: 'insert into kv(id, v) values (?, ?)', args: [3, 'three'] },
        'select count(*) as n from kv',
      ],
      'deferred',
    );
    expect(deferred[1]?.rows[0]?.n).toBe(3n);
    const read = await other.batch(
      ['select v from kv where id = 1', 'select count(*) as n from kv'],
      'read',
    );
    expect(read[0]?.rows[0]?.v).toBe('one');
    // A failing batch applies nothing, in any mode.
    for (const mode of ['write', 'deferred'] as const) {
      await expect(
        client.batch(
          [
            { sql: 'insert into kv(id, v) values (?, ?)', args: [9, 'lost'] },
            { sql: 'insert into kv(id, v) values (?, ?)', args: [1, 'duplicate'] },
          ],
          mode,
        ),
      ).rejects.toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    }
    // A write in a read batch is refused.
    await expect(
      client.batch([{ sql: 'insert into kv(id, v) values (?, ?)', args: [9, 'no'] }], 'read'),
    ).rejects.toBeInstanceOf(LibsqlError);
    // Read where the last write was made (each node reads its own writes at once).
    expect(await ids(other, 'kv')).toEqual([1n, 2n, 3n]);
  });

  it('commits an interactive transaction begun on a follower, on the leader', async () => {
    const tx = await client.transaction('write');
    await tx.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [10, 'in tx'] });
    const inside = await tx.execute('select v from kv where id = 10');
    expect(inside.rows[0]?.v).toBe('in tx');
    // Not visible outside before the commit, on the leader either.
    const onLeader = connect(app(leader));
    expect((await onLeader.execute('select count(*) as n from kv where id = 10')).rows[0]?.n).toBe(
      0n,
    );
    // A write from another client waits for the writer the transaction holds.
    const waiting = other.execute({
      sql: 'insert into kv(id, v) values (?, ?)',
      args: [11, 'after tx'],
    });
    expect(await settledWithin(waiting, 400)).toBe(false);
    await tx.execute({ sql: 'update kv set v = ? where id = 1', args: ['one, updated in tx'] });
    await tx.commit();
    // Through the node that relayed it, the commit is read at once.
    const mine = await client.execute('select id, v from kv where id in (1, 10) order by id');
    expect(mine.rows.map((row) => [row.id, row.v])).toEqual([
      [1n, 'one, updated in tx'],
      [10n, 'in tx'],
    ]);
    await waiting;
    // The waiting write came after the commit: where it was made, both are there.
    for (const on of [other, onLeader]) {
      const rows = await on.execute('select id, v from kv where id in (1, 10, 11) order by id');
      expect(rows.rows.map((row) => [row.id, row.v])).toEqual([
        [1n, 'one, updated in tx'],
        [10n, 'in tx'],
        [11n, 'after tx'],
      ]);
    }
  });

  it('rolls an interactive transaction back, and a failed statement leaves it usable', async () => {
    const tx = await other.transaction('write');
    await tx.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [20, 'rolled back'] });
    await expect(
      tx.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [1, 'duplicate'] }),
    ).rejects.toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    const inTx = await tx.batch([
      { sql: 'insert into kv(id, v) values (?, ?)', args: [21, 'rolled back too'] },
      'select count(*) as n from kv where id >= 20',
    ]);
    expect(inTx[1]?.rows[0]?.n).toBe(2n);
    await tx.rollback();
    expect(await ids(other, 'kv')).toEqual([1n, 2n, 3n, 10n, 11n]);
    // The writer is free again.
    await client.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [22, 'free'] });
    // A read-only transaction reads, refuses writes, and holds no writer.
    const reading = await client.transaction('read');
    expect((await reading.execute('select count(*) as n from kv')).rows[0]?.n).toBe(6n);
    await expect(
      reading.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [23, 'no'] }),
    ).rejects.toBeInstanceOf(LibsqlError);
    await other.execute({ sql: 'delete from kv where id = ?', args: [23] });
    await reading.commit();
    expect(await ids(other, 'kv')).toEqual([1n, 2n, 3n, 10n, 11n, 22n]);
  });

  it('rolls back a transaction left idle past the timeout, and frees the writer', async () => {
    const tx = await client.transaction('write');
    await tx.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [30, 'abandoned'] });
    await new Promise((resolve) => setTimeout(resolve, 2600));
    await expect(tx.execute('select 1')).rejects.toThrow(/expired/);
    tx.close();
    await other.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [31, 'next'] });
    expect(await ids(other, 'kv')).toEqual([1n, 2n, 3n, 10n, 11n, 22n, 31n]);
  });

  it('names the holding node in the baton: any node carries the stream on', async () => {
    const post = async (node: ServedNode, body: unknown) => {
      const response = await fetch(`${node.hrana}/app/v3/pipeline`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify(body),
      });
      return {
        status: response.status,
        body: (await response.json()) as { baton: string | null; results: { type: string }[] },
      };
    };
    const execute = (sql: string) => ({ type: 'execute', stmt: { sql } });
    const [first, second] = followers as [ServedNode, ServedNode];
    const opened = await post(first, {
      baton: null,
      requests: [
        execute('create table relayed(id)'),
        execute('begin'),
        execute('insert into relayed values (1)'),
      ],
    });
    expect(opened.body.results.map((result) => result.type)).toEqual(['ok', 'ok', 'ok']);
    // The next request goes to another follower, which relays it to the node holding the stream.
    const committed = await post(second, {
      baton: opened.body.baton,
      requests: [execute('commit'), { type: 'close' }],
    });
    expect(committed.status).toBe(200);
    expect(committed.body.results.map((result) => result.type)).toEqual(['ok', 'ok']);
    // Read where the commit was relayed from: that node waits for its copy to hold it.
    expect((await other.execute('select count(*) as n from relayed')).rows[0]?.n).toBe(1n);
    // A baton is signed: a tampered one runs nothing.
    const tampered = `${opened.body.baton?.slice(0, -2)}xx`;
    const refused = await post(second, {
      baton: tampered,
      requests: [execute('insert into relayed values (2)')],
    });
    expect(refused.status).toBe(400);
  });

  it('round-trips every value type, in and out of a transaction, on every node', async () => {
    const values = [
      [1, MAX, 1.5, 'héllo; "quoted" \u{1F600}', BLOB, null],
      [2, MIN, -0.25, '', new Uint8Array([]), null],
      [3, 2n ** 53n + 1n, 1e308, 'x'.repeat(10_000), new Uint8Array(3000).fill(7), null],
    ] as const;
    await client.execute({
      sql: 'insert into typed(id, n, f, t, b, z) values (?, ?, ?, ?, ?, ?)',
      args: [...values[0]],
    });
    const tx = await other.transaction('write');
    for (const row of values.slice(1)) {
      await tx.execute({
        sql: 'insert into typed(id, n, f, t, b, z) values (:id, :n, :f, :t, :b, :z)',
        args: { id: row[0], n: row[1], f: row[2], t: row[3], b: row[4], z: row[5] },
      });
    }
    const inside = await tx.execute('select n from typed where id = 2');
    expect(inside.rows[0]?.n).toBe(MIN);
    await tx.commit();
    for (const node of cluster.nodes) {
      const on = connect(app(node));
      const result = await on.execute('select id, n, f, t, b, z from typed order by id');
      expect(
        result.rows.map((row) => [
          Number(row.id),
          row.n,
          row.f,
          row.t,
          new Uint8Array(row.b as ArrayBuffer),
          row.z,
        ]),
      ).toEqual(values.map((row) => [...row]));
    }
  });

  it('works under drizzle-orm, transactions (and their rollback) included', async () => {
    const notes = sqliteTable('notes', {
      id: integer('id').primaryKey(),
      title: text('title').notNull(),
      score: real('score'),
      big: integer('big'),
      data: blob('data', { mode: 'buffer' }),
    });
    // Drizzle maps integers itself: its client keeps the default intMode.
    const drizzleClient = createClient({
      url: app(followers[1] as ServedNode),
      authToken: TOKEN,
    });
    clients.push(drizzleClient);
    const db = drizzle(drizzleClient);
    await db.run(
      sql`create table notes(id integer primary key, title text not null, score real, big integer, data blob)`,
    );
    await db.insert(notes).values({
      id: 1,
      title: 'first',
      score: 0.5,
      big: Number.MAX_SAFE_INTEGER,
      data: Buffer.from([1, 2]),
    });
    const id = await db.transaction(async (tx) => {
      await tx.insert(notes).values({ id: 2, title: 'second', score: null, big: -5 });
      await tx.update(notes).set({ score: 2.5 }).where(eq(notes.id, 1));
      const [row] = await tx.select().from(notes).where(eq(notes.id, 2));
      return row?.id;
    });
    expect(id).toBe(2);
    await expect(
      db.transaction(async (tx) => {
        await tx.insert(notes).values({ id: 3, title: 'rolled back' });
        tx.rollback();
      }),
    ).rejects.toThrow(/Rollback/);
    await db.batch([
      db.insert(notes).values({ id: 4, title: 'batched' }),
      db.update(notes).set({ title: 'batched, renamed' }).where(eq(notes.id, 4)),
    ]);
    const rows = await db.select().from(notes).orderBy(notes.id);
    expect(rows).toEqual([
      {
        id: 1,
        title: 'first',
        score: 2.5,
        big: Number.MAX_SAFE_INTEGER,
        data: Buffer.from([1, 2]),
      },
      { id: 2, title: 'second', score: null, big: -5, data: null },
      { id: 4, title: 'batched, renamed', score: null, big: null, data: null },
    ]);
  });

  it('serves each database under its own path; an unknown one is a clear 404', async () => {
    const orders = connect(`${(followers[0] as ServedNode).hrana}/orders/`);
    await orders.execute('create table o(id integer primary key, total real)');
    const tx = await orders.transaction('write');
    await tx.execute({ sql: 'insert into o(id, total) values (?, ?)', args: [1, 9.5] });
    await tx.commit();
    expect(await ids(connect(`${leader.hrana}/orders/`), 'o')).toEqual([1n]);
    // Not in the default database.
    await expect(client.execute('select * from o')).rejects.toMatchObject({ code: 'SQLITE_ERROR' });
    const nowhere = connect(`${leader.hrana}/nowhere/`);
    await expect(nowhere.execute('create table x(a)')).rejects.toThrow(/no database "nowhere"/);
    const response = await fetch(`${leader.hrana}/nowhere/v3/pipeline`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ baton: null, requests: [] }),
    });
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ code: 'UNKNOWN_DATABASE' });
  });

  it('answers bad bodies, forged batons and huge bodies with clear errors, applying nothing', async () => {
    const url = `${(followers[0] as ServedNode).hrana}/app/v3/pipeline`;
    const post = (body: string | Uint8Array) =>
      fetch(url, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` }, body });
    const insert = { type: 'execute', stmt: { sql: "insert into kv(id, v) values (99, 'bad')" } };
    const cases: [string | Uint8Array, number, RegExp][] = [
      ['{"requests": [', 400, /bad pipeline body/],
      [JSON.stringify({ baton: null, requests: 'nope' }), 400, /requests must be an array/],
      [JSON.stringify({ baton: 42, requests: [insert] }), 400, /baton must be/],
      [JSON.stringify({ baton: 'forged.baton.sig', requests: [insert] }), 400, /baton/],
      [new Uint8Array(17 * 1024 * 1024).fill(32), 400, /exceeds/],
    ];
    for (const [body, status, message] of cases) {
      const response = await post(body);
      expect(response.status).toBe(status);
      expect(((await response.json()) as { message: string }).message).toMatch(message);
    }
    // A request of an unknown kind fails alone; the server stays up.
    const response = await post(
      JSON.stringify({ baton: null, requests: [{ type: 'frobnicate' }, { type: 'close' }] }),
    );
    const body = (await response.json()) as { results: { type: string }[] };
    expect(body.results.map((result) => result.type)).toEqual(['error', 'ok']);
    expect(await ids(client, 'kv')).not.toContain(99n);
  });

  it('serves every database under the prefix with --all-databases', async () => {
    const node = await cluster.start('d', ['--all-databases']);
    const line = await node.watched.waitForLine((text) => text.includes('"listening"'));
    expect(JSON.parse(line)).toMatchObject({ db: 'app', databases: ['app', 'orders'] });
    expect(await ids(connect(`${node.hrana}/orders/`), 'o')).toEqual([1n]);
    // Directly on this node too, whatever its role: a transaction, then app.
    const tx = await connect(`${node.hrana}/orders/`).transaction('write');
    await tx.execute({ sql: 'insert into o(id, total) values (?, ?)', args: [2, 1.25] });
    await tx.commit();
    expect(await ids(connect(`${node.hrana}/orders/`), 'o')).toEqual([1n, 2n]);
    expect((await connect(app(node)).execute('select v from kv where id = 1')).rows[0]?.v).toBe(
      'one, updated in tx',
    );
  });

  it('keeps going when the leader is killed: acknowledged writes survive', async () => {
    const acknowledged: number[] = [];
    for (let i = 100; i < 110; i++) {
      await client.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [i, 'before'] });
      acknowledged.push(i);
    }
    // A transaction open on the old leader when it dies: the client hears so, clearly.
    const open = await other.transaction('write');
    await open.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [150, 'lost'] });
    leader.child.kill('SIGKILL');
    await leader.watched.done;
    await expect(open.execute('select 1')).rejects.toThrow(/did not answer|expired|leader/);
    open.close();
    // The same clients carry on against the new leader (a retry of the first request is fine).
    const retry = async <T>(work: () => Promise<T>): Promise<T> => {
      try {
        return await work();
      } catch {
        return await work();
      }
    };
    await retry(() =>
      client.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [200, 'after'] }),
    );
    const tx = await other.transaction('write');
    await retry(() =>
      tx.execute({ sql: 'insert into kv(id, v) values (?, ?)', args: [201, 'after, in tx'] }),
    );
    await tx.commit();
    const after = await cluster.roles('app');
    expect(after.leader.id).not.toBe(leader.id);
    const wanted = [...acknowledged, 200, 201].map(BigInt);
    for (const on of [client, other]) {
      // Each node reads what was written through it at once, the other's writes soon after.
      const deadline = Date.now() + 5000;
      let present = await ids(on, 'kv');
      while (!wanted.every((id) => present.includes(id)) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        present = await ids(on, 'kv');
      }
      expect(present).toEqual(expect.arrayContaining(wanted));
      expect(present).not.toContain(150n);
    }
  }, 40_000);
});
