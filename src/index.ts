/**
 * hadb: highly available embedded SQLite with object storage as the source of truth.
 * The public API is exactly what this file names.
 */

export {
  createDatabaseActor,
  type DatabaseActor,
  type DatabaseActorOptions,
  type DatabaseHooks,
} from './actors/database.ts';
export {
  type ActorStatus,
  defaultRestartPolicy,
  type RestartPolicy,
  Supervisor,
  type SupervisorEvent,
  type SupervisorOptions,
} from './actors/supervisor.ts';
export { type CutOffMode, type FaultOptions, Faults, type Latency } from './adapters/faults.ts';
export { createFsLeaseStore } from './adapters/lease/fs.ts';
export {
  createMemoryLeaseStore,
  type LeaseWrite,
  MemoryLeaseStore,
  type MemoryLeaseStoreOptions,
} from './adapters/lease/memory.ts';
export type { CasResult, LeaseEntry, LeaseStore } from './adapters/lease/types.ts';
export {
  type RestoreOptions,
  type RestoreProgress,
  type RestoreResult,
  type RestoreTarget,
  restoreDatabase,
} from './adapters/replication/restore.ts';
export {
  applyRetention,
  planRetention,
  type RetentionPlan,
} from './adapters/replication/retention.ts';
export {
  listSnapshots,
  readSnapshotManifest,
  type SnapshotManifest,
} from './adapters/replication/snapshot.ts';
export {
  type FollowerEvent,
  type FollowerOptions,
  SqliteFollower,
} from './adapters/replication/sqlite/follower.ts';
export {
  type LeaderEvent,
  type LeaderOptions,
  type Position,
  SqliteLeader,
} from './adapters/replication/sqlite/leader.ts';
export { createFsStorage } from './adapters/storage/fs.ts';
export { createMemoryStorage, MemoryStorage } from './adapters/storage/memory.ts';
export type {
  ByteRange,
  ListedObject,
  ListOptions,
  ListPage,
  StorageBackend,
} from './adapters/storage/types.ts';
export { type Clock, systemClock } from './clock.ts';
export {
  ChangesetError,
  type ChangesetErrorCode,
  FencedError,
  HadbError,
  type HadbErrorCode,
  InvalidArgumentError,
  InvalidKeyError,
  LeaseRecordInvalidError,
  LeaseStoreUnavailableError,
  LineageAheadError,
  ReplicationGapError,
  SnapshotInvalidError,
  SqliteTooOldError,
  StorageNotFoundError,
  StorageUnavailableError,
  TimeoutError,
  WalInvalidError,
} from './errors.ts';
export {
  canCommit,
  type DemoteReason,
  defaultLeaseTiming,
  type LeaseTiming,
  type Role,
  type RoleSnapshot,
  roleMachine,
  roleOf,
} from './machines/role.ts';
export { runSimulation, type SimulationOptions, type SimulationSummary } from './sim/run.ts';
export {
  type ChangedPage,
  type Changeset,
  type ChangesetCodec,
  decodeChangeset,
  encodeChangeset,
  GENESIS_CHECKSUM,
} from './wire/changeset.ts';
export { decodeLeaseRecord, encodeLeaseRecord, type LeaseRecord } from './wire/lease-record.ts';
