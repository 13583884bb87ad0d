/**
 * hadb: highly available embedded SQLite with object storage as the source of truth.
 *
 * The main entry: `createNode` and the database handle it opens, the storage and lease backends
 * by URL and the local-folder ones by factory, the errors and the value types. The S3 and NATS
 * factories are in `hadb/s3` and `hadb/nats` (so this entry loads without their SDKs),
 * replication without HA in `hadb/replication`, in-memory backends, fault injection and the
 * simulation in `hadb/testing`. Everything else is private; test/package/api-surface.test.ts
 * holds these lists.
 */

export { createFsLeaseStore } from './adapters/lease/fs.ts';
export type { CasResult, LeaseEntry, LeaseStore } from './adapters/lease/types.ts';
export type {
  PacingChoice,
  RequestCount,
  RequestCounts,
  RequestOutcome,
} from './adapters/metered.ts';
export { createFsStorage } from './adapters/storage/fs.ts';
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
export type {
  BatchResult,
  BeginOptions,
  ClusterNodeView,
  ClusterView,
  Consistency,
  DatabaseEvents,
  DatabaseProblem,
  DatabaseStatus,
  Durability,
  ExecuteResult,
  HadbDatabase,
  InteractiveTransaction,
  IsolatedTransaction,
  NodeStatus,
  OpenTransaction,
  ReadOptions,
  Role,
  Row,
  SqlParams,
  SqlValue,
  Statement,
  StatementResult,
  Transaction,
  Transition,
  WriteOptions,
  WriteToken,
} from './api-types.ts';
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
export { defaultLeaseTiming, type LeaseTiming } from './machines/role.ts';
export { createNode, type HadbNode, type NodeOptions, type OpenOptions } from './runtime/node.ts';
