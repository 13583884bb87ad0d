/**
 * Transactions as Hrana clients send them (BEGIN, COMMIT and ROLLBACK as statements) and Hrana's
 * conditional batches, run on hadb's atomic batches; which requests need a transaction held open
 * on the leader.
 */
import type { HadbDatabase } from '../api-types.ts';
import { AtomicRunFailedError, HranaRequestError } from '../errors.ts';
import { splitSql } from '../statements/statement-gate.ts';
import { runAtomic } from './atomic.ts';
import {
  type BatchCond,
  EMPTY_RESULT,
  type HranaError,
  isObject,
  type StmtResult,
  toHranaError,
  toStatement,
  wantRows,
} from './codec.ts';
import type { Stream } from './streams.ts';

/**
 * Whether the requests leave a transaction open (or roll one back after statements in it), which
 * only a connection on the leader can do. Stored SQL is followed as the requests would store it.
 */
export function needsLeader(stored: ReadonlyMap<number, string>, requests: unknown[]): boolean {
  const sqls = new Map(stored);
  const text = (holder: unknown): string | null => {
    if (!isObject(holder)) return null;
    if (typeof holder.sql === 'string') return holder.sql;
    return typeof holder.sql_id === 'number' ? (sqls.get(holder.sql_id) ?? null) : null;
  };
  for (const request of requests) {
    if (!isObject(request)) continue;
    if (request.type === 'store_sql' && typeof request.sql_id === 'number') {
      if (typeof request.sql === 'string') sqls.set(request.sql_id, request.sql);
    } else if (request.type === 'close_sql' && typeof request.sql_id === 'number') {
      sqls.delete(request.sql_id);
    } else if (request.type === 'execute') {
      const sql = text(request.stmt);
      if (sql !== null && controlKind(sql)?.kind === 'begin') return true;
    } else if (request.type === 'batch' && isObject(request.batch)) {
      const steps = Array.isArray(request.batch.steps) ? request.batch.steps : [];
      const planned = steps.map((step) => ({
        sql: isObject(step) ? text(step.stmt) : null,
        condition: isObject(step) ? step.condition : undefined,
      }));
      if (batchNeedsSession(planned)) return true;
    } else if (request.type === 'sequence') {
      const sql = text(request);
      if (sql !== null && sequenceNeedsSession(splitStatements(sql))) return true;
    }
  }
  return false;
}

/** The batch as planned if every statement succeeded: does it need a real open transaction? */
export function batchNeedsSession(steps: { sql: string | null; condition: unknown }[]): boolean {
  const assumed: Outcome[] = [];
  let state: TxState = 'none';
  let inTx = 0;
  try {
    for (const [j, step] of steps.entries()) {
      if (!evalCond(step.condition, assumed, state)) {
        assumed[j] = 'skipped';
        continue;
      }
      const kind = step.sql === null ? null : (controlKind(step.sql)?.kind ?? null);
      assumed[j] = 'ok';
      if (kind === 'begin') {
        if (state !== 'none') assumed[j] = 'error';
        state = 'open';
        inTx = 0;
      } else if (kind === 'commit') {
        if (state === 'none') assumed[j] = 'error';
        state = 'none';
      } else if (kind === 'rollback') {
        if (state === 'open' && inTx > 0) return true;
        state = 'none';
      } else if (state === 'open') {
        inTx++;
      }
    }
  } catch {
    return false;
  }
  return state === 'open';
}

export function sequenceNeedsSession(texts: string[]): boolean {
  let open = false;
  for (const text of texts) {
    const kind = controlKind(text)?.kind;
    if (kind === 'begin') open = true;
    else if (kind === 'commit') open = false;
    else if (kind === 'rollback') return true;
  }
  return open;
}

export interface Control {
  kind: 'begin' | 'commit' | 'rollback';
  /** `BEGIN TRANSACTION READONLY`, which @libsql/client sends for `transaction('read')`. */
  readOnly: boolean;
}
export type Outcome = 'ok' | 'error' | 'skipped';
export type TxState = 'none' | 'open' | 'failed';

/**
 * After a failed step the rest of an atomic batch is planned again; a plan that would then leave a
 * transaction open (which the first plan did not) is refused rather than half applied.
 */
const BATCH_TX_REPLANNED =
  'after the failed step this batch would leave a transaction open; send BEGIN on its own';

export function controlKind(sql: string): Control | null {
  const text = sql
    .replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, ' ')
    .trim()
    .replace(/;\s*$/, '')
    .trim()
    .toLowerCase();
  if (/^begin(\s+(deferred|immediate|exclusive))?(\s+transaction)?$/.test(text)) {
    return { kind: 'begin', readOnly: false };
  }
  if (/^begin\s+transaction\s+readonly$/.test(text)) return { kind: 'begin', readOnly: true };
  if (/^(commit|end)(\s+transaction)?$/.test(text)) return { kind: 'commit', readOnly: false };
  if (/^rollback(\s+transaction)?$/.test(text)) return { kind: 'rollback', readOnly: false };
  return null;
}

export function evalCond(cond: unknown, outcomes: Outcome[], tx: TxState): boolean {
  if (cond === null || cond === undefined) return true;
  if (!isObject(cond)) throw new HranaRequestError('BAD_REQUEST', 'a condition must be an object');
  const c = cond as BatchCond;
  switch (c.type) {
    case 'ok':
      return outcomes[c.step] === 'ok';
    case 'error':
      return outcomes[c.step] === 'error';
    case 'not':
      return !evalCond(c.cond, outcomes, tx);
    case 'and':
      return c.conds.every((inner) => evalCond(inner, outcomes, tx));
    case 'or':
      return c.conds.some((inner) => evalCond(inner, outcomes, tx));
    case 'is_autocommit':
      return tx === 'none';
    default:
      throw new HranaRequestError('BAD_REQUEST', `unknown condition ${JSON.stringify(c)}`);
  }
}

/**
 * Hrana's conditional steps on top of hadb's atomic batches: the steps that would run if every
 * statement succeeded are applied as one batch on the leader. If SQLite refuses one, nothing was
 * applied; statements before it that were outside an explicit transaction are applied again
 * (they had autocommitted), those inside it stay rolled back, and the conditions are evaluated
 * again from the failed step on.
 */
export async function runBatch(
  db: HadbDatabase,
  stream: Stream,
  rawSteps: unknown[],
): Promise<{ step_results: (StmtResult | null)[]; step_errors: (HranaError | null)[] }> {
  const steps = rawSteps.map((step) => {
    if (!isObject(step)) throw new HranaRequestError('BAD_REQUEST', 'a step must be an object');
    const statement = toStatement(stream.sqls, step.stmt);
    return {
      condition: step.condition,
      statement,
      control: controlKind(statement.sql)?.kind ?? null,
      readOnly: controlKind(statement.sql)?.readOnly === true,
      wantRows: wantRows(step.stmt),
    };
  });
  // A read-only transaction (`transaction('read')`, `batch(…, 'read')`) writes nothing.
  const readOnly = steps.some((step) => step.readOnly);
  const outcomes: Outcome[] = [];
  const results: (StmtResult | null)[] = steps.map(() => null);
  const errors: (HranaError | null)[] = steps.map(() => null);
  let tx: TxState = 'none';
  let from = 0;
  while (from < steps.length) {
    // Plan the rest assuming every statement succeeds.
    const assumed = outcomes.slice();
    const planned: number[] = [];
    const txBefore: TxState[] = [];
    const txOpenedAt: number[] = [];
    let state = tx;
    let openedAt = -1;
    let statementsInTx = 0;
    for (let j = from; j < steps.length; j++) {
      const step = steps[j] as (typeof steps)[number];
      txBefore[j] = state;
      txOpenedAt[j] = openedAt;
      if (!evalCond(step.condition, assumed, state)) {
        assumed[j] = 'skipped';
        continue;
      }
      if (step.control === 'begin') {
        if (state !== 'none') {
          assumed[j] = 'error';
          errors[j] = {
            message: 'cannot start a transaction within a transaction',
            code: 'SQLITE_ERROR',
          };
          continue;
        }
        state = 'open';
        openedAt = j;
        statementsInTx = 0;
        assumed[j] = 'ok';
      } else if (step.control === 'commit') {
        if (state === 'none') {
          assumed[j] = 'error';
          errors[j] = { message: 'cannot commit - no transaction is active', code: 'SQLITE_ERROR' };
        } else if (state === 'failed') {
          assumed[j] = 'error';
          errors[j] = {
            message: 'cannot commit: a statement of this transaction failed and it was rolled back',
            code: 'SQLITE_ABORT',
          };
          state = 'none';
        } else {
          assumed[j] = 'ok';
          state = 'none';
        }
      } else if (step.control === 'rollback') {
        if (state === 'open' && statementsInTx > 0) {
          throw new HranaRequestError('TRANSACTION_NOT_SUPPORTED', BATCH_TX_REPLANNED);
        }
        assumed[j] = state === 'none' ? 'error' : 'ok';
        if (state === 'none') {
          errors[j] = {
            message: 'cannot rollback - no transaction is active',
            code: 'SQLITE_ERROR',
          };
        }
        state = 'none';
      } else if (state === 'failed') {
        assumed[j] = 'error';
        errors[j] = {
          message: 'not executed: an earlier statement of this transaction failed',
          code: 'SQLITE_ABORT',
        };
      } else {
        assumed[j] = 'ok';
        planned.push(j);
        if (state === 'open') statementsInTx++;
      }
    }
    if (state === 'open' && statementsInTx > 0) {
      throw new HranaRequestError('TRANSACTION_NOT_SUPPORTED', BATCH_TX_REPLANNED);
    }
    const statementsOf = (indexes: number[]) =>
      indexes.map((j) => (steps[j] as (typeof steps)[number]).statement);
    const wantsOf = (indexes: number[]) =>
      indexes.map((j) => (steps[j] as (typeof steps)[number]).wantRows);
    try {
      const planResults =
        planned.length > 0
          ? await runAtomic(db, statementsOf(planned), wantsOf(planned), readOnly)
          : [];
      planned.forEach((j, i) => {
        results[j] = planResults[i] ?? EMPTY_RESULT;
      });
      for (let j = from; j < steps.length; j++) {
        outcomes[j] = assumed[j] as Outcome;
        if (outcomes[j] === 'ok' && results[j] === null) results[j] = EMPTY_RESULT;
      }
      return { step_results: results, step_errors: errors };
    } catch (error) {
      if (!(error instanceof AtomicRunFailedError)) throw error;
      const failed = planned[error.index] as number;
      const before = planned.slice(0, error.index);
      // Statements before the transaction the failed one belongs to had autocommitted.
      const opened = txBefore[failed] === 'open' ? (txOpenedAt[failed] as number) : failed;
      const committed = before.filter((j) => j < opened);
      if (committed.length > 0) {
        const again = await runAtomic(db, statementsOf(committed), wantsOf(committed), readOnly);
        committed.forEach((j, i) => {
          results[j] = again[i] ?? EMPTY_RESULT;
        });
      }
      for (let j = from; j < failed; j++) {
        outcomes[j] = assumed[j] as Outcome;
        if (outcomes[j] === 'ok' && results[j] === null) results[j] = EMPTY_RESULT;
      }
      for (let j = failed; j < steps.length; j++) errors[j] = null;
      outcomes[failed] = 'error';
      errors[failed] = toHranaError(error.error);
      tx = txBefore[failed] === 'open' ? 'failed' : (txBefore[failed] as TxState);
      from = failed + 1;
    }
  }
  return { step_results: results, step_errors: errors };
}

/**
 * Splits SQL text at the semicolons that end statements: not those in quotes, comments or the
 * body of a CREATE TRIGGER (which ends with END).
 */
export function splitStatements(sql: string): string[] {
  return splitSql(sql);
}
