/**
 * Statements run as one transaction on a database through the public handle: reads from the local
 * copy after this node's last write, the rest on the leader as one batch; a failed batch's
 * failing statement found without applying anything.
 */
import type { HadbDatabase, Row, Statement, WriteToken } from '../api-types.ts';
import { AtomicRunFailedError, SqlError } from '../errors.ts';
import { type StmtResult, toStmtResult } from './codec.ts';

/** What SQLite says about RAISE outside a trigger: the marker that ends a probe batch. */
const PROBE_SQL = "select raise(abort, 'hadb probe')";
const PROBE_MESSAGE = 'RAISE() may only be used within a trigger-program';

/**
 * Runs the statements as one transaction. Reads are served from the local copy (after this
 * node's last write, so a client sees what it wrote through this node); anything else goes to
 * the leader as one batch.
 */
export async function runAtomic(
  db: HadbDatabase,
  statements: Statement[],
  wants: boolean[],
  readOnly = false,
): Promise<StmtResult[]> {
  if (readOnly) return readOnlyRun(db, statements, wants);
  const local = await tryLocalReads(db, statements);
  if (local)
    return local.map((rows, i) =>
      toStmtResult({ changes: 0, lastInsertRowid: 0, rows }, wants[i] ?? true),
    );
  try {
    const { results, token } = await db.batch(statements, { bigints: true, isolated: true });
    noteWrite(db, token);
    return results.map((result, i) => toStmtResult(result, wants[i] ?? true));
  } catch (error) {
    if (!(error instanceof SqlError)) throw error;
    if (statements.length === 1) throw new AtomicRunFailedError(0, error);
    throw await locateFailure(db, statements, error);
  }
}

/** A read-only transaction's statements: read here, and a statement that would write fails. */
async function readOnlyRun(
  db: HadbDatabase,
  statements: Statement[],
  wants: boolean[],
): Promise<StmtResult[]> {
  const results: StmtResult[] = [];
  for (const [i, statement] of statements.entries()) {
    try {
      const rows = await db.all(statement.sql, statement.params, {
        consistency: 'read-your-writes',
        ...afterWrites(db),
        bigints: true,
        isolated: true,
      });
      results.push(toStmtResult({ changes: 0, lastInsertRowid: 0, rows }, wants[i] ?? true));
    } catch (error) {
      throw new AtomicRunFailedError(i, error);
    }
  }
  return results;
}

/**
 * The newest write made through this server (forwarded, or committed on the leader by a relayed
 * stream), per database: reads here wait for it, so a client reads what it wrote.
 */
const lastWrites = new WeakMap<HadbDatabase, WriteToken>();

export function noteWrite(db: HadbDatabase, token: WriteToken): void {
  const last = lastWrites.get(db);
  if (!last || token.seq > last.seq) lastWrites.set(db, token);
}

function afterWrites(db: HadbDatabase): { after?: WriteToken } {
  const last = lastWrites.get(db);
  return last ? { after: last } : {};
}

async function tryLocalReads(db: HadbDatabase, statements: Statement[]): Promise<Row[][] | null> {
  // Reads run in a statement process: a plain write would only make the trip to be refused there.
  if (statements.some((statement) => isPlainWrite(statement.sql))) return null;
  const rows: Row[][] = [];
  for (const statement of statements) {
    try {
      rows.push(
        await db.all(statement.sql, statement.params, {
          consistency: 'read-your-writes',
          ...afterWrites(db),
          bigints: true,
          isolated: true,
        }),
      );
    } catch (error) {
      // A write is refused here (SQLITE_READONLY); a table created a moment ago may not have
      // reached this copy yet. Either way the leader decides.
      if (error instanceof SqlError) return null;
      throw error;
    }
  }
  return rows;
}

const WRITE_KEYWORD = /^(?:insert|update|delete|replace|create|drop|alter)\b/i;

/** Starts (after blanks and comments) with a keyword no read-only statement starts with. */
function isPlainWrite(whole: string): boolean {
  // Only a shortcut: past a few KiB of comments the statement process decides.
  const sql = whole.slice(0, 4096);
  let i = 0;
  for (;;) {
    // SQLite's blanks: space, tab, newline, form feed, carriage return.
    for (let c = sql.charCodeAt(i); c === 32 || (c >= 9 && c <= 13); c = sql.charCodeAt(++i));
    if (sql.startsWith('--', i)) {
      const end = sql.indexOf('\n', i);
      if (end < 0) return false;
      i = end + 1;
    } else if (sql.startsWith('/*', i)) {
      const end = sql.indexOf('*/', i + 2);
      if (end < 0) return false;
      i = end + 2;
    } else {
      return WRITE_KEYWORD.test(sql.slice(i, i + 8));
    }
  }
}

/**
 * Which statement of a failed batch SQLite refused: prefixes are re-run on the leader ending
 * with a statement that always fails, so each probe is rolled back and nothing is applied.
 */
async function locateFailure(
  db: HadbDatabase,
  statements: Statement[],
  error: SqlError,
): Promise<AtomicRunFailedError> {
  let lo = 0;
  let hi = statements.length - 1;
  let found: unknown = error;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    try {
      await db.batch([...statements.slice(0, mid + 1), { sql: PROBE_SQL }], {
        bigints: true,
        isolated: true,
      });
      lo = mid + 1; // cannot happen (the probe always fails), but stay safe
    } catch (probeError) {
      if (probeError instanceof SqlError && probeError.message.includes(PROBE_MESSAGE)) {
        lo = mid + 1;
      } else if (probeError instanceof SqlError) {
        hi = mid;
        found = probeError;
      } else {
        throw probeError;
      }
    }
  }
  return new AtomicRunFailedError(lo, found);
}
