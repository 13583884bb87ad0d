/**
 * `hadb/replication`: SQLite replication to object storage without leases or failover. One
 * `SqliteLeader` ships a database's committed transactions, any number of `SqliteFollower`s apply
 * them; restore, snapshots and retention work on what storage holds. Storage backends come from
 * `hadb`.
 */

export type { ParkedTail, Position } from './api-types.ts';
export {
  type RestoreOptions,
  type RestoreProgress,
  type RestoreResult,
  type RestoreTarget,
  restoreDatabase,
} from './replication/restore.ts';
export {
  applyRetention,
  planRetention,
  type RetentionPlan,
} from './replication/retention.ts';
export {
  listSnapshots,
  readSnapshotManifest,
  type SnapshotManifest,
} from './replication/snapshot.ts';
export {
  type FollowerEvent,
  type FollowerOptions,
  SqliteFollower,
} from './replication/sqlite/follower.ts';
export {
  type LeaderEvent,
  type LeaderOptions,
  SqliteLeader,
  salvageLeaderTail,
} from './replication/sqlite/leader.ts';
export { type ChangesetCodec, GENESIS_CHECKSUM } from './wire/changeset.ts';
