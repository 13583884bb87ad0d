// A statement process of the node's StatementRunner (statement-runner.ts). Plain JavaScript, so
// a forked Node loads it without tsx, under `hadb serve` and vitest alike. It runs client reads
// on read-only connections of its own: the parent SIGKILLs it when one runs past its time limit,
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
    const sqliteCode = sqliteCodeOf(error);
    process.send({
      id,
      ok: false,
      kind: sqliteCode === null ? 'error' : 'sql',
      sqliteCode,
      message: error instanceof Error ? error.message : String(error),
      index,
      closed,
    });
  }
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
  else if (message.type === 'forget') forget(message);
});
process.send({ ready: true });
