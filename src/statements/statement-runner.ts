import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Row, Statement, StatementResult } from '../api-types.ts';
import {
  MAX_RESULT_BYTES,
  STATEMENT_CONNECTIONS_PER_PROCESS,
  STATEMENT_PROCESSES,
  STATEMENT_TIMEOUT_MS,
} from '../defaults.ts';
import {
  ClosedError,
  type HadbError,
  InvalidArgumentError,
  ResultTooLargeError,
  SqlError,
  StatementTimeoutError,
} from '../errors.ts';

export interface StatementRunnerOptions {
  /** Statement processes (default 2): this many client reads run at once. */
  processes?: number;
  /** A read still running after this long is ended by killing its process (default 5 s). */
  timeoutMs?: number;
  /** Rows of one request past this many bytes are refused (default 64 MiB). */
  maxResultBytes?: number;
  /** Open connections per process, least recently used closed first (default 64). */
  maxConnections?: number;
}

export interface RunnerRead {
  /** The database file, opened read-only. */
  path: string;
  statements: Statement[];
  /** Integers come back as bigint. */
  bigints: boolean;
  /** The connection's page cache in KiB (`cache_size`). */
  pageCacheKiB?: number | undefined;
}

export interface RunnerWrite {
  /** The leader's database file, opened read-write for this write only. */
  path: string;
  statements: Statement[];
  /** Integers come back as bigint. */
  bigints: boolean;
  /** Applied once per id: an answer already kept in `requestsTable` under it is returned instead. */
  requestId: string | null;
  requestsTable: string;
  pageCacheKiB?: number | undefined;
}

/**
 * A write run up to its commit in a statement process, which now holds SQLite's write lock and
 * waits: exactly one of `commit` or `rollback` must follow.
 */
export interface PendingWrite {
  results: StatementResult[];
  /** What an earlier run under the same request id kept (encoded), or null. */
  prior: Uint8Array | null;
  /** Keeps `remember` (the encoded results) under the request id, then commits. */
  commit(
    remember: { id: string; at: number; results: Uint8Array; pruneBefore?: number } | null,
  ): Promise<void>;
  rollback(): Promise<void>;
}

export interface RunnerBegin {
  /** The leader's database file, opened read-write for this transaction only. */
  path: string;
  /** BEGIN DEFERRED with `query_only`; otherwise BEGIN IMMEDIATE (SQLite's write lock). */
  readOnly: boolean;
  pageCacheKiB?: number | undefined;
  /**
   * Called once if it ends without `end`: SQLite rolled it back, or its process ended (a
   * statement of any transaction there ran past the time limit, or the process died).
   */
  lost(reason: string): void;
}

/**
 * An interactive transaction on a connection of its own in a statement process: each statement
 * is time-limited like a read, and `end` (COMMIT or ROLLBACK) is never cut short.
 */
export interface RunnerTransaction {
  /** False once ended, or lost with its process. */
  readonly open: boolean;
  run(statement: Statement, bigints: boolean): Promise<StatementResult>;
  end(commit: boolean): Promise<void>;
}

const CHILD_ENTRY = fileURLToPath(new URL('./statement-runner-child.mjs', import.meta.url));

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

type ChildAnswer =
  | {
      id: number;
      ok: true;
      results?: Row[][];
      written?: StatementResult[];
      prior?: Uint8Array | null;
      forgot?: string;
      closed?: string[];
      inTransaction?: boolean;
    }
  | {
      id: number;
      ok: false;
      kind: 'too-large' | 'sql' | 'error';
      sqliteCode?: string | null;
      message?: string;
      index: number;
      closed?: string[];
      inTransaction?: boolean;
    };

/** One statement process: one read at a time, and the paths it holds open. */
class StatementProcess {
  readonly child: ChildProcess;
  readonly open = new Set<string>();
  /** Interactive transactions whose connection lives here: they end with the process. */
  readonly transactions = new Set<ProcessTransaction>();
  /** Requests of those transactions waiting for this process, served before any other request. */
  readonly waiters: (() => void)[] = [];
  /** Paths whose connection a sent `forget` has not confirmed closed yet. */
  readonly forgetting = new Map<string, number>();
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #exited = false;
  busy = false;
  /** Why hadb killed it, for the transactions that end with it. */
  killedBecause: string | null = null;
  /** Resolves once the process listens (its start does not count against the time limit). */
  readonly started: Promise<void>;
  #markStarted: () => void = () => {};
  /** Resolves once the process has exited. */
  readonly gone: Promise<void>;
  #markGone: () => void = () => {};

  constructor(maxConnections: number, onExit: (process: StatementProcess) => void) {
    this.child = fork(CHILD_ENTRY, [], {
      serialization: 'advanced',
      // No tsx loader nor inspector flags of the parent: the entry is plain JavaScript.
      execArgv: [],
      env: { ...process.env, HADB_RUNNER_MAX_CONNECTIONS: String(maxConnections) },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    this.started = new Promise<void>((resolve) => {
      this.#markStarted = resolve;
    });
    this.gone = new Promise<void>((resolve) => {
      this.#markGone = resolve;
    });
    // A node that is otherwise done does not wait for its idle statement processes.
    this.child.unref();
    this.child.on('message', (message: ChildAnswer | { ready: true }) => {
      if (!('id' in message)) {
        this.#channel()?.unref();
        this.#markStarted();
        return;
      }
      for (const path of message.closed ?? []) this.open.delete(path);
      const pending = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (this.#pending.size === 0) this.#channel()?.unref();
      pending?.resolve(message);
    });
    this.child.on('error', () => {});
    this.child.on('exit', (code, signal) => {
      this.#exited = true;
      this.open.clear();
      const why = processExited(signal ?? `exit code ${code}`);
      for (const pending of this.#pending.values()) pending.reject(why);
      this.#pending.clear();
      this.#markStarted();
      this.#markGone();
      const how =
        this.killedBecause ?? `its statement process ended (${signal ?? `exit code ${code}`})`;
      for (const tx of [...this.transactions]) tx.lose(how);
      for (const wake of this.waiters.splice(0)) wake();
      onExit(this);
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  #channel(): { ref(): void; unref(): void } | undefined {
    return (this.child as unknown as { channel?: { ref(): void; unref(): void } }).channel;
  }

  request(message: Record<string, unknown>): Promise<ChildAnswer> {
    if (this.#exited) return Promise.reject(processExited('already exited'));
    const id = this.#nextId++;
    return new Promise<ChildAnswer>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#channel()?.ref();
      this.child.send({ ...message, id }, (error) => {
        if (error && this.#pending.delete(id)) reject(processExited(error.message));
      });
    });
  }

  kill(): void {
    if (!this.#exited) this.child.kill('SIGKILL');
  }
}

/**
 * A statement process ended while it ran a read (not by hadb's time limit); it was replaced.
 * The only error a process's requests reject with.
 */
function processExited(how: string): ClosedError {
  return new ClosedError(
    'the statement process running this read',
    `ended (${how}); it was replaced`,
  );
}

/**
 * Runs client reads (the network doors: Hrana, reads forwarded to the leader) in a small pool of
 * child processes, each with read-only connections of its own, so a long statement never blocks
 * the node's event loop (leases, renewals, the live tail) and one past its time limit is ended
 * by SIGKILL, the only way to stop a running SQLite statement here: better-sqlite3 has no
 * interrupt, and terminating a worker thread waits for the statement. Processes start on first
 * use and are replaced when one is killed or dies.
 */
export class StatementRunner {
  readonly timeoutMs: number;
  readonly maxResultBytes: number;
  readonly #size: number;
  readonly #maxConnections: number;
  readonly #processes: StatementProcess[] = [];
  readonly #queue: (() => void)[] = [];
  #nextTransaction = 0;
  #closed = false;

  constructor(options: StatementRunnerOptions = {}) {
    this.#size = positiveInteger('statement processes', options.processes ?? STATEMENT_PROCESSES);
    this.timeoutMs = positiveInteger(
      'statement timeout (ms)',
      options.timeoutMs ?? STATEMENT_TIMEOUT_MS,
    );
    this.maxResultBytes = positiveInteger(
      'maximum result bytes',
      options.maxResultBytes ?? MAX_RESULT_BYTES,
    );
    this.#maxConnections = positiveInteger(
      'connections per process',
      options.maxConnections ?? STATEMENT_CONNECTIONS_PER_PROCESS,
    );
  }

  /** The rows of each statement, read in one process; a statement that would write is refused. */
  async read(request: RunnerRead): Promise<Row[][]> {
    const worker = await this.#acquire();
    try {
      await worker.started;
      worker.open.add(request.path);
      const { answer } = await this.#withinLimit(worker, {
        type: 'read',
        path: request.path,
        statements: request.statements,
        bigints: request.bigints,
        maxBytes: this.maxResultBytes,
        cacheKiB: request.pageCacheKiB,
      });
      if (answer.ok) return (answer.results ?? []).map((rows) => rows.map(withBuffers));
      if (answer.kind === 'too-large')
        throw new ResultTooLargeError(
          `the rows are larger than the cap of ${this.maxResultBytes} bytes per response`,
        );
      throw failureOf(answer, 'the read failed');
    } finally {
      this.#release(worker);
    }
  }

  /**
   * Runs the statements of a write in one process, in a BEGIN IMMEDIATE transaction on a
   * read-write connection of its own, and stops before COMMIT. The time limit covers this phase
   * only: past it the process is SIGKILLed (SQLite leaves its uncommitted frames past the WAL's
   * last commit, where nothing reads them and the next commit overwrites them). The process stays
   * taken until `commit` or `rollback`, which are never cut short by a kill.
   */
  async write(request: RunnerWrite): Promise<PendingWrite> {
    const worker = await this.#acquire();
    let handedOver = false;
    try {
      await worker.started;
      // An answer that came as the kill went out does not count: the write goes with the process.
      const answer = await this.#answerWithinLimit(worker, {
        type: 'write',
        path: request.path,
        statements: request.statements,
        bigints: request.bigints,
        requestId: request.requestId,
        requestsTable: request.requestsTable,
        cacheKiB: request.pageCacheKiB,
      });
      if (!answer.ok) throw failureOf(answer, 'the write failed');
      const end = async (message: Record<string, unknown>) => {
        try {
          const ended = await worker
            .request({ type: 'end', ...message })
            .catch(diedDuringCommit(message.commit === true, 'write'));
          if (!ended.ok) throw failureOf(ended, 'the commit failed');
        } finally {
          this.#release(worker);
        }
      };
      handedOver = true;
      return {
        results: (answer.written ?? []).map((result) =>
          result.rows ? { ...result, rows: result.rows.map(withBuffers) } : result,
        ),
        prior: answer.prior ? Buffer.from(answer.prior) : null,
        commit: (remember) => end({ commit: true, remember }),
        rollback: () => end({ commit: false }),
      };
    } finally {
      if (!handedOver) this.#release(worker);
    }
  }

  /**
   * Begins an interactive transaction in a statement process, where it stays until it ends. A
   * statement in it past the time limit kills that process, which rolls back every transaction
   * the process holds (told through `lost`): SQLite leaves their uncommitted frames past the
   * WAL's last commit, where nothing reads them.
   */
  async begin(request: RunnerBegin): Promise<RunnerTransaction> {
    const worker = await this.#leastLoaded();
    try {
      await worker.started;
      const tx = new ProcessTransaction(
        this.#nextTransaction++,
        this.maxResultBytes,
        request.lost,
        (message, limited) => this.#inTransaction(worker, message, limited),
      );
      const answer = await this.#answerWithinLimit(worker, {
        type: 'tx-begin',
        tx: tx.id,
        path: request.path,
        readOnly: request.readOnly,
        cacheKiB: request.pageCacheKiB,
      });
      if (!answer.ok) throw failureOf(answer, 'BEGIN failed');
      if (worker.exited) throw processExited('during BEGIN');
      worker.transactions.add(tx);
      tx.onEnd(() => worker.transactions.delete(tx));
      return tx;
    } finally {
      this.#release(worker);
    }
  }

  /** A request of a transaction living in `worker`, once the process is free for it. */
  async #inTransaction(
    worker: StatementProcess,
    message: Record<string, unknown>,
    limited: boolean,
  ): Promise<ChildAnswer> {
    await this.#take(worker);
    try {
      if (worker.exited) throw processExited('already exited');
      if (!limited) return await worker.request(message);
      return await this.#answerWithinLimit(worker, { ...message, maxBytes: this.maxResultBytes });
    } finally {
      this.#release(worker);
    }
  }

  /**
   * A process for a new transaction: a new one while the pool has room, otherwise the one holding
   * the fewest transactions (a kill then takes as few as it can with it).
   */
  async #leastLoaded(): Promise<StatementProcess> {
    if (this.#closed) throw new ClosedError('the statement runner');
    const live = this.#processes.filter((worker) => !worker.exited);
    if (live.length < this.#size) return this.#acquire();
    const [fewest] = live.sort((a, b) => a.transactions.size - b.transactions.size);
    if (fewest === undefined) return this.#acquire();
    await this.#take(fewest);
    if (fewest.exited) {
      this.#release(fewest);
      return this.#leastLoaded();
    }
    return fewest;
  }

  /**
   * {@link #withinLimit} for requests that leave state in the process (a write, a transaction): an
   * answer that arrived as the kill went out is a timeout too, reported once the process is gone.
   */
  async #answerWithinLimit(
    worker: StatementProcess,
    message: Record<string, unknown>,
  ): Promise<ChildAnswer> {
    const { answer, timedOut } = await this.#withinLimit(worker, message);
    if (timedOut) {
      await worker.gone;
      throw this.#timeoutError();
    }
    return answer;
  }

  /**
   * `worker`'s answer to `message` within the time limit. Past it the process is SIGKILLed and
   * the request fails with STATEMENT_TIMEOUT only once the process has exited (it no longer
   * holds the file, so the leader's connection can be the last to close it as soon as the caller
   * hears). `timedOut`: an answer that arrived as the kill went out.
   */
  async #withinLimit(
    worker: StatementProcess,
    message: Record<string, unknown>,
  ): Promise<{ answer: ChildAnswer; timedOut: boolean }> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      worker.killedBecause = `a statement in its statement process ran past the time limit of ${this.timeoutMs} ms`;
      this.#kill(worker);
    }, this.timeoutMs);
    try {
      const answer = await worker.request(message).catch((error: unknown) => {
        throw timedOut ? this.#timeoutError() : error;
      });
      return { answer, timedOut };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The process ids of the statement processes running now. */
  get processIds(): number[] {
    return this.#processes.flatMap((worker) =>
      worker.child.pid === undefined ? [] : [worker.child.pid],
    );
  }

  /** True while a statement process may hold a connection on `path`. */
  holds(path: string): boolean {
    return this.#processes.some((worker) => worker.open.has(path) || worker.forgetting.has(path));
  }

  /**
   * Closes every process's connection on `path` (the file is about to change mode, be replaced or
   * hibernate); resolves once they are closed. Callers keep reads of `path` out meanwhile.
   */
  async forget(path: string): Promise<void> {
    await Promise.all(
      this.#processes
        .filter((worker) => worker.open.has(path))
        .map(async (worker) => {
          // Messages reach a process in order: a read sent after this one opens the file again.
          worker.open.delete(path);
          worker.forgetting.set(path, (worker.forgetting.get(path) ?? 0) + 1);
          try {
            await worker.request({ type: 'forget', path });
          } catch {
            // Exited: its connections are closed with it.
          } finally {
            const left = (worker.forgetting.get(path) ?? 1) - 1;
            if (left > 0) worker.forgetting.set(path, left);
            else worker.forgetting.delete(path);
          }
        }),
    );
  }

  /** Ends the processes; reads running now fail. */
  close(): void {
    this.#closed = true;
    for (const worker of this.#processes) worker.kill();
    this.#processes.length = 0;
    for (const wake of this.#queue.splice(0)) wake();
  }

  async #acquire(): Promise<StatementProcess> {
    for (;;) {
      if (this.#closed) throw new ClosedError('the statement runner');
      const idle = this.#processes.find((worker) => !worker.busy && !worker.exited);
      if (idle) {
        idle.busy = true;
        return idle;
      }
      if (this.#processes.length < this.#size) {
        const worker = new StatementProcess(this.#maxConnections, (ended) => this.#ended(ended));
        this.#processes.push(worker);
        worker.busy = true;
        return worker;
      }
      await new Promise<void>((resolve) => this.#queue.push(resolve));
    }
  }

  /** Takes `worker` for one request: at once when free, else when {@link #release} hands it over. */
  async #take(worker: StatementProcess): Promise<void> {
    if (worker.busy) await new Promise<void>((resolve) => worker.waiters.push(resolve));
    else worker.busy = true;
  }

  /** Frees `worker`, handed straight to a request of one of its transactions if one waits. */
  #release(worker: StatementProcess): void {
    const next = worker.waiters.shift();
    if (next && !worker.exited) {
      next();
      return;
    }
    worker.busy = false;
    this.#queue.shift()?.();
  }

  #timeoutError(): StatementTimeoutError {
    return new StatementTimeoutError(
      `the statement ran past the time limit of ${this.timeoutMs} ms and was ended`,
    );
  }

  /** Out of the pool at once (its place is free for a new process), then SIGKILLed. */
  #kill(worker: StatementProcess): void {
    const index = this.#processes.indexOf(worker);
    if (index >= 0) this.#processes.splice(index, 1);
    worker.kill();
  }

  #ended(worker: StatementProcess): void {
    const index = this.#processes.indexOf(worker);
    if (index >= 0) this.#processes.splice(index, 1);
    // Its place is taken by a new process at the next read.
    if (!worker.busy) this.#queue.shift()?.();
  }
}

/** The node's side of a {@link RunnerTransaction}: what it may still do, and how it ended. */
class ProcessTransaction implements RunnerTransaction {
  #open = true;
  readonly #ends: (() => void)[] = [];

  constructor(
    readonly id: number,
    private readonly maxResultBytes: number,
    private readonly lost: (reason: string) => void,
    private readonly send: (
      message: Record<string, unknown>,
      limited: boolean,
    ) => Promise<ChildAnswer>,
  ) {}

  get open(): boolean {
    return this.#open;
  }

  onEnd(callback: () => void): void {
    this.#ends.push(callback);
  }

  async run(statement: Statement, bigints: boolean): Promise<StatementResult> {
    this.#live();
    const answer = await this.send({ type: 'tx-run', tx: this.id, statement, bigints }, true);
    if (answer.inTransaction === false) this.lose('SQLite rolled the transaction back');
    if (!answer.ok) {
      if (answer.kind === 'too-large')
        throw new ResultTooLargeError(
          `the rows are larger than the cap of ${this.maxResultBytes} bytes per response`,
        );
      throw failureOf(answer, 'the statement failed');
    }
    const [result] = answer.written ?? [];
    if (!result) throw new ClosedError('the statement process', 'sent no result');
    return result.rows ? { ...result, rows: result.rows.map(withBuffers) } : result;
  }

  async end(commit: boolean): Promise<void> {
    this.#live();
    try {
      const ended = await this.send({ type: 'tx-end', tx: this.id, commit }, false).catch(
        diedDuringCommit(commit, 'transaction'),
      );
      if (!ended.ok) throw failureOf(ended, commit ? 'COMMIT failed' : 'ROLLBACK failed');
    } finally {
      this.#finish();
    }
  }

  /** Ended without `end` (see {@link RunnerBegin.lost}). */
  lose(reason: string): void {
    if (!this.#open) return;
    this.#finish();
    this.lost(reason);
  }

  #live(): void {
    if (!this.#open) throw new ClosedError('the transaction', 'is no longer open');
  }

  #finish(): void {
    if (!this.#open) return;
    this.#open = false;
    for (const callback of this.#ends.splice(0)) callback();
  }
}

/** Rethrows; a process that died during COMMIT leaves the outcome unknown, and says so. */
function diedDuringCommit(commit: boolean, what: string): (error: unknown) => never {
  return (error) => {
    if (!(error instanceof ClosedError) || !commit) throw error;
    throw new ClosedError(
      'the statement process',
      `ended during COMMIT (${error.message}): the ${what} may or may not be committed`,
    );
  };
}

function failureOf(answer: Extract<ChildAnswer, { ok: false }>, otherwise: string): HadbError {
  const message = answer.message ?? otherwise;
  if (answer.kind === 'sql') return new SqlError(answer.sqliteCode ?? 'SQLITE_ERROR', message);
  return new InvalidArgumentError(message);
}

/** Blobs cross the process boundary as Uint8Array; callers get Buffers, as in-process. */
function withBuffers(row: Row): Row {
  for (const key in row) {
    const value = row[key];
    if (value instanceof Uint8Array && !Buffer.isBuffer(value)) {
      row[key] = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    }
  }
  return row;
}

function positiveInteger(what: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`${what} must be a positive integer, got ${value}`);
  }
  return value;
}
