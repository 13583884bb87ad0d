import fs from 'node:fs';
import path from 'node:path';
import { createClient, LibsqlError } from '@libsql/client';
import { afterEach, describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { StatementRefusedError } from '../../src/errors.ts';
import { NodeClient } from '../../src/http/node-client.ts';
import {
  decodeForwardResponse,
  encodeMessage,
  type ForwardRequest,
  PROTOCOL_VERSION,
} from '../../src/wire/forward.ts';
import { FORWARD_PATH } from '../../src/wire/node-protocol.ts';
import { SECRET, type TestCluster, testClusters } from './support/nodes.ts';

// Client SQL through every door (the embedded API on the leader and on a follower, a forwarded
// request sent straight to the leader, Hrana on either node) meets the same statement gate.

const cluster = testClusters('hadb-statement-gate-');
const SCHEMA = 'create table if not exists t(id integer primary key, v)';
const peers: NodeClient[] = [];

afterEach(async () => {
  for (const peer of peers.splice(0)) peer.close();
});

function served(c: TestCluster, id: string) {
  return c.serveOverHrana(id, { schema: SCHEMA });
}

async function leaderAndFollower() {
  const c = cluster();
  const leader = await served(c, 'a');
  const follower = await served(c, 'b');
  expect(leader.db.role).toBe('leader');
  expect(follower.db.role).toBe('follower');
  return { dir: c.dir, leader, follower };
}

async function refusal(promise: Promise<unknown>): Promise<StatementRefusedError> {
  const error = await promise.then(
    () => new Error('the statement was not refused'),
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(StatementRefusedError);
  return error as StatementRefusedError;
}

async function libsqlRefusal(promise: Promise<unknown>): Promise<LibsqlError> {
  const error = await promise.then(
    () => new Error('the statement was not refused'),
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(LibsqlError);
  expect((error as LibsqlError).code).toBe('STATEMENT_REFUSED');
  return error as LibsqlError;
}

/** The leader connection's own settings, read through the allowed PRAGMA reads. */
/**
 * The writer's own settings are out of a client's reach (reads run on another connection), so
 * watch what the leader finds on it: before each capture it re-reads them and reports a change.
 */
function watchWriterSettings(db: HadbDatabase): string[] {
  const changed: string[] = [];
  db.on('setting-reset', ({ pragma, actual }) => changed.push(`${pragma}=${actual}`));
  return changed;
}

/** What the leader found changed on its writer, once a write after the attack was captured. */
async function writerSettingsChanged(db: HadbDatabase, changed: string[]): Promise<string[]> {
  await db.execute('create table if not exists settings_probe(v)');
  await db.execute('insert into settings_probe(v) values (1)');
  return changed;
}

async function count(db: HadbDatabase): Promise<unknown> {
  return (await db.get('select count(*) as n from t', [], { consistency: 'strong' }))?.n;
}

describe('the statement gate at every entry point', () => {
  test('embedded API on the leader: a batch with PRAGMA wal_autocheckpoint runs nothing', async () => {
    const { leader } = await leaderAndFollower();
    const changed = watchWriterSettings(leader.db);
    const error = await refusal(
      leader.db.batch([
        { sql: 'insert into t(v) values (?)', params: ['x'] },
        { sql: 'PRAGMA wal_autocheckpoint=1000' },
      ]),
    );
    expect(error.code).toBe('STATEMENT_REFUSED');
    expect(error.message).toContain('wal_autocheckpoint');
    expect(await count(leader.db)).toBe(0);
    expect(await writerSettingsChanged(leader.db, changed)).toEqual([]);
  });

  test('embedded API: ATTACH, query_only, locking_mode and dropping _hadb_requests are refused', async () => {
    const { dir, leader } = await leaderAndFollower();
    const changed = watchWriterSettings(leader.db);
    const attached = path.join(dir, 'attached.db');
    await refusal(leader.db.execute(`ATTACH DATABASE '${attached}' AS other`));
    await refusal(leader.db.all(`attach '${attached}' as other`));
    expect(fs.existsSync(attached)).toBe(false);
    await refusal(leader.db.execute('PRAGMA query_only=1'));
    await refusal(leader.db.get('PRAGMA query_only = 1'));
    await refusal(leader.db.execute('PRAGMA locking_mode=EXCLUSIVE'));
    await refusal(leader.db.transaction((tx) => tx.execute('PRAGMA query_only=1')));
    const tx = await leader.db.begin();
    expect(() => tx.run({ sql: 'PRAGMA locking_mode = EXCLUSIVE' }, false)).toThrow(
      StatementRefusedError,
    );
    tx.abort('done');
    await refusal(leader.db.execute('drop table _hadb_requests'));
    await refusal(leader.db.transaction((tx) => tx.execute('delete from main."_HADB_REQUESTS"')));
    // Writes still work: nothing of the refused statements took effect.
    await leader.db.execute('insert into t(v) values (1)');
    expect(await writerSettingsChanged(leader.db, changed)).toEqual([]);
    expect(await count(leader.db)).toBe(1);
  });

  test('through a follower: refused there, and by the leader when sent to it directly', async () => {
    const { leader, follower } = await leaderAndFollower();
    const changed = watchWriterSettings(leader.db);
    // A forwarded write creates hadb's request table on the leader.
    await follower.db.execute('insert into t(v) values (1)');
    await refusal(
      follower.db.batch([
        { sql: 'insert into t(v) values (2)' },
        { sql: 'PRAGMA wal_autocheckpoint=1000' },
      ]),
    );
    await refusal(follower.db.execute('drop table _hadb_requests'));
    await refusal(follower.db.get('pragma query_only=1', [], { consistency: 'strong' }));

    // A node that skipped its own check (an older or a hostile one): the leader refuses.
    const peer = new NodeClient(SECRET);
    peers.push(peer);
    for (const sql of ['PRAGMA wal_autocheckpoint=1000', 'drop table _hadb_requests']) {
      const request: ForwardRequest = {
        v: PROTOCOL_VERSION,
        db: 'db',
        requestId: `forged-${sql}`,
        op: 'write',
        statements: [{ sql: 'insert into t(v) values (3)' }, { sql }],
        durability: 'replicated',
        bigints: false,
      };
      const { status, body } = await peer.request(
        'POST',
        `${leader.node.address}${FORWARD_PATH}`,
        encodeMessage(request),
        10_000,
      );
      expect(status).toBe(422);
      expect(decodeForwardResponse(body)).toMatchObject({ ok: false, code: 'STATEMENT_REFUSED' });
    }
    expect(await count(leader.db)).toBe(1);
    expect(await writerSettingsChanged(leader.db, changed)).toEqual([]);
    // Forwarded writes still work: the request table is there.
    await follower.db.execute('insert into t(v) values (4)');
    expect(await count(leader.db)).toBe(2);
  });

  test('Hrana with @libsql/client, on the leader and on a follower: LibsqlError STATEMENT_REFUSED', async () => {
    const { dir, leader, follower } = await leaderAndFollower();
    const changed = watchWriterSettings(leader.db);
    const attached = path.join(dir, 'attached.db');
    for (const server of [leader.hrana, follower.hrana]) {
      const client = createClient({ url: server.address });
      try {
        await libsqlRefusal(
          client.batch(['insert into t(v) values (1)', 'PRAGMA wal_autocheckpoint=1000'], 'write'),
        );
        await libsqlRefusal(client.execute(`ATTACH DATABASE '${attached}' AS other`));
        await libsqlRefusal(client.execute('PRAGMA query_only=1'));
        await libsqlRefusal(client.execute('PRAGMA locking_mode=EXCLUSIVE'));
        await libsqlRefusal(client.execute('drop table _hadb_requests'));
        await libsqlRefusal(
          client.executeMultiple('insert into t(v) values (1); PRAGMA query_only = 1;'),
        );
        const tx = await client.transaction('write');
        try {
          await tx.execute('insert into t(v) values (1)');
          await libsqlRefusal(tx.execute('PRAGMA wal_autocheckpoint = 1000'));
          await libsqlRefusal(tx.execute('END TRANSACTION x'));
        } finally {
          tx.close();
        }
        // What the client may do still works, a script with a trigger whose body has CASE … END too.
        await client.executeMultiple(
          "create table if not exists t2(x); create trigger if not exists t2_check after insert on t2 begin select case when new.x < 0 then raise(abort, 'negative') end; end; insert into t2 values (1);",
        );
        await client.execute('insert into t(v) values (2)');
        const info = await client.execute('PRAGMA table_info(t)');
        expect(info.rows.map((row) => row.name)).toEqual(['id', 'v']);
      } finally {
        client.close();
      }
    }
    expect(fs.existsSync(attached)).toBe(false);
    expect(await count(leader.db)).toBe(2);
    expect(await writerSettingsChanged(leader.db, changed)).toEqual([]);
  });
});
