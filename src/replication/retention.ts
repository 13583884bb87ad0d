import type { StorageBackend } from '../adapters/storage/types.ts';
import { InvalidArgumentError } from '../errors.ts';
import { deleteSnapshot, listSnapshots, logKey, logPrefix } from './snapshot.ts';

/** The snapshots and log a retention pass keeps and deletes. */
export interface RetentionPlan {
  db: string;
  keptSnapshots: number[];
  deletedSnapshots: number[];
  /** Log keys below the oldest kept snapshot. */
  deletedLogKeys: string[];
}

/**
 * What retention would delete: all but the newest `keepSnapshots` snapshots, and the log below
 * the oldest snapshot kept (a restore or a lagging follower starts from that snapshot). With no
 * snapshot, nothing is deleted: the log is then the only copy.
 */
export async function planRetention(options: {
  storage: StorageBackend;
  prefix: string;
  db: string;
  keepSnapshots: number;
}): Promise<RetentionPlan> {
  const { storage, prefix, db, keepSnapshots } = options;
  if (!Number.isInteger(keepSnapshots) || keepSnapshots < 1) {
    throw new InvalidArgumentError(`keepSnapshots must be at least 1, got ${keepSnapshots}`);
  }
  const snapshots = await listSnapshots(storage, prefix, db);
  const keptSnapshots = snapshots.slice(-keepSnapshots);
  const deletedSnapshots = snapshots.slice(0, Math.max(0, snapshots.length - keepSnapshots));
  const oldestKept = keptSnapshots[0];
  const deletedLogKeys: string[] = [];
  if (oldestKept !== undefined) {
    const logFolder = logPrefix(prefix, db);
    const limitKey = logKey(prefix, db, oldestKept);
    let startAfter: string | undefined;
    for (;;) {
      const page = await storage.list(logFolder, startAfter === undefined ? {} : { startAfter });
      for (const { key } of page.objects) if (key < limitKey) deletedLogKeys.push(key);
      const last = page.objects.at(-1)?.key;
      if (page.nextStartAfter === undefined || last === undefined || last >= limitKey) break;
      startAfter = page.nextStartAfter;
    }
  }
  return { db, keptSnapshots, deletedSnapshots, deletedLogKeys };
}

/** Carries out a plan: snapshots first (their manifests go before their parts), then the log. */
export async function applyRetention(
  storage: StorageBackend,
  prefix: string,
  plan: RetentionPlan,
): Promise<void> {
  for (const seq of plan.deletedSnapshots) await deleteSnapshot(storage, prefix, plan.db, seq);
  for (let i = 0; i < plan.deletedLogKeys.length; i += 1000) {
    await storage.delete(plan.deletedLogKeys.slice(i, i + 1000));
  }
}
