import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { messageOf } from '../../error-message.ts';
import {
  HadbError,
  InvalidArgumentError,
  LeaseRecordInvalidError,
  LeaseStoreUnavailableError,
} from '../../errors.ts';
import { type CasResult, CONFLICT, type LeaseEntry, type LeaseStore } from './types.ts';

const DEFAULT_BUSY_TIMEOUT_MS = 5000;
const OPEN_RETRY_MS = 10;
/** Only the canonical form: revisions are compared as strings, so `01` is not `1`. */
const REVISION = /^(?:0|[1-9][0-9]{0,14})$/;

interface LeaseRow {
  /** An integer unless someone other than this store wrote the row. */
  revision: unknown;
  value: Buffer;
}

interface Statements {
  get: Database.Statement<[string], LeaseRow>;
  create: Database.Statement<[string, Buffer]>;
  update: Database.Statement<[Buffer, string, number]>;
}

/**
 * The default lease store for several processes on one machine: a SQLite file at `path`.
 *
 * Every compare-and-swap is a single SQLite statement, serialized across processes by SQLite's
 * POSIX file locks, which the kernel releases when a process dies, so a crash never leaves a
 * stale lock. The writes asked for in one turn of the event loop commit in one transaction, so
 * they share one fsync (a node claiming thousands of databases at once); when that transaction
 * fails, every one of them fails and none is applied. Needs a local filesystem: POSIX locks and
 * the WAL's shared memory are unreliable on network filesystems (NFS, SMB), where two processes
 * could both win a CAS.
 *
 * better-sqlite3 is synchronous: while another process holds the write lock, a call blocks the
 * event loop for up to `busyTimeoutMs` (default 5000) before failing with
 * `LeaseStoreUnavailableError`.
 */
export function createFsLeaseStore(options: {
  path: string;
  busyTimeoutMs?: number;
}): LeaseStore & { close(): Promise<void> } {
  if (typeof options?.path !== 'string' || options.path === '') {
    throw new InvalidArgumentError('createFsLeaseStore needs { path }: the lease database file');
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  let database: Database.Database | undefined;
  let opening: Promise<Statements> | undefined;
  let closed = false;
  let writes: PendingWrite[] = [];

  function openOnce(): Statements {
    const connection = new Database(options.path, { timeout: busyTimeoutMs });
    try {
      connection.pragma('journal_mode = WAL');
      // A lease write must survive power loss, or a revision could be handed out twice.
      connection.pragma('synchronous = FULL');
      connection.exec(
        'CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, revision INTEGER NOT NULL, value BLOB NOT NULL)',
      );
      const statements: Statements = {
        get: connection.prepare<[string], LeaseRow>(
          'SELECT revision, value FROM leases WHERE key = ?',
        ),
        create: connection.prepare<[string, Buffer]>(
          'INSERT INTO leases (key, revision, value) VALUES (?, 1, ?) ON CONFLICT (key) DO NOTHING',
        ),
        update: connection.prepare<[Buffer, string, number]>(
          'UPDATE leases SET value = ?, revision = revision + 1 WHERE key = ? AND revision = ?',
        ),
      };
      database = connection;
      return statements;
    } catch (error) {
      connection.close();
      throw error;
    }
  }

  async function open(): Promise<Statements> {
    await fsp.mkdir(path.dirname(options.path), { recursive: true });
    const deadline = performance.now() + busyTimeoutMs;
    for (;;) {
      try {
        return openOnce();
      } catch (error) {
        // Switching a new file to WAL can report busy while other processes open it too.
        if (!isBusy(error) || performance.now() >= deadline) throw error;
        await delay(OPEN_RETRY_MS);
      }
    }
  }

  function statements(): Promise<Statements> {
    if (closed) return Promise.reject(new LeaseStoreUnavailableError('the lease store is closed'));
    opening ??= open().catch((error: unknown) => {
      opening = undefined;
      throw error;
    });
    return opening;
  }

  function unavailable(what: string, error: unknown): Error {
    if (error instanceof HadbError) return error;
    const message = messageOf(error);
    return new LeaseStoreUnavailableError(`${what} at ${options.path}: ${message}`, {
      cause: error,
    });
  }

  async function run<T>(what: string, operation: (statements: Statements) => T): Promise<T> {
    try {
      return operation(await statements());
    } catch (error) {
      throw unavailable(what, error);
    }
  }

  /** Queues a compare-and-swap for the next batch: the first of a turn schedules the commit. */
  function write(what: string, apply: (statements: Statements) => CasResult): Promise<CasResult> {
    return new Promise((resolve, reject) => {
      writes.push({ what, apply, resolve, reject });
      if (writes.length === 1) setImmediate(() => void commitWrites());
    });
  }

  async function commitWrites(): Promise<void> {
    const batch = writes;
    writes = [];
    const what = batch.length === 1 ? (batch[0] as PendingWrite).what : `${batch.length} writes`;
    let results: CasResult[];
    try {
      const prepared = await statements();
      const connection = database as Database.Database;
      results = connection
        .transaction(() => batch.map((pending) => pending.apply(prepared)))
        .immediate();
    } catch (error) {
      const failure = unavailable(what, error);
      for (const pending of batch) pending.reject(failure);
      return;
    }
    batch.forEach((pending, index) => {
      pending.resolve(results[index] as CasResult);
    });
  }

  return {
    description: `file://${path.resolve(options.path)}`,

    get(key) {
      return run(`get ${JSON.stringify(key)}`, ({ get }): LeaseEntry | null => {
        const row = get.get(key);
        if (row === undefined) return null;
        // Only this store writes the file; a row it could not have written is reported, since a
        // revision no update can match would turn every claim into a conflict, forever.
        if (!Number.isSafeInteger(row.revision) || (row.revision as number) < 1) {
          throw new LeaseRecordInvalidError(
            `unreadable lease record ${JSON.stringify(key)} in ${options.path}: revision ${JSON.stringify(row.revision)} is not a positive integer`,
          );
        }
        if (!Buffer.isBuffer(row.value)) {
          throw new LeaseRecordInvalidError(
            `unreadable lease record ${JSON.stringify(key)} in ${options.path}: the value is not a blob`,
          );
        }
        return { value: new Uint8Array(row.value), revision: String(row.revision) };
      });
    },

    create(key, value) {
      // Copied: the caller may reuse its buffer before the batch commits.
      const body = Buffer.from(value);
      return write(`create ${JSON.stringify(key)}`, ({ create }): CasResult => {
        const { changes } = create.run(key, body);
        return changes === 0 ? CONFLICT : { ok: true, revision: '1' };
      });
    },

    update(key, value, revision) {
      if (!REVISION.test(revision)) return Promise.resolve(CONFLICT);
      const current = Number(revision);
      const body = Buffer.from(value);
      return write(`update ${JSON.stringify(key)}`, ({ update }): CasResult => {
        const { changes } = update.run(body, key, current);
        return changes === 0 ? CONFLICT : { ok: true, revision: String(current + 1) };
      });
    },

    async close() {
      closed = true;
      const pending = opening;
      opening = undefined;
      try {
        await pending;
      } catch {
        // Failed to open: nothing to close.
      }
      try {
        database?.close();
      } catch (error) {
        throw new LeaseStoreUnavailableError(`close ${options.path}`, { cause: error });
      } finally {
        database = undefined;
      }
    },
  };
}

interface PendingWrite {
  what: string;
  apply: (statements: Statements) => CasResult;
  resolve: (result: CasResult) => void;
  reject: (error: Error) => void;
}

function isBusy(error: unknown): boolean {
  return (
    error instanceof Database.SqliteError &&
    (error.code.startsWith('SQLITE_BUSY') || error.code.startsWith('SQLITE_LOCKED'))
  );
}
