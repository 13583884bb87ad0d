/**
 * The words hadb's public API speaks, in one module that imports nothing: SQL values and
 * statements, write tokens and log positions, roles and transitions, the database handle with its
 * options and results, and the statuses a node reports. Every layer may import it (the
 * node-to-node protocol, the role machine, the replication engine, the runtime, the CLI), so none
 * has to import another layer for a shared word.
 */

// SQL values and statements

/** What SQLite stores, both ways: integers as number or bigint, blobs as Uint8Array. */
export type SqlValue = null | number | bigint | string | Uint8Array;
/** Parameters of a statement: positional or named. */
export type SqlParams = readonly SqlValue[] | Readonly<Record<string, SqlValue>>;
/** A result row, by column name. */
export type Row = Record<string, SqlValue>;

/** A statement with its parameters. */
export interface Statement {
  sql: string;
  params?: SqlParams;
}

/** The outcome of one statement: changes, last rowid and any rows. */
export interface StatementResult {
  changes: number;
  lastInsertRowid: number | bigint;
  rows?: Row[];
}

/** Where a write landed: a reader that has applied `seq` sees it. */
export interface WriteToken {
  epoch: number;
  seq: number;
}

/** When a write resolves: `async` once committed locally, `replicated` once durable in storage. */
export type Durability = 'async' | 'replicated';

// Log positions

/** A whole-database checksum, as changesets and snapshots record it (computed in wire/db-checksum.ts). */
export type DbChecksum = bigint;

/** Where a database's log stands: epoch, last sequence number and its checksum. */
export interface Position {
  epoch: number;
  seq: number;
  checksum: Uint8Array;
  /** Whole-database checksum at `seq`, where known (changesets before format 2 have none). */
  dbChecksum?: DbChecksum;
}

/** A leader's unshipped commits, set aside because another leader took over. */
export interface ParkedTail {
  file: string;
  epoch: number;
  /** The changesets this tail would have become start here. */
  afterSeq: number;
  pages: number;
}

// Roles and transitions

/** A database's role on a node. */
export type Role =
  | 'bootstrapping'
  | 'follower'
  | 'catching-up'
  | 'candidate'
  | 'leader'
  | 'demoting'
  | 'stopped';

/** One role change of one database on one node, with its cause. */
export interface Transition {
  db: string;
  node: string;
  /** `null` for the first state of a database opened on this node. */
  from: Role | null;
  to: Role;
  /** The epoch this node holds, else of the lease it last read, else the one it just left. */
  epoch: number | null;
  /** ISO wall-clock time (the node's clock may be monotonic or simulated). */
  at: string;
  reason?: string;
}

// Transaction handles (the runtime's classes in statements/interactive.ts have this shape)

/**
 * What both kinds of interactive transaction share: a maximum lifetime, and why it ended, told to
 * every later call.
 */
export interface OpenTransaction {
  readonly readOnly: boolean;
  /** False once committed, rolled back or aborted. */
  readonly open: boolean;
  /** Rolls back (if still open) and releases everything; later calls fail with `reason`. */
  abort(reason: string): void | Promise<void>;
}

/**
 * A transaction left open across requests (Hrana's BEGIN … COMMIT), on its own connection to the
 * leader's file: the leader's other readers never see its uncommitted changes. A writing one was
 * begun IMMEDIATE, so it holds SQLite's write lock; the hosted database makes hadb's own writes
 * wait for it rather than meet SQLITE_BUSY.
 */
export interface InteractiveTransaction extends OpenTransaction {
  run(statement: Statement, bigints: boolean): StatementResult;
  /** Commits; resolves once durable (null for a read-only one, which wrote nothing). */
  commit(): Promise<WriteToken | null>;
  rollback(): void;
  abort(reason: string): void;
}

/**
 * An interactive transaction for network clients (Hrana streams): its connection lives in one of
 * the node's statement processes, so each statement is time-limited and none can stall the node.
 * A statement past the limit ends the process and every transaction in it (rolled back). The
 * writer is released only once the process has let go of SQLite's write lock.
 */
export interface IsolatedTransaction extends OpenTransaction {
  run(statement: Statement, bigints: boolean): Promise<StatementResult>;
  /** Commits; resolves once durable (null for a read-only one, which wrote nothing). */
  commit(): Promise<WriteToken | null>;
  rollback(): Promise<void>;
  /** Resolves once its process has rolled it back and let go of the file (or the process died). */
  abort(reason: string): Promise<void>;
}

// The database handle, its options, results and events; statuses

/** How fresh a read must be: this copy as it is, after the handle's (or a given) write, or the leader's latest. */
export type Consistency = 'local' | 'read-your-writes' | 'strong';

/** Options of a read (`all`, `get`). */
export interface ReadOptions {
  /** Default `'local'`. */
  consistency?: Consistency;
  /** For `'read-your-writes'`: the write to wait for (default: this handle's last write). */
  after?: WriteToken;
  /** Integers come back as bigint. */
  bigints?: boolean;
  /**
   * Runs the read in one of the node's statement processes, under its time limit and result cap
   * (`StatementTimeoutError`, `ResultTooLargeError`) and off the event loop: for SQL that comes
   * from outside the application (`hadb serve` uses it for its clients). Default false: the
   * application's own reads run in this process, which is faster.
   */
  isolated?: boolean;
}

/** Options of a write (`execute`, `batch`). */
export interface WriteOptions {
  durability?: Durability;
  bigints?: boolean;
  /**
   * On the leader, runs the statements in one of the node's statement processes, under its time
   * limit (`StatementTimeoutError`) and off the event loop: for SQL that comes from outside the
   * application (`hadb serve` uses it for its clients). A write forwarded to the leader always
   * runs there. Default false: the application's own writes on the leader run in this process.
   */
  isolated?: boolean;
}

/** Options of an interactive transaction (`begin`). */
export interface BeginOptions {
  /** A read-only transaction does not take the writer. */
  readOnly?: boolean;
  /** How long to wait for the writer and for a leader (default: `forwardTimeoutMs`). */
  waitMs?: number;
  /** Rolled back this long after it began (default: the node's `transactionLifetimeMs`). */
  lifetimeMs?: number;
  /** In a statement process, each statement time-limited (see {@link HadbDatabase.begin}). */
  isolated?: boolean;
}

/** A write's result, with the token a `read-your-writes` read can wait for. */
export interface ExecuteResult extends StatementResult {
  token: WriteToken;
}

/** The results of a batch, committed as one transaction, and its write token. */
export interface BatchResult {
  results: StatementResult[];
  token: WriteToken;
}

/** Synchronous access inside {@link HadbDatabase.transaction}, on the leader. */
export interface Transaction {
  execute(sql: string, params?: SqlParams): StatementResult;
  all(sql: string, params?: SqlParams): Row[];
  get(sql: string, params?: SqlParams): Row | undefined;
}

/** Events a database handle emits, by name, with their arguments. */
export interface DatabaseEvents {
  role: [{ role: Role; epoch: number | null }];
  /** The same change with where it came from and why, as the node logs it. */
  transition: [Transition];
  /** A leader's unshipped commits were set aside: another leader took over. Loud on purpose. */
  parked: [ParkedTail];
  /** Something failed in the background (a pull, a promotion); the database keeps trying. */
  problem: [Error];
  /** This copy stopped being able to catch up (or its actor failed), or can again (`null`). */
  health: [DatabaseProblem | null];
  /** A setting of the leader's connection that replication depends on was found changed and set back. */
  'setting-reset': [{ pragma: string; expected: string; actual: string }];
}

/**
 * A database opened on a node: reads are local, writes go to the leader wherever it is.
 *
 * @example
 * ```ts
 * const orders = await node.open('orders', { schema: 'create table if not exists o(id, total)' });
 * const { token } = await orders.execute('insert into o values (?, ?)', [1, 9.5]);
 * orders.all('select * from o', [], { consistency: 'read-your-writes' });
 * ```
 */
export interface HadbDatabase {
  readonly name: string;
  /** `'leader'`, `'follower'`, or a step between (`'candidate'`, `'catching-up'`, `'demoting'`). */
  readonly role: Role;
  /** The last change this copy holds. */
  readonly position: WriteToken;
  /** True on the leader, and on a follower that holds the newest change it has heard of. */
  readonly isCaughtUp: boolean;
  /**
   * Null, or why this copy cannot catch up with storage (`'stuck'`: retried, local reads refused)
   * or why the node stopped its actor (`'failed'`). Also in `node.status()` and on `/status`.
   */
  readonly problem: DatabaseProblem | null;
  /**
   * True while this node leads and can commit: its claim won and its epoch-start record is in
   * storage. Between role `'leader'` and this, writes here wait for it.
   */
  readonly writable: boolean;
  /**
   * Resolves once writes have somewhere to go: this node leads and can commit, or it follows a
   * leader it knows the address of. With `writable: true`, only once this node itself leads and
   * can commit (what `begin()` and `transaction(fn)` need). `open()` does not wait for either: a
   * database has no role until its first election ends.
   *
   * @example
   * ```ts
   * const db = await node.open('orders');
   * await db.ready({ writable: true }); // this node leads it: begin() may run here
   * ```
   * @throws TimeoutError past `timeoutMs` (default: the node's `forwardTimeoutMs`, 15 s);
   * ClosedError once the database is closed.
   */
  ready(options?: { writable?: boolean; timeoutMs?: number }): Promise<void>;
  /**
   * One statement on the leader (forwarded from a follower).
   *
   * @example
   * ```ts
   * const { lastInsertRowid, token } = await db.execute('insert into o(total) values (?)', [9.5]);
   * await db.execute('update o set total = ? where id = ?', [10, 1], { durability: 'async' });
   * ```
   * @throws SqlError when SQLite refuses it (never retried); LeaderUnavailableError when no
   * leader answered in time; NotDurableError when it committed but its upload was not confirmed.
   */
  execute(sql: string, params?: SqlParams, options?: WriteOptions): Promise<ExecuteResult>;
  /**
   * Statements applied atomically on the leader, from any node.
   *
   * @example
   * ```ts
   * await db.batch([
   *   { sql: 'insert into o(id, total) values (?, ?)', params: [7n, 12] },
   *   { sql: 'update stock set n = n - 1 where item = ?', params: ['pen'] },
   * ]);
   * ```
   */
  batch(statements: Statement[], options?: WriteOptions): Promise<BatchResult>;
  /**
   * Runs `fn` in one transaction. Only on the leader: from a follower, use `batch`.
   *
   * @example
   * ```ts
   * if (db.role === 'leader') {
   *   const id = await db.transaction((tx) => {
   *     tx.execute('insert into o(total) values (?)', [3]);
   *     return tx.get('select max(id) as id from o')?.id;
   *   });
   * }
   * ```
   */
  transaction<T>(fn: (tx: Transaction) => T, options?: WriteOptions): Promise<T>;
  /**
   * A transaction that stays open across awaits (what Hrana's BEGIN … COMMIT needs), on its own
   * connection: only on the leader. A writing one holds the writer exclusively until it ends
   * (other writes wait up to `waitMs`, default 15 s, and so does this call). Commit resolves once
   * durable; end it promptly, and always. Past `lifetimeMs` (default: the node's
   * `transactionLifetimeMs`, 60 s) it is rolled back whatever its activity, and its next call
   * fails with {@link TransactionExpiredError}.
   *
   * @example
   * ```ts
   * const tx = await db.begin();
   * try {
   *   tx.run({ sql: 'update o set total = total + 1 where id = ?', params: [1] }, false);
   *   await tx.commit();
   * } finally {
   *   tx.abort('done');
   * }
   * ```
   *
   * With `isolated: true` (what network doors use) its connection lives in one of the node's
   * statement processes: `run` is asynchronous, and each statement is ended at the node's
   * statement time limit (which rolls the transaction back) instead of stalling the node.
   */
  begin(options: BeginOptions & { isolated: true }): Promise<IsolatedTransaction>;
  begin(options?: BeginOptions): Promise<InteractiveTransaction>;
  /**
   * Every row of a read. Local by default; see {@link ReadOptions.consistency}.
   *
   * @example
   * ```ts
   * await db.execute('insert into o(total) values (?)', [1]);
   * const mine = await db.all('select * from o', [], { consistency: 'read-your-writes' });
   * ```
   */
  all(sql: string, params?: SqlParams, options?: ReadOptions): Promise<Row[]>;
  /**
   * The first row of a read, or undefined.
   *
   * @example
   * ```ts
   * const row = await db.get('select count(*) as n from o', [], { consistency: 'strong' });
   * ```
   */
  get(sql: string, params?: SqlParams, options?: ReadOptions): Promise<Row | undefined>;
  /**
   * Rows and the position they were read at.
   *
   * @example
   * ```ts
   * const { rows, position } = await db.query('select * from o where id = ?', [1n]);
   * ```
   */
  query(
    sql: string,
    params?: SqlParams,
    options?: ReadOptions,
  ): Promise<{ rows: Row[]; position: WriteToken }>;
  /**
   * Gives leadership up gracefully so a caught-up follower takes over at once.
   *
   * @example
   * ```ts
   * if (db.role === 'leader') db.handoff(); // before draining this server
   * ```
   */
  handoff(): void;
  /**
   * @example
   * ```ts
   * db.on('role', ({ role, epoch }) => log.info({ role, epoch }, 'role changed'));
   * db.on('parked', (tail) => alert(`unshipped commits set aside in ${tail.file}`));
   * ```
   */
  on<E extends keyof DatabaseEvents>(
    event: E,
    listener: (...args: DatabaseEvents[E]) => void,
  ): this;
  off<E extends keyof DatabaseEvents>(
    event: E,
    listener: (...args: DatabaseEvents[E]) => void,
  ): this;
  /** Stops this database on this node; a held lease is released so a follower takes over. */
  close(): Promise<void>;
}

/** One database's state on one node, as `status()` and the status page show it. */
export interface DatabaseStatus {
  name: string;
  role: Role;
  epoch: number;
  seq: number;
  caughtUp: boolean;
  /** The node that leads it, as far as this node knows. */
  leader: string | null;
  /** Why the lease could not be read, if it could not. */
  leaseProblem: string | null;
  /** Where the leader takes requests, as far as this node knows. */
  leaderAddress: string | null;
  /** Its SQLite handles are closed while idle; the next read, write or apply reopens them. */
  hibernated: boolean;
  /** Why this copy cannot catch up with storage, or why its actor stopped; null when neither. */
  problem: DatabaseProblem | null;
}

/**
 * `'stuck'`: storage holds something this copy cannot apply (a damaged changeset, a broken chain,
 * another page size); it is retried with backoff and the copy is not served meanwhile.
 * `'failed'`: the node stopped restarting its actor after repeated crashes; not retried.
 * `'lease'`: its lease record is malformed, so no node can lead it; the copy is still served.
 */
export interface DatabaseProblem {
  state: 'stuck' | 'failed' | 'lease';
  /** The code of the error, such as `CHANGESET_CHECKSUM_MISMATCH`. */
  code: string;
  message: string;
  /** Stuck: the changeset it cannot get past. Failed: the position its copy stopped at. */
  seq: number;
  /** Since when (ms since the epoch). */
  since: number;
  /** Stuck: when the next try is due, in ms from now. */
  retryInMs: number | null;
}

/** A node's view of itself: its databases, transitions, peers and lease. */
export interface NodeStatus {
  node: string;
  address: string | null;
  databases: DatabaseStatus[];
  /** The last role transitions on this node, oldest first. */
  transitions: Transition[];
  /** The other nodes this node knows of. */
  peers: string[];
  /** How this node's leadership is leased; under node scope, how long its own lease still holds. */
  lease: { scope: 'node' | 'database'; validForMs: number | null };
}

// The cluster as one node sees it (`GET /cluster`)

/** One node as another node sees it. */
export interface ClusterNodeView {
  address: string | null;
  /** `null` for a peer that never answered. */
  node: string | null;
  up: boolean;
  self: boolean;
  /** Why a peer is shown as down. */
  error?: string;
  databases: DatabaseStatus[];
  transitions: Transition[];
}

/** Every node of a cluster as one node sees them, at one time. */
export interface ClusterView {
  node: string;
  at: string;
  nodes: ClusterNodeView[];
}
