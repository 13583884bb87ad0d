import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { HadbError, LeaseStoreUnavailableError } from '../../errors.ts';
import { type CasResult, CONFLICT, type LeaseEntry, type LeaseStore } from './types.ts';

const DEFAULT_BUSY_TIMEOUT_MS = 5000;
const OPEN_RETRY_MS = 10;
/** Only the canonical form: revisions are compared as strings, so `01` is not `1`. */
const REVISION = /^(?:0|[1-9][0-9]{0,14})$/;

interface LeaseRow {
  revision: number;
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
 * stale lock. Needs a local filesystem: POSIX locks and the WAL's shared memory are unreliable on
 * network filesystems (NFS, SMB), where two processes could both win a CAS.
 *
 * better-sqlite3 is synchronous: while another process holds the write lock, a call blocks the
 * event loop for up to `busyTimeoutMs` (default 5000) before failing with
 * `LeaseStoreUnavailableError`.
 */
export function createFsLeaseStore(options: {
  path: string;
  busyTimeoutMs?: number;
}): LeaseStore & { close(): Promise<void> } {
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  let database: Database.Database | undefined;
  let opening: Promise<Statements> | undefined;
  let closed = false;

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

  async function run<T>(what: string, operation: (statements: Statements) => T): Promise<T> {
    try {
      return operation(await statements());
    } catch (error) {
      if (error instanceof HadbError) throw error;
      const message = error instanceof Error ? error.message : String(error);
      throw new LeaseStoreUnavailableError(`${what} at ${options.path}: ${message}`, {
        cause: error,
      });
    }
  }

  return {
    get(key) {
      return run(`get ${JSON.stringify(key)}`, ({ get }): LeaseEntry | null => {
        const row = get.get(key);
        if (row === undefined) return null;
        return { value: new Uint8Array(row.value), revision: String(row.revision) };
      });
    },

    create(key, value) {
      return run(`create ${JSON.stringify(key)}`, ({ create }): CasResult => {
        const { changes } = create.run(key, toBuffer(value));
        return changes === 0 ? CONFLICT : { ok: true, revision: '1' };
      });
    },

    update(key, value, revision) {
      return run(`update ${JSON.stringify(key)}`, ({ update }): CasResult => {
        if (!REVISION.test(revision)) return CONFLICT;
        const current = Number(revision);
        const { changes } = update.run(toBuffer(value), key, current);
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

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function isBusy(error: unknown): boolean {
  return (
    error instanceof Database.SqliteError &&
    (error.code.startsWith('SQLITE_BUSY') || error.code.startsWith('SQLITE_LOCKED'))
  );
}
