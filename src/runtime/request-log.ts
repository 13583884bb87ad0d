import type Database from 'better-sqlite3';
import type { StatementResult } from '../api-types.ts';
import { prepare } from '../statements/sql.ts';
import { decodeStored, encodeMessage } from '../wire/forward.ts';

/**
 * The table, in the database itself, where the leader keeps each forwarded write's answer under
 * its request id: a retry that reaches the next leader is still answered once.
 */
export const REQUESTS_TABLE = '_hadb_requests';
const REQUEST_RETENTION_MS = 15 * 60_000;
/** Leader connections whose request table is known to exist. */
const tablesReady = new WeakSet<Database.Database>();

/** What a statement process keeps under a request id in the commit that applies it. */
export interface RememberedAnswer {
  id: string;
  at: number;
  results: Uint8Array;
  pruneBefore?: number;
}

/** One database's request log: answers kept by request id, pruned every 1000 remembered. */
export class RequestLog {
  #rememberedSincePrune = 0;

  /** The answer an earlier attempt of `requestId` committed, read inside the caller's transaction. */
  priorAnswer(connection: Database.Database, requestId: string): StatementResult[] | null {
    this.#ensureTable(connection);
    const row = prepare(connection, `select results from ${REQUESTS_TABLE} where id = ?`).get(
      requestId,
    ) as { results: Buffer } | undefined;
    return row ? (decodeStored(row.results) as StatementResult[]) : null;
  }

  /** Kept in the database itself, so a retry that reaches the next leader is still answered once. */
  remember(connection: Database.Database, requestId: string, results: StatementResult[]): void {
    const now = Date.now();
    prepare(connection, `insert into ${REQUESTS_TABLE}(id, at, results) values (?, ?, ?)`).run(
      requestId,
      now,
      encodeMessage(results),
    );
    if (this.#pruneDue()) {
      connection
        .prepare(`delete from ${REQUESTS_TABLE} where at < ?`)
        .run(now - REQUEST_RETENTION_MS);
    }
  }

  /** The transaction that remembered on `connection` committed: its table exists from now on. */
  committed(connection: Database.Database): void {
    // Only once committed: a rolled-back transaction takes the new table with it.
    tablesReady.add(connection);
  }

  /** What a write in a statement process keeps under `requestId` as it commits. */
  answerToKeep(requestId: string, results: StatementResult[]): RememberedAnswer {
    const now = Date.now();
    const prune = this.#pruneDue();
    return {
      id: requestId,
      at: now,
      results: encodeMessage(results),
      ...(prune ? { pruneBefore: now - REQUEST_RETENTION_MS } : {}),
    };
  }

  /** The answer kept under `requestId`, read on the leader's connection (no table: none). */
  keptAnswer(connection: Database.Database, requestId: string): StatementResult[] | null {
    const table = connection
      .prepare('select 1 from sqlite_master where type = ? and name = ?')
      .get('table', REQUESTS_TABLE);
    if (!table) return null;
    const row = prepare(connection, `select results from ${REQUESTS_TABLE} where id = ?`).get(
      requestId,
    ) as { results: Buffer } | undefined;
    return row ? (decodeStored(row.results) as StatementResult[]) : null;
  }

  /** Counts one remembered answer; true every 1000th, when old ones are pruned. */
  #pruneDue(): boolean {
    this.#rememberedSincePrune += 1;
    if (this.#rememberedSincePrune < 1000) return false;
    this.#rememberedSincePrune = 0;
    return true;
  }

  #ensureTable(connection: Database.Database): void {
    if (tablesReady.has(connection)) return;
    connection.exec(
      `create table if not exists ${REQUESTS_TABLE}(id text primary key, at integer not null, results blob not null) without rowid`,
    );
  }
}
