import Database from 'better-sqlite3';
import type { Row, SqlParams, SqlValue, Statement, StatementResult } from '../api-types.ts';
import { SqlError } from '../errors.ts';

/** Prepared statements per connection, most recently used last. */
const CACHE_SIZE = 200;
/** SQL text kept by one connection's cache: a statement's memory grows with its text. */
export const STATEMENT_CACHE_BYTES = 8 * 1024 * 1024;
/** A statement with a longer text is prepared each time, never kept (one-off bulk SQL). */
export const STATEMENT_CACHE_ENTRY_BYTES = 64 * 1024;

interface StatementCache {
  statements: Map<string, { statement: Database.Statement; bytes: number }>;
  bytes: number;
}
const caches = new WeakMap<Database.Database, StatementCache>();

/** A prepared statement from the connection's cache. */
export function prepare(connection: Database.Database, sql: string): Database.Statement {
  let cache = caches.get(connection);
  if (!cache) {
    cache = { statements: new Map(), bytes: 0 };
    caches.set(connection, cache);
  }
  const { statements } = cache;
  const cached = statements.get(sql);
  if (cached) {
    statements.delete(sql);
    statements.set(sql, cached);
    return cached.statement;
  }
  const statement = connection.prepare(sql);
  const bytes = Buffer.byteLength(sql);
  if (bytes > STATEMENT_CACHE_ENTRY_BYTES) return statement;
  statements.set(sql, { statement, bytes });
  cache.bytes += bytes;
  while (statements.size > CACHE_SIZE || cache.bytes > STATEMENT_CACHE_BYTES) {
    const [oldest, entry] = statements.entries().next().value as [string, { bytes: number }];
    statements.delete(oldest);
    cache.bytes -= entry.bytes;
  }
  return statement;
}

/** Runs one statement; SQLite's refusals become {@link SqlError} with SQLite's code. */
export function runStatement(
  connection: Database.Database,
  { sql, params }: Statement,
  bigints: boolean,
): StatementResult {
  return asSqlError(() => {
    const statement = prepare(connection, sql);
    statement.safeIntegers(bigints);
    const args = bindable(params);
    if (statement.reader) {
      const rows = statement.all(...args) as Row[];
      return { changes: 0, lastInsertRowid: 0, rows };
    }
    const { changes, lastInsertRowid } = statement.run(...args);
    return { changes, lastInsertRowid };
  });
}

/** Rows of a read; a statement that would write is refused. */
export function readRows(
  connection: Database.Database,
  { sql, params }: Statement,
  bigints: boolean,
): Row[] {
  return asSqlError(() => {
    const statement = prepare(connection, sql);
    if (!statement.readonly) {
      throw new SqlError('SQLITE_READONLY', `a read may not write: ${sql.slice(0, 80)}`);
    }
    statement.safeIntegers(bigints);
    return statement.reader ? (statement.all(...bindable(params)) as Row[]) : [];
  });
}

function bindable(params: SqlParams | undefined): unknown[] {
  if (params === undefined) return [];
  if (Array.isArray(params)) return params.map(toSqlite);
  const named: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(params as Record<string, SqlValue>))
    named[name] = toSqlite(value);
  return [named];
}

/** better-sqlite3 binds blobs only from Buffers. */
function toSqlite(value: SqlValue): unknown {
  return value instanceof Uint8Array && !Buffer.isBuffer(value)
    ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
    : value;
}

export function asSqlError<T>(work: () => T): T {
  try {
    return work();
  } catch (error) {
    throw toSqlError(error);
  }
}

export function toSqlError(error: unknown): unknown {
  if (error instanceof SqlError) return error;
  if (error instanceof Database.SqliteError) {
    return new SqlError(error.code, error.message, { cause: error });
  }
  // Binding mistakes are raised by better-sqlite3 before SQLite sees the statement.
  if (error instanceof RangeError)
    return new SqlError('SQLITE_RANGE', error.message, { cause: error });
  if (error instanceof TypeError)
    return new SqlError('SQLITE_MISUSE', error.message, { cause: error });
  return error;
}
