/**
 * Every error hadb raises is a {@link HadbError} with a stable string `code`.
 * Backend errors (S3, NATS, filesystem) are mapped inside the adapter and kept as `cause`.
 */
export type HadbErrorCode =
  | 'LEASE_STORE_UNAVAILABLE'
  | 'LEASE_RECORD_INVALID'
  | 'STORAGE_UNAVAILABLE'
  | 'STORAGE_NOT_FOUND'
  | 'INVALID_KEY'
  | 'INVALID_ARGUMENT'
  | 'TIMEOUT'
  | 'CHANGESET_CORRUPT'
  | 'CHANGESET_CHECKSUM_MISMATCH'
  | 'CHANGESET_CHAIN_BROKEN'
  | 'CHANGESET_WRONG_PAGE_SIZE'
  | 'CHANGESET_UNKNOWN_VERSION'
  | 'CHANGESET_WRONG_DATABASE'
  | 'WAL_INVALID'
  | 'SQLITE_TOO_OLD'
  | 'SNAPSHOT_INVALID'
  | 'LINEAGE_AHEAD'
  | 'REPLICATION_GAP'
  | 'FENCED'
  | 'NOT_LEADER'
  | 'LEADER_UNAVAILABLE'
  | 'SQL_ERROR'
  | 'UNKNOWN_DATABASE'
  | 'UNAUTHORIZED'
  | 'BAD_REQUEST'
  | 'CLOSED'
  | 'NOT_DURABLE'
  | 'LEASE_STORE_UNSAFE'
  | 'STORE_MISMATCH'
  | 'CATCH_UP_FAILED'
  | 'DATABASE_FAILED'
  | 'DATABASE_DIVERGED'
  | 'LIMIT_EXCEEDED'
  | 'TRANSACTION_EXPIRED'
  | 'STATEMENT_REFUSED'
  | 'STATEMENT_TIMEOUT'
  | 'RESULT_TOO_LARGE'
  | 'PEER_UNREACHABLE'
  | 'BREAKER_OPEN'
  | 'HRANA_REQUEST_REFUSED'
  | 'ATOMIC_RUN_FAILED'
  | 'NOTHING_TO_SERVE'
  | 'INTERNAL';

/** Base class of every error hadb throws; `code` tells them apart. */
export class HadbError extends Error {
  readonly code: HadbErrorCode;

  constructor(code: HadbErrorCode, message: string, options?: ErrorOptions) {
    super(`${code}: ${message}`, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** `error`'s message without its code prefix: for a receiver that puts the code back itself. */
export function withoutCode(error: HadbError): string {
  return error.message.slice(`${error.code}: `.length);
}

/** The lease store could not be reached or failed; the outcome of a write is unknown. */
export class LeaseStoreUnavailableError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('LEASE_STORE_UNAVAILABLE', message, options);
  }
}

/** A lease record that hadb cannot read: garbage bytes, another format version, missing fields. */
export class LeaseRecordInvalidError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('LEASE_RECORD_INVALID', message, options);
  }
}

/** Storage could not be reached or failed; the call may be retried. */
export class StorageUnavailableError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('STORAGE_UNAVAILABLE', message, options);
  }
}

/** No object at the key asked for. */
export class StorageNotFoundError extends HadbError {
  readonly key: string;
  constructor(key: string, options?: ErrorOptions) {
    super('STORAGE_NOT_FOUND', `no object at ${JSON.stringify(key)}`, options);
    this.key = key;
  }
}

/** A storage or lease key that is not allowed. */
export class InvalidKeyError extends HadbError {
  constructor(key: string, why: string) {
    super('INVALID_KEY', `${JSON.stringify(key)}: ${why}`);
  }
}

/** An option, argument or configuration value that is not valid. */
export class InvalidArgumentError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('INVALID_ARGUMENT', message, options);
  }
}

/** Something did not finish within its time limit. */
export class TimeoutError extends HadbError {
  constructor(what: string, ms: number) {
    super('TIMEOUT', `${what} did not finish within ${ms} ms`);
  }
}

/** The codes of `ChangesetError`. */
export type ChangesetErrorCode = Extract<HadbErrorCode, `CHANGESET_${string}`>;

/** A changeset that must not be applied: damaged, from elsewhere, or out of chain. */
export class ChangesetError extends HadbError {
  declare readonly code: ChangesetErrorCode;
  constructor(code: ChangesetErrorCode, message: string, options?: ErrorOptions) {
    super(code, message, options);
  }
}

/** The `-wal` file does not hold what SQLite would have written. */
export class WalInvalidError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('WAL_INVALID', message, options);
  }
}

/** The SQLite library is older than hadb supports. */
export class SqliteTooOldError extends HadbError {
  constructor(version: string, minimum: string) {
    super(
      'SQLITE_TOO_OLD',
      `SQLite ${version} has the WAL-reset bug; hadb replicates only with ${minimum} or later`,
    );
  }
}

/** A snapshot in storage is damaged or does not match its manifest. */
export class SnapshotInvalidError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('SNAPSHOT_INVALID', message, options);
  }
}

/** The local database has history that storage does not: restoring over it would lose writes. */
export class LineageAheadError extends HadbError {
  constructor(message: string) {
    super('LINEAGE_AHEAD', message);
  }
}

/**
 * A copy of a database does not hold what the log says it should: its whole-database checksum
 * differs from the one recorded for that position. Nothing may serve or ship it as current.
 */
export class DatabaseDivergedError extends HadbError {
  /** The position whose recorded checksum the copy fails (0 for a snapshot's own record). */
  readonly seq: number;
  readonly expected: string;
  readonly actual: string;
  constructor(seq: number, expected: string, actual: string, message: string) {
    super('DATABASE_DIVERGED', `${message} (checksum ${actual}, expected ${expected})`);
    this.seq = seq;
    this.expected = expected;
    this.actual = actual;
  }
}

/** The log has a hole (or was compacted below the position we need). */
export class ReplicationGapError extends HadbError {
  /** When the log was compacted below the point asked for: the earliest one still restorable. */
  readonly earliest: { seq: number; commitTimeMs: number } | undefined;
  constructor(message: string, earliest?: { seq: number; commitTimeMs: number }) {
    super('REPLICATION_GAP', message);
    this.earliest = earliest;
  }
}

/** Another leader took this database over: its sequence slot in storage is already taken. */
export class FencedError extends HadbError {
  readonly seq: number;
  constructor(seq: number, message: string) {
    super('FENCED', message);
    this.seq = seq;
  }
}

/** This node does not lead the database (or stopped leading it while the call ran). */
export class NotLeaderError extends HadbError {
  constructor(message: string) {
    super('NOT_LEADER', message);
  }
}

/** No leader answered in time; `waitedMs` says how long the caller kept trying. */
export class LeaderUnavailableError extends HadbError {
  readonly waitedMs: number;
  constructor(message: string, waitedMs: number, options?: ErrorOptions) {
    super('LEADER_UNAVAILABLE', `${message} (waited ${waitedMs} ms)`, options);
    this.waitedMs = waitedMs;
  }
}

/** SQLite refused a statement; `sqliteCode` is SQLite's own code, such as `SQLITE_CONSTRAINT_UNIQUE`. */
export class SqlError extends HadbError {
  readonly sqliteCode: string;
  constructor(sqliteCode: string, message: string, options?: ErrorOptions) {
    super('SQL_ERROR', message, options);
    this.sqliteCode = sqliteCode;
  }
}

/**
 * Client SQL that could change what replication depends on or reach outside its database (ATTACH,
 * most PRAGMAs, VACUUM, transaction control inside hadb's transaction, hadb's own tables): refused
 * before anything of the request ran. The message says what and why.
 */
export class StatementRefusedError extends HadbError {
  constructor(message: string) {
    super('STATEMENT_REFUSED', message);
  }
}

/** A database that is not open on this node (or, for the CLI, that storage holds nothing of). */
export class UnknownDatabaseError extends HadbError {
  readonly db: string;
  constructor(db: string, message = `database ${JSON.stringify(db)} is not open on this node`) {
    super('UNKNOWN_DATABASE', message);
    this.db = db;
  }
}

/** A node-to-node request without the cluster secret: refused before anything is read. */
export class UnauthorizedError extends HadbError {
  constructor(message: string) {
    super('UNAUTHORIZED', message);
  }
}

/** A node-to-node request hadb cannot parse. */
export class BadRequestError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('BAD_REQUEST', message, options);
  }
}

/**
 * A call on a node, database, transaction or statement process that was closed or ended;
 * `how` says how, when more than "is closed" (a process that died, a transaction rolled back).
 */
export class ClosedError extends HadbError {
  constructor(what: string, how = 'is closed') {
    super('CLOSED', `${what} ${how}`);
  }
}

/**
 * The lease store failed its compare-and-swap self-test (a conditional write it should reject was
 * accepted, or the reverse): two nodes could both hold a lease over it, so hadb refuses to use it.
 */
export class LeaseStoreUnsafeError extends HadbError {
  /** The self-test step that failed. */
  readonly step: string;
  constructor(step: string, message: string, options?: ErrorOptions) {
    super('LEASE_STORE_UNSAFE', `self-test step "${step}" failed: ${message}`, options);
    this.step = step;
  }
}

/**
 * A write committed on the leader whose upload was not confirmed in time: it may still become
 * durable (it ships if the leader keeps its lease) or be parked. Do not assume either.
 */
export class NotDurableError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('NOT_DURABLE', message, options);
  }
}

/**
 * The storage (with its prefix) and the lease store given to a node do not belong to one cluster:
 * their identity records differ, or one has none (most often a mistyped path, URL or prefix).
 */
export class StoreMismatchError extends HadbError {
  /** What the node was given, without credentials. */
  readonly storage: string;
  readonly leases: string;
  /** The cluster each store belongs to; null when it has no identity record. */
  readonly storageCluster: string | null;
  readonly leaseCluster: string | null;
  constructor(
    message: string,
    stores: {
      storage: string;
      leases: string;
      storageCluster: string | null;
      leaseCluster: string | null;
    },
  ) {
    super('STORE_MISMATCH', message);
    this.storage = stores.storage;
    this.leases = stores.leases;
    this.storageCluster = stores.storageCluster;
    this.leaseCluster = stores.leaseCluster;
  }
}

/**
 * This node's copy of `db` cannot catch up with storage: what storage holds at `seq` cannot be
 * applied (a damaged changeset, a broken chain, another page size, a missing link). The copy is
 * not served and never leads until a retry gets past it (storage repaired). `reason` is the code
 * of the error underneath, which is also the `cause`.
 */
export class CatchUpFailedError extends HadbError {
  readonly db: string;
  readonly seq: number;
  readonly reason: string;
  constructor(db: string, seq: number, reason: string, options: ErrorOptions & { cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super('CATCH_UP_FAILED', `${db} cannot catch up with storage at seq ${seq}: ${why}`, options);
    this.db = db;
    this.seq = seq;
    this.reason = reason;
  }
}

/** The node stopped restarting this database's actor: it crashed too often. Reopen it to retry. */
export class DatabaseFailedError extends HadbError {
  readonly db: string;
  constructor(db: string, crashes: number, options: ErrorOptions & { cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super('DATABASE_FAILED', `${db} stopped after ${crashes} crashes: ${why}`, options);
    this.db = db;
  }
}

/** A client asked for more than a bound allows (streams, stored SQL); nothing of it was kept. */
export class LimitExceededError extends HadbError {
  constructor(message: string) {
    super('LIMIT_EXCEEDED', message);
  }
}

/** An interactive transaction outlived its maximum lifetime and was rolled back. */
export class TransactionExpiredError extends HadbError {
  readonly lifetimeMs: number;
  constructor(lifetimeMs: number) {
    super(
      'TRANSACTION_EXPIRED',
      `the transaction was open longer than its maximum lifetime (${lifetimeMs} ms) and was rolled back`,
    );
    this.lifetimeMs = lifetimeMs;
  }
}

/** A client statement ran past the node's time limit and was ended (its process killed). */
export class StatementTimeoutError extends HadbError {
  constructor(message: string) {
    super('STATEMENT_TIMEOUT', message);
  }
}

/** A client read's rows came to more than the node's result cap; it was refused. */
export class ResultTooLargeError extends HadbError {
  constructor(message: string) {
    super('RESULT_TOO_LARGE', message);
  }
}

/** A node-to-node call that got no usable answer: the peer may or may not have acted on it. */
export class PeerUnreachableError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('PEER_UNREACHABLE', message, options);
  }
}

/** Thrown instead of calling a remote service while its circuit breaker is open. */
export class BreakerOpenError extends HadbError {
  /** How long until the breaker lets a probe through, 0 when a probe is already in flight. */
  readonly retryInMs: number;
  constructor(retryInMs: number, options?: ErrorOptions) {
    super(
      'BREAKER_OPEN',
      retryInMs > 0
        ? `circuit open after repeated failures; next probe in ${Math.ceil(retryInMs)} ms`
        : 'circuit half-open; a probe call is in flight',
      options,
    );
    this.retryInMs = retryInMs;
  }
}

/**
 * A Hrana request the client made wrong, or one the Hrana server cannot honour: one error
 * result. `hranaCode` is the code the client sees (`SQL_NOT_FOUND`, `STREAM_CLOSED`...).
 */
export class HranaRequestError extends HadbError {
  readonly hranaCode: string;
  constructor(hranaCode: string, message: string) {
    super('HRANA_REQUEST_REFUSED', message);
    this.hranaCode = hranaCode;
  }
}

/**
 * A failed atomic run of Hrana statements: nothing was applied; `index` is the statement that
 * failed and `error` its error (what the client is told).
 */
export class AtomicRunFailedError extends HadbError {
  readonly index: number;
  readonly error: unknown;
  constructor(index: number, error: unknown) {
    super('ATOMIC_RUN_FAILED', `statement ${index} of an atomic run failed`, { cause: error });
    this.index = index;
    this.error = error;
  }
}

/** `hadb serve` has no database it can serve: none named or found, or none could be opened. */
export class NothingToServeError extends HadbError {
  constructor(message: string) {
    super('NOTHING_TO_SERVE', message);
  }
}

/** Something hadb relies on did not hold (a bug, or a broken installation): not the caller's fault. */
export class InternalError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('INTERNAL', message, options);
  }
}

type ErrorClass = abstract new (...args: never[]) => HadbError;

/**
 * Each code's one class (the `CHANGESET_*` codes are all `ChangesetError`'s) and the HTTP status
 * of an answer that carries the code, on the node protocol and Hrana alike: 400 a malformed
 * request, 401 a wrong secret or token, 404 no such database, 409 refused in the state the node
 * is in (it does not lead, the write was fenced, the statement ran too long), 422 the caller's
 * own SQL or arguments, 429 a bound a client reached, 503 not now (try again), 500 a fault that
 * asking again does not mend. A route that fails outright is answered 500 whatever the error.
 */
export const errorTable: {
  readonly [C in HadbErrorCode]: { readonly class: ErrorClass; readonly status: number };
} = {
  LEASE_STORE_UNAVAILABLE: { class: LeaseStoreUnavailableError, status: 503 },
  LEASE_RECORD_INVALID: { class: LeaseRecordInvalidError, status: 500 },
  STORAGE_UNAVAILABLE: { class: StorageUnavailableError, status: 503 },
  STORAGE_NOT_FOUND: { class: StorageNotFoundError, status: 500 },
  INVALID_KEY: { class: InvalidKeyError, status: 422 },
  INVALID_ARGUMENT: { class: InvalidArgumentError, status: 422 },
  TIMEOUT: { class: TimeoutError, status: 503 },
  CHANGESET_CORRUPT: { class: ChangesetError, status: 500 },
  CHANGESET_CHECKSUM_MISMATCH: { class: ChangesetError, status: 500 },
  CHANGESET_CHAIN_BROKEN: { class: ChangesetError, status: 500 },
  CHANGESET_WRONG_PAGE_SIZE: { class: ChangesetError, status: 500 },
  CHANGESET_UNKNOWN_VERSION: { class: ChangesetError, status: 500 },
  CHANGESET_WRONG_DATABASE: { class: ChangesetError, status: 500 },
  WAL_INVALID: { class: WalInvalidError, status: 500 },
  SQLITE_TOO_OLD: { class: SqliteTooOldError, status: 500 },
  SNAPSHOT_INVALID: { class: SnapshotInvalidError, status: 500 },
  LINEAGE_AHEAD: { class: LineageAheadError, status: 500 },
  REPLICATION_GAP: { class: ReplicationGapError, status: 500 },
  FENCED: { class: FencedError, status: 409 },
  NOT_LEADER: { class: NotLeaderError, status: 409 },
  LEADER_UNAVAILABLE: { class: LeaderUnavailableError, status: 503 },
  SQL_ERROR: { class: SqlError, status: 422 },
  UNKNOWN_DATABASE: { class: UnknownDatabaseError, status: 404 },
  UNAUTHORIZED: { class: UnauthorizedError, status: 401 },
  BAD_REQUEST: { class: BadRequestError, status: 400 },
  CLOSED: { class: ClosedError, status: 503 },
  NOT_DURABLE: { class: NotDurableError, status: 503 },
  LEASE_STORE_UNSAFE: { class: LeaseStoreUnsafeError, status: 500 },
  STORE_MISMATCH: { class: StoreMismatchError, status: 500 },
  CATCH_UP_FAILED: { class: CatchUpFailedError, status: 503 },
  DATABASE_FAILED: { class: DatabaseFailedError, status: 503 },
  DATABASE_DIVERGED: { class: DatabaseDivergedError, status: 500 },
  LIMIT_EXCEEDED: { class: LimitExceededError, status: 429 },
  TRANSACTION_EXPIRED: { class: TransactionExpiredError, status: 409 },
  STATEMENT_REFUSED: { class: StatementRefusedError, status: 422 },
  STATEMENT_TIMEOUT: { class: StatementTimeoutError, status: 409 },
  RESULT_TOO_LARGE: { class: ResultTooLargeError, status: 409 },
  PEER_UNREACHABLE: { class: PeerUnreachableError, status: 503 },
  BREAKER_OPEN: { class: BreakerOpenError, status: 503 },
  HRANA_REQUEST_REFUSED: { class: HranaRequestError, status: 400 },
  ATOMIC_RUN_FAILED: { class: AtomicRunFailedError, status: 422 },
  NOTHING_TO_SERVE: { class: NothingToServeError, status: 500 },
  INTERNAL: { class: InternalError, status: 503 },
};

/** The one class of each code, from {@link errorTable}. */
export const errorClasses = Object.fromEntries(
  Object.entries(errorTable).map(([code, entry]) => [code, entry.class]),
) as { readonly [C in HadbErrorCode]: ErrorClass };

/** The HTTP status of an answer that carries `code`, from {@link errorTable}. */
export function httpStatusOf(code: HadbErrorCode): number {
  return errorTable[code].status;
}

/**
 * An error another node reported, rebuilt as the class of its code: `message` is the text after
 * the `CODE: ` prefix, `fields` the class's own fields the wire carried (SqlError's `sqliteCode`).
 */
export function revivedError(
  code: HadbErrorCode,
  message: string,
  fields: Record<string, unknown> = {},
): HadbError {
  // HadbError's constructor with the class as new.target: the class's prototype and name, the
  // message as sent (the class's own constructor would word it again).
  const error: HadbError = Reflect.construct(HadbError, [code, message], errorClasses[code]);
  return Object.assign(error, fields);
}
