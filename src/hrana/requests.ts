/**
 * The requests of a Hrana stream (execute, batch, sequence, stored SQL), run as a connection would
 * run them: in the stream's open transaction when it has one, otherwise atomically.
 */
import type { HadbDatabase, Statement } from '../api-types.ts';
import { HranaRequestError, SqlError } from '../errors.ts';
import { checkClientSql } from '../statements/statement-gate.ts';
import { noteWrite, runAtomic } from './atomic.ts';
import {
  batchNeedsSession,
  controlKind,
  evalCond,
  type Outcome,
  runBatch,
  sequenceNeedsSession,
  splitStatements,
} from './batch.ts';
import {
  EMPTY_RESULT,
  type HranaError,
  isObject,
  type StmtResult,
  sqlOf,
  toHranaError,
  toStatement,
  toStmtResult,
  wantRows,
} from './codec.ts';
import { closeSql, type Stream, storeSql } from './streams.ts';

/**
 * The statement gate, before a request runs anything (each statement is checked again where it
 * runs). BEGIN, COMMIT and ROLLBACK as Hrana recognises them are the stream's own; savepoints
 * are judged where they run, inside the stream's transaction or not.
 */
function gateStatement(sql: string): void {
  if (controlKind(sql) === null) checkClientSql(sql, 'interactive');
}

export async function streamRequest(
  db: HadbDatabase,
  stream: Stream,
  request: unknown,
): Promise<{ type: string } & Record<string, unknown>> {
  if (!isObject(request)) throw new HranaRequestError('BAD_REQUEST', 'a request must be an object');
  switch (request.type) {
    case 'close':
      return { type: 'close' };
    case 'execute': {
      const statement = toStatement(stream.sqls, request.stmt);
      return {
        type: 'execute',
        result: await executeOnStream(db, stream, statement, wantRows(request.stmt)),
      };
    }
    case 'batch': {
      if (!isObject(request.batch) || !Array.isArray(request.batch.steps)) {
        throw new HranaRequestError('BAD_REQUEST', 'batch.steps must be an array');
      }
      const steps = request.batch.steps;
      const planned = steps.map((step) => ({
        sql: isObject(step) && isObject(step.stmt) ? sqlOf(stream.sqls, step.stmt) : null,
        condition: isObject(step) ? step.condition : undefined,
      }));
      // A refused step fails the whole batch before any step runs.
      for (const step of planned) if (step.sql !== null) gateStatement(step.sql);
      const result =
        stream.tx !== null || batchNeedsSession(planned)
          ? await runBatchOnStream(db, stream, steps)
          : await runBatch(db, stream, steps);
      return { type: 'batch', result };
    }
    case 'sequence': {
      const texts = splitStatements(sqlOf(stream.sqls, request));
      for (const sql of texts) gateStatement(sql);
      if (stream.tx !== null || sequenceNeedsSession(texts)) {
        for (const sql of texts) await executeOnStream(db, stream, { sql }, false);
        return { type: 'sequence' };
      }
      // The whole sequence is applied atomically, so its own BEGIN and COMMIT add nothing.
      const statements = texts.filter((sql) => controlKind(sql) === null).map((sql) => ({ sql }));
      if (statements.length > 0)
        noteWrite(db, (await db.batch(statements, { bigints: true, isolated: true })).token);
      return { type: 'sequence' };
    }
    case 'store_sql': {
      if (typeof request.sql_id !== 'number' || typeof request.sql !== 'string') {
        throw new HranaRequestError('BAD_REQUEST', 'store_sql needs sql_id and sql');
      }
      storeSql(stream, request.sql_id, request.sql);
      return { type: 'store_sql' };
    }
    case 'close_sql':
      closeSql(stream, request.sql_id);
      return { type: 'close_sql' };
    case 'get_autocommit':
      return { type: 'get_autocommit', is_autocommit: stream.tx === null };
    default:
      throw new HranaRequestError(
        'NOT_SUPPORTED',
        `request type ${JSON.stringify(request.type)} is not supported by hadb serve`,
      );
  }
}

/**
 * One statement as a connection would run it: inside the stream's transaction when one is open
 * (BEGIN opens one, on the leader), otherwise on its own (a read here, a write on the leader).
 */
async function executeOnStream(
  db: HadbDatabase,
  stream: Stream,
  statement: Statement,
  wants: boolean,
): Promise<StmtResult> {
  const control = controlKind(statement.sql);
  const tx = stream.tx;
  if (tx !== null) {
    switch (control?.kind) {
      case 'begin':
        throw new SqlError('SQLITE_ERROR', 'cannot start a transaction within a transaction');
      case 'commit':
        stream.tx = null;
        await tx.commit();
        return EMPTY_RESULT;
      case 'rollback':
        // A transaction already ended (rolled back) ends here for the client too, quietly.
        stream.tx = null;
        if (tx.open) await tx.rollback();
        return EMPTY_RESULT;
      default:
        return toStmtResult(await tx.run(statement, true), wants);
    }
  }
  if (control?.kind === 'begin') {
    stream.tx = await db.begin({ readOnly: control.readOnly, isolated: true });
    return EMPTY_RESULT;
  }
  if (control !== null) {
    throw new SqlError('SQLITE_ERROR', `cannot ${control.kind} - no transaction is active`);
  }
  const [result] = await runAtomic(db, [statement], [wants]);
  return result ?? EMPTY_RESULT;
}

/** Steps one after the other on the stream, conditions evaluated on what really happened. */
async function runBatchOnStream(
  db: HadbDatabase,
  stream: Stream,
  rawSteps: unknown[],
): Promise<{ step_results: (StmtResult | null)[]; step_errors: (HranaError | null)[] }> {
  const outcomes: Outcome[] = [];
  const results: (StmtResult | null)[] = rawSteps.map(() => null);
  const errors: (HranaError | null)[] = rawSteps.map(() => null);
  for (const [j, step] of rawSteps.entries()) {
    if (!isObject(step)) throw new HranaRequestError('BAD_REQUEST', 'a step must be an object');
    if (!evalCond(step.condition, outcomes, stream.tx === null ? 'none' : 'open')) {
      outcomes[j] = 'skipped';
      continue;
    }
    try {
      const statement = toStatement(stream.sqls, step.stmt);
      results[j] = await executeOnStream(db, stream, statement, wantRows(step.stmt));
      outcomes[j] = 'ok';
    } catch (error) {
      outcomes[j] = 'error';
      errors[j] = toHranaError(error);
    }
  }
  return { step_results: results, step_errors: errors };
}
