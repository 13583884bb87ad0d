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
  | 'FENCED';

export class HadbError extends Error {
  readonly code: HadbErrorCode;

  constructor(code: HadbErrorCode, message: string, options?: ErrorOptions) {
    super(`${code}: ${message}`, options);
    this.code = code;
    this.name = new.target.name;
  }
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

export class StorageUnavailableError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('STORAGE_UNAVAILABLE', message, options);
  }
}

export class StorageNotFoundError extends HadbError {
  readonly key: string;
  constructor(key: string, options?: ErrorOptions) {
    super('STORAGE_NOT_FOUND', `no object at ${JSON.stringify(key)}`, options);
    this.key = key;
  }
}

export class InvalidKeyError extends HadbError {
  constructor(key: string, why: string) {
    super('INVALID_KEY', `${JSON.stringify(key)}: ${why}`);
  }
}

export class InvalidArgumentError extends HadbError {
  constructor(message: string, options?: ErrorOptions) {
    super('INVALID_ARGUMENT', message, options);
  }
}

export class TimeoutError extends HadbError {
  constructor(what: string, ms: number) {
    super('TIMEOUT', `${what} did not finish within ${ms} ms`);
  }
}

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

export class SqliteTooOldError extends HadbError {
  constructor(version: string, minimum: string) {
    super(
      'SQLITE_TOO_OLD',
      `SQLite ${version} has the WAL-reset bug; hadb replicates only with ${minimum} or later`,
    );
  }
}

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

/** The log has a hole (or was compacted below the position we need). */
export class ReplicationGapError extends HadbError {
  constructor(message: string) {
    super('REPLICATION_GAP', message);
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
