import { doublingDelay } from '../adapters/retry.ts';
import type { BatchResult, Role, WriteToken } from '../api-types.ts';
import type { Clock } from '../clock.ts';
import { messageOf } from '../error-message.ts';
import {
  BadRequestError,
  ClosedError,
  type HadbErrorCode,
  LeaderUnavailableError,
  revivedError,
  UnauthorizedError,
} from '../errors.ts';
import type { NodeClient } from '../http/node-client.ts';
import type { SqliteLeader } from '../replication/sqlite/leader.ts';
import { checkClientStatements, type SqlContext } from '../statements/statement-gate.ts';
import {
  encodeMessage,
  type ForwardRequest,
  type ForwardResponse,
  readForwardAnswer,
} from '../wire/forward.ts';
import { FORWARD_PATH } from '../wire/node-protocol.ts';

/** What the write client needs of its database. */
export interface WriteClientContext {
  readonly name: string;
  readonly clock: Clock;
  readonly client: NodeClient;
  /** A frozen leader is replaced within ttl + margin. */
  readonly timing: { readonly ttlMs: number; readonly marginMs: number };
  /** How long a write keeps looking for a leader (across a failover) before giving up. */
  readonly forwardTimeoutMs: number;
  /** Node-level leases: ownership is not polled, so a refusal means read it again. */
  readonly nodeLeases: boolean;
  /** Aborted when the database closes. */
  readonly signal: AbortSignal;
  closed(): boolean;
  role(): Role;
  /** This node's leader while it may commit, else null. */
  writableLeader(): SqliteLeader | null;
  /** Where the current leader takes forwarded requests; null when none is known or it is this node. */
  leaderAddress(): string | null;
  /**
   * The write on this node as leader; null when it may run again elsewhere. `remembered`: it was
   * sent to another node before, so it is applied only under its request id.
   */
  writeHere(
    leader: SqliteLeader,
    request: ForwardRequest,
    deadline: number,
    remembered: boolean,
    isolated: boolean,
  ): Promise<BatchResult | null>;
  /** A write was acknowledged with `token` (read-your-writes reads wait for it). */
  remember(token: WriteToken): void;
  /** Resolves at the next role change or known leader, or after `timeoutMs`. */
  roleChange(timeoutMs: number): Promise<void>;
  /** Reads the lease again now. */
  leaseChanged(): void;
  /** Why this copy cannot take over, if it cannot (stuck behind storage, or failed). */
  cannotTakeOver(): Error | undefined;
}

/**
 * A database's writes from this node: run here while it leads, otherwise forwarded to the leader,
 * retried across a failover until the leader answers or `forwardTimeoutMs` runs out.
 */
export class WriteClient {
  readonly #context: WriteClientContext;

  constructor(context: WriteClientContext) {
    this.#context = context;
  }

  async write(request: ForwardRequest, isolated = false): Promise<BatchResult> {
    // Refused here, before anything is sent or run; the leader checks again.
    checkClientStatements(request.statements, gateContextOf(request));
    // The clock's timers do not hold the process open; a caller awaiting this write must.
    const keepAlive = setInterval(() => {}, 60_000);
    try {
      return await this.#writeWithRetries(request, isolated);
    } finally {
      clearInterval(keepAlive);
    }
  }

  async #writeWithRetries(request: ForwardRequest, isolated: boolean): Promise<BatchResult> {
    const context = this.#context;
    const { clock, forwardTimeoutMs } = context;
    const started = clock.now();
    let retries = 0;
    let lastProblem = 'no leader is known';
    // Once sent to another node, the write may have been applied there: from then on it is
    // applied here only under its request id, like any forwarded write.
    let forwarded = false;
    for (;;) {
      if (context.closed()) throw new ClosedError(`database ${context.name}`);
      const local = context.writableLeader();
      if (local) {
        const done = await context.writeHere(
          local,
          request,
          started + forwardTimeoutMs,
          forwarded,
          isolated,
        );
        if (done) {
          context.remember(done.token);
          return done;
        }
        lastProblem = 'this node stopped leading during the write';
      } else if (context.role() === 'leader') {
        lastProblem = 'this node is still taking over';
        await context.roleChange(50);
        continue;
      } else {
        const address = context.leaderAddress();
        if (address) {
          const { ttlMs, marginMs } = context.timing;
          const left = forwardTimeoutMs - (clock.now() - started);
          const attemptMs = Math.max(1, Math.min(left, ttlMs + marginMs));
          forwarded = true;
          const answer = await this.#forward(address, request, attemptMs).catch(
            (error: unknown) => {
              if (error instanceof UnauthorizedError || error instanceof BadRequestError)
                throw error;
              lastProblem = messageOf(error);
              return null;
            },
          );
          if (answer?.ok) {
            context.remember(answer.token);
            return { results: answer.results, token: answer.token };
          }
          // The caller's own errors come back as their class; the rest are retried.
          if (answer && !answer.ok && CALLER_ERRORS.has(answer.code)) {
            const sqliteCode =
              answer.code === 'SQL_ERROR' ? (answer.sqliteCode ?? 'SQLITE_ERROR') : null;
            throw revivedError(answer.code, answer.message, sqliteCode ? { sqliteCode } : {});
          }
          if (answer) lastProblem = `${answer.code}: ${answer.message}`;
          // Node-level leases are not polled: a leader that says no (or is gone) means re-read.
          if (context.nodeLeases && answer?.code !== 'INTERNAL') context.leaseChanged();
        }
      }
      const waited = clock.now() - started;
      if (waited >= forwardTimeoutMs) {
        // No leader, and this copy cannot become one: say why.
        const stuck = context.cannotTakeOver();
        throw new LeaderUnavailableError(
          `${context.name}: ${lastProblem}${stuck ? `; this node cannot take over: ${stuck.message}` : ''}`,
          Math.round(waited),
          stuck ? { cause: stuck } : undefined,
        );
      }
      // A role change (this node took over, or a leader appeared) ends the wait at once.
      const delay = doublingDelay(++retries, 10, 500);
      await context.roleChange(Math.min(delay, forwardTimeoutMs - waited));
    }
  }

  async #forward(
    address: string,
    request: ForwardRequest,
    timeoutMs: number,
  ): Promise<ForwardResponse> {
    const { status, body } = await this.#context.client.request(
      'POST',
      `${address}${FORWARD_PATH}`,
      encodeMessage(request),
      // A frozen leader is replaced within ttl + margin; waiting longer on it only delays the
      // retry that reaches the next one (retries are safe: the request id deduplicates).
      timeoutMs,
      this.#context.signal,
    );
    return readForwardAnswer(status, body, address);
  }
}

/** Where a request's SQL is judged by the statement gate: statements, a schema script or a migration. */
export function gateContextOf(request: ForwardRequest): SqlContext {
  if (request.op === 'schema') return 'script';
  if (request.op === 'migrate') return 'migration';
  return 'statement';
}

/** Forwarded error codes that are the caller's to handle, not a reason to retry elsewhere. */
const CALLER_ERRORS: ReadonlySet<HadbErrorCode> = new Set([
  'SQL_ERROR',
  'STATEMENT_REFUSED',
  'BAD_REQUEST',
  'INVALID_ARGUMENT',
  'STATEMENT_TIMEOUT',
  'RESULT_TOO_LARGE',
]);
