import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import type {
  BatchResult,
  ReadOptions,
  Row,
  SqlParams,
  Statement,
  WriteToken,
} from '../api-types.ts';
import { type Clock, sleep } from '../clock.ts';
import { NotLeaderError } from '../errors.ts';
import type { SqliteLeader } from '../replication/sqlite/leader.ts';
import { readRows } from '../statements/sql.ts';
import { checkClientStatements } from '../statements/statement-gate.ts';
import type { StatementRunner } from '../statements/statement-runner.ts';
import { type ForwardRequest, PROTOCOL_VERSION } from '../wire/forward.ts';

/** What a database's reads need of it. */
export interface ReadsContext {
  readonly name: string;
  /** The database file, for the statement processes. */
  readonly path: string;
  readonly clock: Clock;
  /** How long a read-your-writes read waits for replication before asking the leader. */
  readonly readYourWritesTimeoutMs: number;
  readonly pageCacheKiB: number | undefined;
  /** Client reads run here, off the event loop, when the node has statement processes. */
  readonly runner: StatementRunner | undefined;
  /** The open leader file, writable or not. */
  leader(): SqliteLeader | null;
  /** A follower copy is open. */
  hasFollower(): boolean;
  /** This node's leader while it may commit, else null. */
  writableLeader(): SqliteLeader | null;
  /** Why the local copy must not be read (failed, or stuck behind storage), if so. */
  unusable(): Error | undefined;
  /** The local copy's position. */
  position(): WriteToken;
  /** The newest write acknowledged to this node's callers. */
  lastToken(): WriteToken | null;
  /** A read-only connection on the local copy; null when there is none. */
  localConnection(): Database.Database | null;
  /** Transitions and pulls are queued or running; `serialChain` settles once they are done. */
  serialPending(): boolean;
  serialChain(): Promise<unknown>;
  /** Applies what storage holds past the local copy. */
  pull(): Promise<void>;
  /** A read, write or apply: keeps the handles open. */
  touch(): void;
  /** Sends a request to the leader (through the write client) and returns its answer. */
  forward(request: ForwardRequest): Promise<BatchResult>;
}

/**
 * A database's reads: from the local copy (in-process or in a statement process), or from the
 * leader when the consistency asks. Also counts the work running in statement processes, which
 * transitions and applies wait for.
 */
export class Reads {
  readonly #context: ReadsContext;
  /** Reads running in the node's statement processes: transitions and applies wait for them. */
  #isolatedReads = 0;
  readonly #isolatedReadsDone = new Set<() => void>();
  /** The newest position a local read answered from. */
  #answeredSeq = 0;

  constructor(context: ReadsContext) {
    this.#context = context;
  }

  /** How many reads, writes or BEGINs run in statement processes now. */
  get isolatedRunning(): number {
    return this.#isolatedReads;
  }

  async query(
    sql: string,
    params?: SqlParams,
    options: ReadOptions = {},
  ): Promise<{ rows: Row[]; position: WriteToken }> {
    const context = this.#context;
    const statement = gated(sql, params);
    const bigints = options.bigints ?? false;
    const consistency = options.consistency ?? 'local';
    if (consistency === 'strong' && !context.writableLeader()) {
      return this.#readOnLeader(statement, bigints);
    }
    // Monotonic reads: a copy rebuilt from storage (after an unclean step-down, say) may be
    // older than what this node already answered from; it catches up or the leader answers.
    let floor = this.#answeredSeq;
    if (consistency === 'read-your-writes') {
      floor = Math.max(floor, (options.after ?? context.lastToken())?.seq ?? 0);
    }
    if (floor > 0 && !(await this.#reached(floor, context.readYourWritesTimeoutMs))) {
      return this.#readOnLeader(statement, bigints);
    }
    const runner = options.isolated ? context.runner : undefined;
    if (runner) {
      const read = await this.#isolatedRead(runner, [statement], bigints);
      if (!read) return this.#readOnLeader(statement, bigints);
      this.#answered(read.position);
      return { rows: read.results[0] ?? [], position: read.position };
    }
    await context.serialChain();
    // A copy stuck behind storage would answer from an ever older state.
    if (!context.leader()) {
      const unusable = context.unusable();
      if (unusable) throw unusable;
    }
    context.touch();
    const connection = context.localConnection();
    if (!connection) return this.#readOnLeader(statement, bigints);
    const position = context.position();
    const rows = readRows(connection, statement, bigints);
    this.#answered(position);
    return { rows, position };
  }

  #answered(position: WriteToken): void {
    if (position.seq > this.#answeredSeq) this.#answeredSeq = position.seq;
  }

  async #readOnLeader(
    statement: Statement,
    bigints: boolean,
  ): Promise<{ rows: Row[]; position: WriteToken }> {
    const { results, token } = await this.#context.forward({
      v: PROTOCOL_VERSION,
      db: this.#context.name,
      requestId: randomUUID(),
      op: 'read',
      statements: [statement],
      durability: 'async',
      bigints,
    });
    return { rows: results[0]?.rows ?? [], position: token };
  }

  /** A forwarded read on the leader: in a statement process when the node has them. */
  async serveRead(leader: SqliteLeader, request: ForwardRequest): Promise<BatchResult> {
    const context = this.#context;
    const runner = context.runner;
    if (!runner) return readOnLeader(leader, context.localConnection(), request);
    const read = await this.#isolatedRead(runner, request.statements, request.bigints);
    if (!read || context.leader() !== leader) {
      throw new NotLeaderError(`${context.name}: not the leader`);
    }
    return {
      results: read.results.map((rows) => ({ changes: 0, lastInsertRowid: 0, rows })),
      token: read.position,
    };
  }

  /**
   * The statements read in one of the node's statement processes, off the event loop. Transitions
   * and applies (which change the file under a reader) wait for it, and it waits for them. Null
   * when there is no local copy to read.
   */
  async #isolatedRead(
    runner: StatementRunner,
    statements: Statement[],
    bigints: boolean,
  ): Promise<{ results: Row[][]; position: WriteToken } | null> {
    const context = this.#context;
    while (context.serialPending()) await context.serialChain();
    if (!context.leader()) {
      const unusable = context.unusable();
      if (unusable) throw unusable;
      if (!context.hasFollower()) return null;
    }
    context.touch();
    // The leader's writer opens first: it switches the file to WAL and keeps the WAL open.
    const leader = context.leader();
    if (leader) void leader.database;
    const position = context.position();
    this.#isolatedReads += 1;
    try {
      const results = await runner.read({
        path: context.path,
        statements,
        bigints,
        pageCacheKiB: context.pageCacheKiB,
      });
      return { results, position };
    } finally {
      this.isolatedDone();
    }
  }

  /** A read, write or BEGIN in a statement process began: transitions wait for it. */
  isolatedBegun(): void {
    this.#isolatedReads += 1;
  }

  /** One read, write or BEGIN in a statement process is over: transitions may go once none is left. */
  isolatedDone(): void {
    this.#isolatedReads -= 1;
    if (this.#isolatedReads === 0) for (const wake of [...this.#isolatedReadsDone]) wake();
  }

  /** Resolves once no read runs in a statement process (new ones wait while serial work is queued). */
  async isolatedReadsEnded(): Promise<void> {
    while (this.#isolatedReads > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#isolatedReadsDone.delete(done);
          resolve();
        };
        this.#isolatedReadsDone.add(done);
      });
    }
  }

  /** Statement processes close their connections on this file (it changes mode or is replaced). */
  async forgetIsolated(): Promise<void> {
    await this.#context.runner?.forget(this.#context.path);
  }

  /** Waits until this copy holds `seq`, pulling from storage; false if it did not in time. */
  async #reached(seq: number, timeoutMs: number): Promise<boolean> {
    const context = this.#context;
    const clock = context.clock;
    const deadline = clock.now() + timeoutMs;
    while (context.position().seq < seq) {
      if (context.writableLeader()) return true;
      if (clock.now() >= deadline) return false;
      await context.pull().catch(() => {});
      if (context.position().seq >= seq) break;
      await sleep(clock, Math.min(10, Math.max(0, deadline - clock.now())));
    }
    return true;
  }
}

/** A forwarded read, answered from the leader's copy (its read-only connection) at its current position. */
function readOnLeader(
  leader: SqliteLeader,
  connection: Database.Database | null,
  request: ForwardRequest,
): BatchResult {
  if (!connection) throw new NotLeaderError(`${request.db}: no local copy to read`);
  const results = request.statements.map((statement) => ({
    changes: 0,
    lastInsertRowid: 0,
    rows: readRows(connection, statement, request.bigints),
  }));
  const { epoch, seq } = leader.position;
  return { results, token: { epoch, seq } };
}

function statementOf(sql: string, params: SqlParams | undefined): Statement {
  return params === undefined ? { sql } : { sql, params };
}

/** A client statement that passed the statement gate. */
export function gated(sql: string, params: SqlParams | undefined): Statement {
  const statement = statementOf(sql, params);
  checkClientStatements([statement], 'statement');
  return statement;
}
