import Database from 'better-sqlite3';
import { assertSqliteVersion } from './wal.ts';

/** What {@link LeaderConnections} sets on the app's connection and every capture checks (values as PRAGMA reads them). */
const OWN_SETTINGS: readonly { pragma: string; expected: string }[] = [
  { pragma: 'journal_mode', expected: 'wal' },
  { pragma: 'wal_autocheckpoint', expected: '0' },
  { pragma: 'locking_mode', expected: 'normal' },
  { pragma: 'query_only', expected: '0' },
  { pragma: 'busy_timeout', expected: '0' },
];
const settingChecks = new WeakMap<Database.Database, Database.Statement[]>();

export interface ConnectionOptions {
  path: string;
  /** Page size of a new database (ignored for an existing one). */
  pageSize?: number | undefined;
  /** SQLite's `cache_size` of the app's connection in KiB; default SQLite's. */
  pageCacheKiB?: number | undefined;
  /** SQLite cuts a restarted WAL back to this size (Infinity: never). */
  walTruncateBytes: number;
  /** A setting of the app's connection was found changed and set back. */
  onSettingReset: (reset: { pragma: string; expected: string; actual: string }) => void;
}

/**
 * A leader's three connections to its file: the app's (writes go through it), the checkpointer
 * (the only one that copies WAL frames into the file) and the pin (a read transaction that keeps
 * SQLite from checkpointing past what a flush ships). The checkpointer and the pin open on first use.
 */
export class LeaderConnections {
  readonly #options: ConnectionOptions;
  /** Null while closed (hibernated, or not opened yet). Closed ones stay so late use fails loudly. */
  #app: Database.Database | null = null;
  #checkpointer: Database.Database | null = null;
  #pin: Database.Database | null = null;
  #pinned = false;

  constructor(options: ConnectionOptions) {
    this.#options = options;
  }

  /** The app's connection; null while closed. */
  get app(): Database.Database | null {
    return this.#app;
  }

  /** Opens the app's connection, configured; closed again if configuring fails. */
  open(): Database.Database {
    const database = new Database(this.#options.path);
    try {
      checkSqliteVersionOnce(database);
      const pageSize = this.#options.pageSize;
      if (pageSize !== undefined) database.pragma(`page_size = ${Number(pageSize)}`);
      this.#configure(database);
      // A read opens the WAL and leaves this connection holding it for as long as it is open.
      // Until then another connection (an interactive transaction's, a reader's) could be the
      // last one to close the file: SQLite would checkpoint its commits into the database and
      // delete the WAL before they were captured.
      database.prepare('select 1 from sqlite_master limit 1').get();
    } catch (error) {
      database.close();
      throw error;
    }
    this.#app = database;
    return database;
  }

  /** Opened on first use: most leaders of a node never checkpoint on this thread. */
  get checkpointer(): Database.Database {
    if (this.#checkpointer === null) {
      const checkpointer = new Database(this.#options.path);
      checkpointer.pragma('busy_timeout = 0');
      // Its checkpoints are the ones this leader asks for, never automatic ones.
      checkpointer.pragma('wal_autocheckpoint = 0');
      // It only copies WAL frames into the file: it needs almost no cache of its own.
      checkpointer.pragma('cache_size = -64');
      this.#checkpointer = checkpointer;
    }
    return this.#checkpointer;
  }

  /** Per-connection settings of the app's connection (they do not persist in the file). */
  #configure(database: Database.Database): void {
    // Waiting for a lock here would stall the event loop, and every lease on the node with it:
    // the hosted database queues its writers instead, so a lock held elsewhere fails at once.
    database.pragma('busy_timeout = 0');
    database.pragma('journal_mode = WAL');
    database.pragma('wal_autocheckpoint = 0');
    // A restarted WAL is overwritten in place, which costs far less than truncating it to zero;
    // SQLite cuts the file back to this size at the first commit after the restart.
    const limit = this.#options.walTruncateBytes;
    database.pragma(
      `journal_size_limit = ${Number.isFinite(limit) ? Math.max(0, Math.floor(limit)) : -1}`,
    );
    const cacheKiB = this.#options.pageCacheKiB;
    if (cacheKiB !== undefined)
      database.pragma(`cache_size = ${-Math.max(1, Math.floor(cacheKiB))}`);
  }

  /**
   * Reads back the settings of the app's connection that capture depends on and sets back any
   * that changed, reporting each: once per capture, a few microseconds.
   */
  reassertSettings(): void {
    const database = this.#app;
    if (database === null) return;
    let checks = settingChecks.get(database);
    if (!checks) {
      checks = OWN_SETTINGS.map(({ pragma }) => database.prepare(`PRAGMA ${pragma}`).pluck());
      settingChecks.set(database, checks);
    }
    for (const [i, setting] of OWN_SETTINGS.entries()) {
      const actual = String((checks[i] as Database.Statement).get()).toLowerCase();
      if (actual === setting.expected) continue;
      try {
        database.pragma(`${setting.pragma} = ${setting.expected}`);
      } finally {
        this.#options.onSettingReset({
          pragma: setting.pragma,
          expected: setting.expected,
          actual,
        });
      }
    }
  }

  get pinned(): boolean {
    return this.#pinned;
  }

  /** Starts the pin's read transaction; false when the connections are closed (hibernated). */
  pin(): boolean {
    if (this.#app === null || this.#pinned) return this.#pinned;
    if (this.#pin === null) {
      this.#pin = new Database(this.#options.path);
      this.#pin.pragma('wal_autocheckpoint = 0');
      this.#pin.pragma('cache_size = -64');
    }
    const pin = this.#pin;
    pin.exec('BEGIN');
    try {
      pin.prepare('SELECT 1 FROM sqlite_master LIMIT 1').get();
    } catch {
      // Shipping goes on without it; the checkpoint then sets everything aside first.
      pin.exec('ROLLBACK');
      return false;
    }
    this.#pinned = true;
    return true;
  }

  unpin(): void {
    if (!this.#pinned) return;
    this.#pinned = false;
    if (this.#pin?.open) this.#pin.exec('COMMIT');
  }

  /** Closes every connection; they stay, closed, so late use fails loudly. */
  close(): void {
    this.#app?.close();
    this.#pin?.close();
    // Last, so SQLite's final checkpoint on close sees only shipped frames.
    this.#checkpointer?.close();
  }

  /** Closes every connection and forgets them: the next {@link open} starts afresh (hibernation). */
  release(): void {
    this.close();
    this.#app = null;
    this.#checkpointer = null;
    this.#pin = null;
  }
}

let sqliteVersionChecked = false;

/** Refuses a SQLite too old to replicate; one library per process, so asked once. */
function checkSqliteVersionOnce(database: Database.Database): void {
  if (sqliteVersionChecked) return;
  const version = (database.prepare('select sqlite_version() as v').get() as { v: string }).v;
  assertSqliteVersion(version);
  sqliteVersionChecked = true;
}
