import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import { expectFollowerMatches, openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-light-capture-');
const CODEC_AT = 5;
const NONE = 0;
const BROTLI = 2;

/** A leader whose captures of `lightCaptureBytes` or more are judged, and a way to write rows. */
async function leaderWith(lightCaptureBytes: number) {
  const dir = freshDir('leader');
  const storage = createMemoryStorage();
  const common = { db: 'app', prefix: 'p' };
  const leader = await openNewLeader({
    ...common,
    storage,
    path: path.join(dir, 'leader.db'),
    lightCaptureBytes,
  });
  leader.database.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)');
  await leader.flush();
  const codecOfNext = async (rows: () => Buffer) => {
    const insert = leader.database.prepare('INSERT INTO t (v) VALUES (?)');
    leader.database.transaction(() => {
      for (let i = 0; i < 200; i++) insert.run(rows());
    })();
    const { seq } = await leader.flush();
    const bytes = await storage.get(logKey(common.prefix, common.db, seq));
    return bytes?.[CODEC_AT];
  };
  return { dir, storage, common, leader, codecOfNext };
}

describe('a leader writing more than it ships between ticks', () => {
  it('ships what barely compresses uncompressed, and compresses the rest', async () => {
    const { dir, storage, common, leader, codecOfNext } = await leaderWith(0);
    expect(await codecOfNext(() => randomBytes(1000))).toBe(NONE);
    expect(await codecOfNext(() => Buffer.alloc(1000, 'row text, row text. '))).toBe(BROTLI);
    await expectFollowerMatches(leader, storage, { dir, ...common, table: 't', rows: 400 });
    await leader.close();
  });

  it('compresses everything below the size that means it is behind', async () => {
    const { leader, codecOfNext } = await leaderWith(64 * 1024 * 1024);
    expect(await codecOfNext(() => randomBytes(1000))).toBe(BROTLI);
    await leader.close();
  });
});
