/** Reads a cluster folder's storage the way a restore would, to check what the nodes reported. */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { createFsStorage } from '../../../src/adapters/storage/fs.ts';
import { clusterPaths } from '../../../src/cli/worker.ts';
import { restoreDatabase } from '../../../src/replication/restore.ts';
import { logKey } from '../../../src/replication/snapshot.ts';
import { PageApplier } from '../../../src/replication/sqlite/apply.ts';
import { decodeChangeset } from '../../../src/wire/changeset.ts';

/** The epoch of the changeset at `seq` in the log, or null when there is none. */
export async function epochInLog(
  clusterDir: string,
  db: string,
  seq: number,
): Promise<number | null> {
  const storage = createFsStorage({ root: clusterPaths(clusterDir).storage });
  const bytes = await storage.get(logKey('', db, seq));
  return bytes === null ? null : decodeChangeset(bytes, { db }).epoch;
}

/**
 * The `kv` keys a parked tail holds: the log restored up to where the tail starts, with the
 * tail's pages applied over it, as the dead leadership would have shipped them.
 */
export async function keysInParkedTail(
  clusterDir: string,
  db: string,
  parkedFile: string,
  scratchPath: string,
): Promise<string[]> {
  const tail = decodeChangeset(fs.readFileSync(parkedFile), { db });
  await restoreDatabase({
    storage: createFsStorage({ root: clusterPaths(clusterDir).storage }),
    prefix: '',
    db,
    destPath: scratchPath,
    target: { seq: tail.seq - 1 },
    overwrite: true,
  });
  const applier = PageApplier.open(scratchPath);
  try {
    applier.recover();
    applier.apply(tail);
  } finally {
    applier.close();
  }
  const database = new Database(scratchPath, { readonly: true });
  try {
    return database.prepare('select k from kv order by k').pluck().all() as string[];
  } finally {
    database.close();
  }
}
