// A statement process of the node's StatementRunner (statement-runner.ts). Plain JavaScript, so
// a forked Node loads it without tsx, under `hadb serve` and vitest alike. It runs client reads
// on read-only connections of its own, client writes and interactive transactions on read-write
// connections opened for each: the parent SIGKILLs it when one runs past its time limit,
// which no thread can do to a running SQLite statement (better-sqlite3 has no interrupt).
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';

const parentPid = process.ppid;
// Orphaned (the parent was SIGKILLed) while a statement runs: 'disconnect' waits for the
// statement, so a thread of its own notices the new parent and ends the process.
new Worker(
  `const { parentPort } = require('node:worker_threads');
   const parent = ${parentPid};
   setInterval(() => { if (process.ppid !== parent) process.kill(process.pid, 'SIGKILL'); }, 500);`,
  { eval: true },
).unref();
process.on('disconnect', () => process.exit(0));

const maxConnections = Number(process.env.HADB_RUNNER_MAX_CONNECTIONS ?? 64);
const STATEMENTS_PER_CONNECTION = 64;
/** Longer SQL is prepared each time rather than kept. */
const CACHEABLE_SQL_CHARS = 16 * 1024;

/** Open connections by path, most recently used last; each with its prepared statements. */
const connections = new Map();

function connectionFor(path, cacheKiB) {
  let entry = connections.get(path);
  if (entry) {
    connections.delete(path);
    connections.set(path, entry);
    return entry;
  }
  const database = new Database(path, { readonly: true, fileMustExist: true });
  if (cacheKiB !== undefined) database.pragma(`cache_size = ${-cacheKiB}`);
  entry = { database, statements: new Map() };
  connections.set(path, entry);
  const closed = [];
  while (connections.size > maxConnections) {
    const [oldest, old] = connections.entries().next().value;
    connections.delete(oldest);
    old.database.close();
    closed.push(oldest);
  }
  entry.closedOthers = closed;
  return entry;
}

function prepare(entry, sql) {
  const cached = entry.statements.get(sql);
  if (cached) {
    entry.statements.delete(sql);
    entry.statements.set(sql, cached);
    return cached;
  }
  const statement = entry.database.prepare(sql);
  if (sql.length <= CACHEABLE_SQL_CHARS) {
    entry.statements.set(sql, statement);
    if (entry.statements.size > STATEMENTS_PER_CONNECTION) {
      entry.statements.delete(entry.statements.keys().next().value);
    }
  }
  return statement;
}

function bindable(params) {
  if (params === undefined) return [];
  if (Array.isArray(params)) return params.map(toSqlite);
  const named = {};
  for (const [name, value] of Object.entries(params)) named[name] = toSqlite(value);
  return [named];
}

/** better-sqlite3 binds blobs only from Buffers; IPC delivers them as Uint8Array. */
function toSqlite(value) {
  return value instanceof Uint8Array && !Buffer.isBuffer(value)
    ? Buffer.from(value.buffer, value.byteOffset, value.byteLength)
    : value;
}

/** What a value costs in the answer, roughly as the client receives it. */
function sizeOf(value) {
  if (value === null) return 1;
  if (typeof value === 'string') return value.length;
  if (typeof value === 'number' || typeof value === 'bigint') return 8;
  return value.byteLength ?? 8;
}

class TooLarge extends Error {}

function readAll(entry, { sql, params }, bigints, budget) {
  const statement = prepare(entry, sql);
  if (!statement.readonly) {
    const error = new Error(`a read may not write: ${sql.slice(0, 80)}`);
    error.sqliteCode = 'SQLITE_READONLY';
    throw error;
  }
  if (!statement.reader) return [];
  statement.safeIntegers(bigints);
  const rows = [];
  for (const row of statement.iterate(...bindable(params))) {
    for (const key in row) budget.left -= sizeOf(row[key]) + key.length;
    // Counted as the rows arrive: leaving the loop ends the statement.
    if (budget.left < 0) throw new TooLarge();
    rows.push(row);
  }
  return rows;
}

function sqliteCodeOf(error) {
  if (error instanceof Database.SqliteError) return error.code;
  if (typeof error.sqliteCode === 'string') return error.sqliteCode;
  // Binding mistakes are raised by better-sqlite3 before SQLite sees the statement.
  if (error instanceof RangeError) return 'SQLITE_RANGE';
  if (error instanceof TypeError) return 'SQLITE_MISUSE';
  return null;
}

function read({ id, path, statements, bigints, maxBytes, cacheKiB }) {
  const budget = { left: maxBytes };
  const results = [];
  let index = 0;
  let closed = [];
  try {
    const entry = connectionFor(path, cacheKiB);
    closed = entry.closedOthers;
    entry.closedOthers = [];
    for (; index < statements.length; index++) {
      results.push(readAll(entry, statements[index], bigints, budget));
    }
    process.send({ id, ok: true, results, closed });
  } catch (error) {
    if (error instanceof TooLarge) {
      process.send({ id, ok: false, kind: 'too-large', index, closed });
      return;
    }
    process.send({ ...failure(id, error, index), closed });
  }
}

/** The write waiting for its COMMIT or ROLLBACK (one at a time per process). */
let pendingWrite = null;

/**
 * Closes a write's connection, unless the node is gone: then it would be the file's last
 * connection, and SQLite would checkpoint and delete the WAL that holds the leader's unshipped
 * commits. A kill closes nothing (nor does process.exit: better-sqlite3 leaves them open).
 */
function closeWriteConnection(database) {
  if (!process.connected || process.ppid !== parentPid) process.kill(process.pid, 'SIGKILL');
  database.close();
}

/** BEGIN IMMEDIATE, retried while the leader's checkpoint holds the write lock for a moment. */
function beginImmediate(database) {
  const until = Date.now() + 1000;
  for (;;) {
    try {
      database.exec('BEGIN IMMEDIATE');
      return;
    } catch (error) {
      if (!(error instanceof Database.SqliteError) || error.code !== 'SQLITE_BUSY') throw error;
      if (Date.now() >= until) throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
  }
}

function runStatement(database, { sql, params }, bigints) {
  const statement = database.prepare(sql);
  statement.safeIntegers(bigints);
  const args = bindable(params);
  if (statement.reader) return { changes: 0, lastInsertRowid: 0, rows: statement.all(...args) };
  const { changes, lastInsertRowid } = statement.run(...args);
  return { changes, lastInsertRowid };
}

function failure(id, error, index) {
  const sqliteCode = sqliteCodeOf(error);
  return {
    id,
    ok: false,
    kind: sqliteCode === null ? 'error' : 'sql',
    sqliteCode,
    message: error instanceof Error ? error.message : String(error),
    index,
  };
}

/**
 * A client write up to its COMMIT, on a read-write connection opened for it alone: closed right
 * after, it never outlives the leader's connection, whose close (the last one) must be the one
 * that checkpoints. The leader's replicator is the only checkpointer, and waiting for a lock is
 * the node's business, not SQLite's.
 */
function write({ id, path, statements, bigints, requestId, requestsTable, cacheKiB }) {
  let database = null;
  let index = 0;
  try {
    database = new Database(path, { fileMustExist: true });
    database.pragma('busy_timeout = 0');
    database.pragma('wal_autocheckpoint = 0');
    if (cacheKiB !== undefined) database.pragma(`cache_size = ${-cacheKiB}`);
    beginImmediate(database);
    if (requestId !== null) {
      database.exec(
        `create table if not exists ${requestsTable}(id text primary key, at integer not null, results blob not null) without rowid`,
      );
      const row = database
        .prepare(`select results from ${requestsTable} where id = ?`)
        .get(requestId);
      if (row) {
        pendingWrite = { database, requestsTable };
        process.send({ id, ok: true, written: [], prior: row.results });
        return;
      }
    }
    const written = [];
    for (; index < statements.length; index++) {
      written.push(runStatement(database, statements[index], bigints));
    }
    pendingWrite = { database, requestsTable };
    process.send({ id, ok: true, written, prior: null });
  } catch (error) {
    closeRolledBack(database);
    process.send(failure(id, error, index));
  }
}

function closeRolledBack(database) {
  if (database === null) return;
  try {
    if (database.inTransaction) database.exec('ROLLBACK');
  } finally {
    closeWriteConnection(database);
  }
}

function end({ id, commit, remember }) {
  const current = pendingWrite;
  pendingWrite = null;
  if (current === null) {
    process.send({ id, ok: false, kind: 'error', message: 'no write is waiting', index: 0 });
    return;
  }
  const { database, requestsTable } = current;
  finish(id, database, commit, () => {
    if (!remember) return;
    database
      .prepare(`insert into ${requestsTable}(id, at, results) values (?, ?, ?)`)
      .run(remember.id, remember.at, toSqlite(remember.results));
    if (remember.pruneBefore !== undefined) {
      database.prepare(`delete from ${requestsTable} where at < ?`).run(remember.pruneBefore);
    }
  });
}

/**
 * Ends a write's or a transaction's connection: `beforeCommit` then COMMIT when `commit`, and the
 * connection closed (rolled back if still open) whatever happens; answers request `id`.
 */
function finish(id, database, commit, beforeCommit = () => {}) {
  try {
    if (commit) {
      beforeCommit();
      database.exec('COMMIT');
    }
    closeRolledBack(database);
    process.send({ id, ok: true });
  } catch (error) {
    try {
      closeRolledBack(database);
    } catch {
      // Closing a connection with a failed commit: the process's exit closes it anyway.
    }
    process.send(failure(id, error, 0));
  }
}

/** Interactive transactions held here, by the node's id for each: one connection each. */
const transactions = new Map();

/**
 * Opens an interactive transaction's connection and begins it: IMMEDIATE (SQLite's write lock
 * for the transaction's whole life) for a writing one, DEFERRED and query_only for a read-only one.
 */
function txBegin({ id, tx, path, readOnly, cacheKiB }) {
  let database = null;
  try {
    database = new Database(path, { fileMustExist: true });
    database.pragma('busy_timeout = 0');
    database.pragma('wal_autocheckpoint = 0');
    if (cacheKiB !== undefined) database.pragma(`cache_size = ${-cacheKiB}`);
    if (readOnly) {
      database.pragma('query_only = 1');
      database.exec('BEGIN DEFERRED');
    } else {
      beginImmediate(database);
    }
    transactions.set(tx, database);
    process.send({ id, ok: true });
  } catch (error) {
    closeRolledBack(database);
    process.send(failure(id, error, 0));
  }
}

/** One statement inside transaction `tx`; rows past `maxBytes` are refused. */
function txRun({ id, tx, statement, bigints, maxBytes }) {
  const database = transactions.get(tx);
  if (database === undefined) {
    process.send({ id, ok: false, kind: 'error', message: 'no such transaction', index: 0 });
    return;
  }
  try {
    const prepared = database.prepare(statement.sql);
    prepared.safeIntegers(bigints);
    const args = bindable(statement.params);
    let result;
    if (prepared.reader) {
      const budget = { left: maxBytes };
      const rows = [];
      for (const row of prepared.iterate(...args)) {
        for (const key in row) budget.left -= sizeOf(row[key]) + key.length;
        if (budget.left < 0) throw new TooLarge();
        rows.push(row);
      }
      result = { changes: 0, lastInsertRowid: 0, rows };
    } else {
      const { changes, lastInsertRowid } = prepared.run(...args);
      result = { changes, lastInsertRowid };
    }
    process.send({ id, ok: true, written: [result], inTransaction: txStillOpen(tx, database) });
  } catch (error) {
    const inTransaction = txStillOpen(tx, database);
    if (error instanceof TooLarge) {
      process.send({ id, ok: false, kind: 'too-large', index: 0, inTransaction });
      return;
    }
    process.send({ ...failure(id, error, 0), inTransaction });
  }
}

/** Some errors (SQLITE_FULL, an interrupted statement) make SQLite roll the whole thing back. */
function txStillOpen(tx, database) {
  if (database.inTransaction) return true;
  transactions.delete(tx);
  closeWriteConnection(database);
  return false;
}

function txEnd({ id, tx, commit }) {
  const database = transactions.get(tx);
  transactions.delete(tx);
  if (database === undefined) {
    process.send({ id, ok: false, kind: 'error', message: 'no such transaction', index: 0 });
    return;
  }
  finish(id, database, commit);
}

function forget({ id, path }) {
  const entry = connections.get(path);
  if (entry) {
    connections.delete(path);
    entry.database.close();
  }
  process.send({ id, ok: true, forgot: path });
}

process.on('message', (message) => {
  if (message.type === 'read') read(message);
  else if (message.type === 'write') write(message);
  else if (message.type === 'end') end(message);
  else if (message.type === 'forget') forget(message);
  else if (message.type === 'tx-begin') txBegin(message);
  else if (message.type === 'tx-run') txRun(message);
  else if (message.type === 'tx-end') txEnd(message);
});
process.send({ ready: true });
