import { describe, expect, it } from 'vitest';
import {
  AtomicRunFailedError,
  BadRequestError,
  BreakerOpenError,
  CatchUpFailedError,
  ChangesetError,
  ClosedError,
  DatabaseDivergedError,
  DatabaseFailedError,
  errorClasses,
  FencedError,
  HadbError,
  type HadbErrorCode,
  HranaRequestError,
  InternalError,
  InvalidArgumentError,
  InvalidKeyError,
  LeaderUnavailableError,
  LeaseRecordInvalidError,
  LeaseStoreUnavailableError,
  LeaseStoreUnsafeError,
  LimitExceededError,
  LineageAheadError,
  NotDurableError,
  NothingToServeError,
  NotLeaderError,
  PeerUnreachableError,
  ReplicationGapError,
  ResultTooLargeError,
  revivedError,
  SnapshotInvalidError,
  SqlError,
  SqliteTooOldError,
  StatementRefusedError,
  StatementTimeoutError,
  StorageNotFoundError,
  StorageUnavailableError,
  StoreMismatchError,
  TimeoutError,
  TransactionExpiredError,
  UnauthorizedError,
  UnknownDatabaseError,
  WalInvalidError,
} from '../../src/errors.ts';
import {
  decodeForwardResponse,
  encodeMessage,
  type ForwardResponse,
} from '../../src/wire/forward.ts';

const cause = { cause: new Error('underneath') };

/** One error of each code, built the way src builds it. */
const samples: { [C in HadbErrorCode]: () => HadbError } = {
  LEASE_STORE_UNAVAILABLE: () => new LeaseStoreUnavailableError('down'),
  LEASE_RECORD_INVALID: () => new LeaseRecordInvalidError('garbage'),
  STORAGE_UNAVAILABLE: () => new StorageUnavailableError('down'),
  STORAGE_NOT_FOUND: () => new StorageNotFoundError('a/b'),
  INVALID_KEY: () => new InvalidKeyError('a//b', 'empty segment'),
  INVALID_ARGUMENT: () => new InvalidArgumentError('bad'),
  TIMEOUT: () => new TimeoutError('reading', 5),
  CHANGESET_CORRUPT: () => new ChangesetError('CHANGESET_CORRUPT', 'torn'),
  CHANGESET_CHECKSUM_MISMATCH: () => new ChangesetError('CHANGESET_CHECKSUM_MISMATCH', 'x'),
  CHANGESET_CHAIN_BROKEN: () => new ChangesetError('CHANGESET_CHAIN_BROKEN', 'x'),
  CHANGESET_WRONG_PAGE_SIZE: () => new ChangesetError('CHANGESET_WRONG_PAGE_SIZE', 'x'),
  CHANGESET_UNKNOWN_VERSION: () => new ChangesetError('CHANGESET_UNKNOWN_VERSION', 'x'),
  CHANGESET_WRONG_DATABASE: () => new ChangesetError('CHANGESET_WRONG_DATABASE', 'x'),
  WAL_INVALID: () => new WalInvalidError('short frame'),
  SQLITE_TOO_OLD: () => new SqliteTooOldError('3.40.0', '3.44.0'),
  SNAPSHOT_INVALID: () => new SnapshotInvalidError('bad manifest'),
  LINEAGE_AHEAD: () => new LineageAheadError('ahead'),
  REPLICATION_GAP: () => new ReplicationGapError('hole at 3'),
  FENCED: () => new FencedError(4, 'slot taken'),
  NOT_LEADER: () => new NotLeaderError('not here'),
  LEADER_UNAVAILABLE: () => new LeaderUnavailableError('nobody', 15),
  SQL_ERROR: () => new SqlError('SQLITE_CONSTRAINT_UNIQUE', 'UNIQUE constraint failed: t.k'),
  UNKNOWN_DATABASE: () => new UnknownDatabaseError('nope'),
  UNAUTHORIZED: () => new UnauthorizedError('no secret'),
  BAD_REQUEST: () => new BadRequestError('not msgpack'),
  CLOSED: () => new ClosedError('node a'),
  NOT_DURABLE: () => new NotDurableError('upload unconfirmed'),
  LEASE_STORE_UNSAFE: () => new LeaseStoreUnsafeError('cas', 'accepted a stale write'),
  STORE_MISMATCH: () =>
    new StoreMismatchError('differ', {
      storage: 'file:///s',
      leases: 'file:///l',
      storageCluster: 'a',
      leaseCluster: null,
    }),
  CATCH_UP_FAILED: () => new CatchUpFailedError('db', 3, 'CHANGESET_CORRUPT', cause),
  DATABASE_FAILED: () => new DatabaseFailedError('db', 5, cause),
  DATABASE_DIVERGED: () => new DatabaseDivergedError(3, 'aa', 'bb', 'copy differs'),
  LIMIT_EXCEEDED: () => new LimitExceededError('too many streams'),
  TRANSACTION_EXPIRED: () => new TransactionExpiredError(1000),
  STATEMENT_REFUSED: () => new StatementRefusedError('ATTACH is not allowed'),
  STATEMENT_TIMEOUT: () => new StatementTimeoutError('ran past 1000 ms'),
  RESULT_TOO_LARGE: () => new ResultTooLargeError('past the cap'),
  PEER_UNREACHABLE: () => new PeerUnreachableError('POST /forward: ECONNREFUSED'),
  BREAKER_OPEN: () => new BreakerOpenError(250),
  HRANA_REQUEST_REFUSED: () => new HranaRequestError('SQL_NOT_FOUND', 'no SQL text stored as 3'),
  ATOMIC_RUN_FAILED: () => new AtomicRunFailedError(1, new SqlError('SQLITE_ERROR', 'x')),
  NOTHING_TO_SERVE: () => new NothingToServeError('no databases under prefix ""'),
  INTERNAL: () => new InternalError('an invariant broke'),
};

const codes = Object.keys(samples) as HadbErrorCode[];
const classes = new Set(Object.values(errorClasses));

/** What the leader sends for `error` (its message without the code prefix, as src sends it). */
function forwarded(error: HadbError): ForwardResponse {
  return {
    ok: false,
    code: error.code as Extract<ForwardResponse, { ok: false }>['code'],
    message: error.message.slice(`${error.code}: `.length),
    ...(error instanceof SqlError ? { sqliteCode: error.sqliteCode } : {}),
  };
}

describe('error codes', () => {
  it('the table has every code of the union, and nothing else', () => {
    expect(Object.keys(errorClasses).sort()).toEqual([...codes].sort());
  });

  it.each(codes)('%s is raised by exactly one class, the one the table names', (code) => {
    const error = samples[code]();
    expect(error.code).toBe(code);
    expect(error.message.startsWith(`${code}: `)).toBe(true);
    const owners = [...classes].filter((errorClass) => error instanceof errorClass);
    expect(owners).toEqual([errorClasses[code]]);
    expect(error.name).toBe(errorClasses[code].name);
  });

  it.each(codes)('%s round-trips through the forward encoding as its own class', (code) => {
    const sent = samples[code]();
    const answer = decodeForwardResponse(encodeMessage(forwarded(sent)));
    if (answer.ok) throw new Error('decoded as a success');
    const fields = answer.sqliteCode === undefined ? {} : { sqliteCode: answer.sqliteCode };
    const rebuilt = revivedError(answer.code, answer.message, fields);
    expect(rebuilt).toBeInstanceOf(errorClasses[code]);
    expect(rebuilt).toBeInstanceOf(HadbError);
    expect(rebuilt.code).toBe(code);
    expect(rebuilt.name).toBe(sent.name);
    expect(rebuilt.message).toBe(sent.message);
    if (sent instanceof SqlError) expect((rebuilt as SqlError).sqliteCode).toBe(sent.sqliteCode);
  });
});
