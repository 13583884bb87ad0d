import path from 'node:path';
import { createMemoryStorage, type MemoryStorage } from '../../../src/adapters/storage/memory.ts';
import { restoreDatabase } from '../../../src/replication/restore.ts';
import {
  deleteSnapshot,
  logKey,
  readSnapshotManifest,
  writeSnapshot,
} from '../../../src/replication/snapshot.ts';
import type { SqliteLeader } from '../../../src/replication/sqlite/leader.ts';
import { decodeChangeset, encodeChangeset } from '../../../src/wire/changeset.ts';
import { openNewLeader } from './replication.ts';

export const PREFIX = 'tenant';
export const DB = 'app';

/** A log of several changesets with a snapshot in the middle, written by a real leader. */
export async function storedHistory(dir: string): Promise<{
  storage: MemoryStorage;
  leader: SqliteLeader;
  snapshotSeq: number;
  lastSeq: number;
}> {
  const storage = createMemoryStorage();
  const leader = await openNewLeader({
    path: path.join(dir, 'leader.db'),
    db: DB,
    storage,
    prefix: PREFIX,
  });
  leader.database.exec('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)');
  const insert = leader.database.prepare('INSERT INTO notes (id, body) VALUES (?, ?)');
  const write = async (from: number) => {
    for (let i = from; i < from + 40; i++) insert.run(i, `note ${i} `.repeat(30));
    return (await leader.flush()).seq;
  };
  await write(0);
  await write(100);
  const snapshotSeq = (await leader.snapshot()).seq;
  await write(200);
  const lastSeq = await write(300);
  return { storage, leader, snapshotSeq, lastSeq };
}

/** Rewrites changeset `seq` with one page byte changed and its checksums sealed again. */
export async function resealAltered(storage: MemoryStorage, seq: number): Promise<void> {
  const key = logKey(PREFIX, DB, seq);
  const original = decodeChangeset((await storage.get(key)) as Uint8Array);
  const pages = original.pages.map(({ pgno, data }) => ({ pgno, data: new Uint8Array(data) }));
  const victim = pages.at(-1)?.data as Uint8Array;
  victim[victim.length - 10] = (victim[victim.length - 10] as number) ^ 0xff;
  const { version: _v, checksum: _c, ...fields } = original;
  await storage.put(key, encodeChangeset({ ...fields, pages }).bytes);
}

/**
 * Replaces the snapshot at `seq` by one of an altered image: its manifest and part hashes are
 * consistent with that image, only the database checksum of the log at `seq` can tell.
 */
export async function replaceSnapshotImage(
  storage: MemoryStorage,
  seq: number,
  scratch: string,
): Promise<void> {
  const manifest = await readSnapshotManifest(storage, PREFIX, DB, seq);
  if (!manifest) throw new Error(`no snapshot at ${seq}`);
  const file = path.join(scratch, 'image.db');
  await restoreDatabase({ storage, prefix: PREFIX, db: DB, destPath: file, target: { seq } });
  const image = new Uint8Array(await import('node:fs').then((fs) => fs.readFileSync(file)));
  // Page 3, a leaf of the first rows: later inserts (higher ids) leave it as it is.
  const at = 2 * manifest.pageSize + 3000;
  image[at] = (image[at] as number) ^ 0xff;
  await deleteSnapshot(storage, PREFIX, DB, seq);
  await writeSnapshot(
    storage,
    {
      prefix: PREFIX,
      db: DB,
      seq,
      epoch: manifest.epoch,
      checksum: Buffer.from(manifest.checksum, 'hex'),
      pageSize: manifest.pageSize,
      dbSizePages: manifest.dbSizePages,
      commitTimeMs: manifest.commitTimeMs,
    },
    (async function* () {
      yield image;
    })(),
  );
}
