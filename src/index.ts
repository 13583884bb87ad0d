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
export type {
  BatchResult,
  BeginOptions,
  Consistency,
  DatabaseEvents,
  DatabaseProblem,
  DatabaseStatus,
  ExecuteResult,
  HadbDatabase,
  ReadOptions,
  Transaction,
  WriteOptions,
} from './actors/hosted-database.ts';
export type {
  InteractiveTransaction,
  IsolatedTransaction,
  OpenTransaction,
} from './actors/interactive.ts';
export {
  createNode,
  type HadbNode,
  type NodeOptions,
  type NodeStatus,
  type OpenOptions,
} from './actors/node.ts';
export {
  type ActorStatus,
  defaultRestartPolicy,
  type RestartPolicy,
  Supervisor,
  type SupervisorEvent,
  type SupervisorOptions,
} from './actors/supervisor.ts';
export type { Transition } from './actors/transitions.ts';
export { type CutOffMode, type FaultOptions, Faults, type Latency } from './adapters/faults.ts';
export { createFsLeaseStore } from './adapters/lease/fs.ts';
export {
  createMemoryLeaseStore,
  type LeaseWrite,
  MemoryLeaseStore,
  type MemoryLeaseStoreOptions,
} from './adapters/lease/memory.ts';
export {
  NatsLeaseStore,
  type NatsLeaseStoreEvent,
  type NatsLeaseStoreOptions,
  openNatsLeaseStore,
} from './adapters/lease/nats.ts';
export {
  createS3LeaseStore,
  openS3LeaseStore,
  type S3LeaseStoreOptions,
  selfTestS3Leases,
} from './adapters/lease/s3.ts';
export type { CasResult, LeaseEntry, LeaseStore } from './adapters/lease/types.ts';
export {
  backendKindOfUrl,
  guessBackendKind,
  MeteredLeaseStore,
  MeteredStorage,
  type MeterOptions,
  meterLeaseStore,
  meterStorage,
  type PacingChoice,
  type RequestCount,
  type RequestCounts,
  type RequestOutcome,
  requestCounts,
  sharedLeasePacer,
  totalRequests,
} from './adapters/metered.ts';
export {
  type PacingOptions,
  RequestPacer,
  sharedStoragePacer,
} from './adapters/pacing.ts';
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
  type ParkedTail,
  type Position,
  SqliteLeader,
  salvageLeaderTail,
} from './adapters/replication/sqlite/leader.ts';
export { writeEpochStart } from './adapters/replication/sqlite/promotion.ts';
export { type BreakerOptions, CircuitBreaker, type RetryOptions } from './adapters/retry.ts';
export { type S3ClientOptions, sharedS3Client } from './adapters/s3-client.ts';
export { createFsStorage } from './adapters/storage/fs.ts';
export { createMemoryStorage, MemoryStorage } from './adapters/storage/memory.ts';
export { createS3Storage, type S3StorageOptions } from './adapters/storage/s3.ts';
export type {
  ByteRange,
  ListedObject,
  ListOptions,
  ListPage,
  StorageBackend,
} from './adapters/storage/types.ts';
export {
  type LeaseUrlConfig,
  type OpenLeaseStoreOptions,
  openLeaseStoreFromUrl,
  openStorageFromUrl,
  parseLeaseUrl,
  parseStorageUrl,
  type S3UrlConfig,
  type StorageUrlConfig,
} from './adapters/url.ts';
export { type Clock, systemClock } from './clock.ts';
export {
  BadRequestError,
  CatchUpFailedError,
  ChangesetError,
  type ChangesetErrorCode,
  ClosedError,
  DatabaseDivergedError,
  DatabaseFailedError,
  FencedError,
  HadbError,
  type HadbErrorCode,
  InvalidArgumentError,
  InvalidKeyError,
  LeaderUnavailableError,
  LeaseRecordInvalidError,
  LeaseStoreUnavailableError,
  LeaseStoreUnsafeError,
  LimitExceededError,
  LineageAheadError,
  NotDurableError,
  NotLeaderError,
  ReplicationGapError,
  ResultTooLargeError,
  SnapshotInvalidError,
  SqlError,
  SqliteTooOldError,
  StatementTimeoutError,
  StorageNotFoundError,
  StorageUnavailableError,
  StoreMismatchError,
  TimeoutError,
  TransactionExpiredError,
  UnauthorizedError,
  UnknownDatabaseError,
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
export type { ClusterNodeView, ClusterView } from './wire/cluster-view.ts';
export type {
  Durability,
  Row,
  SqlParams,
  SqlValue,
  Statement,
  StatementResult,
  WriteToken,
} from './wire/forward.ts';
export { decodeLeaseRecord, encodeLeaseRecord, type LeaseRecord } from './wire/lease-record.ts';
