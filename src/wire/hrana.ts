import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { HadbDatabase } from '../actors/hosted-database.ts';
import { SqlError } from '../errors.ts';
import type { Row, SqlValue, Statement, StatementResult } from './forward.ts';
import { authorized, close, digest, listen, readBody } from './http.ts';

/**
 * Hrana over HTTP (JSON, versions 2 and 3: the pipeline bodies are the same), so that libSQL
 * clients (`@libsql/client` with an http:// URL) can talk to a hadb node. One database per
 * server. A batch is applied atomically on the leader (forwarded from a follower); interactive
 * transactions (BEGIN in one request, COMMIT in a later one) are not supported yet.
 */

const MAX_BODY_BYTES = 16 * 1024 * 1024;
/** A stream left open by a client (no `close`) is dropped after this much idleness. */
const STREAM_IDLE_MS = 15_000;
const MAX_STREAMS = 10_000;
/** What SQLite says about RAISE outside a trigger: the marker that ends a probe batch. */
const PROBE_SQL = "select raise(abort, 'hadb probe')";
const PROBE_MESSAGE = 'RAISE() may only be used within a trigger-program';

export interface HranaServerOptions {
  host: string;
  port: number;
  database: HadbDatabase;
  /** Clients must send `Authorization: Bearer <authToken>`; null turns authentication off. */
  authToken: string | null;
}

export interface HranaServer {
  /** `http://host:port`, with the port actually bound. */
  readonly address: string;
  close(): Promise<void>;
}

// ---- protocol types (JSON encoding) ------------------------------------------------------------

type HranaValue =
  | { type: 'null' }
  | { type: 'integer'; value: string }
  | { type: 'float'; value: number }
  | { type: 'text'; value: string }
  | { type: 'blob'; base64: string };

interface HranaError {
  message: string;
  code: string | null;
}

interface StmtResult {
  cols: { name: string | null; decltype: string | null }[];
  rows: HranaValue[][];
  affected_row_count: number;
  last_insert_rowid: string | null;
}

type BatchCond =
  | { type: 'ok'; step: number }
  | { type: 'error'; step: number }
  | { type: 'not'; cond: BatchCond }
  | { type: 'and'; conds: BatchCond[] }
  | { type: 'or'; conds: BatchCond[] }
  | { type: 'is_autocommit' };

/** A request the client made wrong, or one this server cannot honour: one error result. */
class HranaRequestError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

const NOT_SUPPORTED_TX =
  'interactive transactions (BEGIN in one request, COMMIT in a later one) are not supported ' +
  'by hadb serve yet; send the statements as one batch, which is applied atomically';

// ---- server ------------------------------------------------------------------------------------

interface Stream {
  sqls: Map<number, string>;
  timer: NodeJS.Timeout;
}

export async function startHranaServer(options: HranaServerOptions): Promise<HranaServer> {
  const expected = options.authToken === null ? null : digest(`Bearer ${options.authToken}`);
  const streams = new Map<string, Stream>();

  const server = http.createServer((request, response) => {
    handle(request).then(
      (answer) => reply(response, answer.status, answer.body),
      (error: unknown) => {
        const message = error instanceof Error ? error.message : String(error);
        if (!response.headersSent) reply(response, 500, { message, code: 'INTERNAL' });
        else response.destroy();
      },
    );
  });
  server.keepAliveTimeout = 60_000;

  async function handle(request: http.IncomingMessage): Promise<{ status: number; body: unknown }> {
    const path = new URL(request.url ?? '/', 'http://hrana').pathname.replace(/\/+$/, '');
    if (expected !== null && !authorized(request.headers.authorization, expected)) {
      request.resume();
      return {
        status: 401,
        body: { message: 'missing or wrong auth token', code: 'UNAUTHORIZED' },
      };
    }
    if (request.method === 'GET' && (path === '/v2' || path === '/v3' || path === '')) {
      request.resume();
      return { status: 200, body: { ok: true } };
    }
    if (path !== '/v2/pipeline' && path !== '/v3/pipeline') {
      request.resume();
      return { status: 404, body: { message: `no such endpoint ${path}`, code: 'NOT_FOUND' } };
    }
    if (request.method !== 'POST') {
      request.resume();
      return { status: 405, body: { message: 'use POST', code: 'METHOD_NOT_ALLOWED' } };
    }
    let body: unknown;
    try {
      body = JSON.parse((await readBody(request, MAX_BODY_BYTES)).toString('utf8'));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      return {
        status: 400,
        body: { message: `bad pipeline body: ${message}`, code: 'BAD_REQUEST' },
      };
    }
    return pipeline(body);
  }

  async function pipeline(body: unknown): Promise<{ status: number; body: unknown }> {
    if (!isObject(body) || !Array.isArray(body.requests)) {
      return { status: 400, body: { message: 'requests must be an array', code: 'BAD_REQUEST' } };
    }
    let stream: Stream;
    if (body.baton === null || body.baton === undefined) {
      stream = { sqls: new Map(), timer: undefined as unknown as NodeJS.Timeout };
    } else {
      const found = typeof body.baton === 'string' ? streams.get(body.baton) : undefined;
      if (!found) {
        return {
          status: 400,
          body: { message: 'unknown or expired baton (stream)', code: 'STREAM_EXPIRED' },
        };
      }
      streams.delete(body.baton as string);
      clearTimeout(found.timer);
      stream = found;
    }
    const results: unknown[] = [];
    let closed = false;
    for (const request of body.requests) {
      if (closed) {
        results.push(failure(new HranaRequestError('STREAM_CLOSED', 'the stream is closed')));
        continue;
      }
      try {
        const response = await streamRequest(options.database, stream, request);
        if (response.type === 'close') closed = true;
        results.push({ type: 'ok', response });
      } catch (error) {
        results.push(failure(error));
      }
    }
    let baton: string | null = null;
    if (!closed) {
      if (streams.size >= MAX_STREAMS) {
        return { status: 503, body: { message: 'too many open streams', code: 'OVERLOADED' } };
      }
      baton = randomBytes(24).toString('base64url');
      const key = baton;
      stream.timer = setTimeout(() => streams.delete(key), STREAM_IDLE_MS);
      stream.timer.unref();
      streams.set(key, stream);
    }
    return { status: 200, body: { baton, base_url: null, results } };
  }

  const address = await listen(server, options.host, options.port);
  return {
    address,
    close: () => {
      for (const stream of streams.values()) clearTimeout(stream.timer);
      streams.clear();
      return close(server);
    },
  };
}

function reply(response: http.ServerResponse, status: number, body: unknown): void {
  const bytes = Buffer.from(JSON.stringify(body));
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': bytes.length,
  });
  response.end(bytes);
}

function failure(error: unknown): { type: 'error'; error: HranaError } {
  return { type: 'error', error: toHranaError(error) };
}

function toHranaError(error: unknown): HranaError {
  if (error instanceof AtomicFailure) return toHranaError(error.error);
  // The client puts the code in front of the message itself.
  if (error instanceof SqlError) {
    return { message: error.message.replace(/^(SQL_ERROR: )+/, ''), code: error.sqliteCode };
  }
  if (error instanceof HranaRequestError) return { message: error.message, code: error.code };
  const message = error instanceof Error ? error.message : String(error);
  const code = isObject(error) && typeof error.code === 'string' ? error.code : 'INTERNAL';
  return { message, code };
}

// ---- stream requests ---------------------------------------------------------------------------

async function streamRequest(
  db: HadbDatabase,
  stream: Stream,
  request: unknown,
): Promise<{ type: string } & Record<string, unknown>> {
  if (!isObject(request)) throw new HranaRequestError('BAD_REQUEST', 'a request must be an object');
  switch (request.type) {
    case 'close':
      return { type: 'close' };
    case 'execute': {
      const statement = toStatement(stream, request.stmt);
      if (controlKind(statement.sql) !== null) {
        throw new HranaRequestError('TRANSACTION_NOT_SUPPORTED', NOT_SUPPORTED_TX);
      }
      const [result] = await runAtomic(db, [statement], [wantRows(request.stmt)]);
      return { type: 'execute', result };
    }
    case 'batch': {
      if (!isObject(request.batch) || !Array.isArray(request.batch.steps)) {
        throw new HranaRequestError('BAD_REQUEST', 'batch.steps must be an array');
      }
      return { type: 'batch', result: await runBatch(db, stream, request.batch.steps) };
    }
    case 'sequence': {
      const sql = sqlOf(stream, request);
      const statements: Statement[] = [];
      for (const text of splitStatements(sql)) {
        const kind = controlKind(text);
        // The whole sequence is applied atomically, so its own BEGIN and COMMIT add nothing.
        if (kind === 'begin' || kind === 'commit') continue;
        if (kind === 'rollback')
          throw new HranaRequestError('TRANSACTION_NOT_SUPPORTED', NOT_SUPPORTED_TX);
        statements.push({ sql: text });
      }
      if (statements.length > 0) await db.batch(statements, { bigints: true });
      return { type: 'sequence' };
    }
    case 'store_sql': {
      if (typeof request.sql_id !== 'number' || typeof request.sql !== 'string') {
        throw new HranaRequestError('BAD_REQUEST', 'store_sql needs sql_id and sql');
      }
      if (stream.sqls.has(request.sql_id)) {
        throw new HranaRequestError('SQL_ID_IN_USE', `sql_id ${request.sql_id} is already in use`);
      }
      stream.sqls.set(request.sql_id, request.sql);
      return { type: 'store_sql' };
    }
    case 'close_sql':
      if (typeof request.sql_id === 'number') stream.sqls.delete(request.sql_id);
      return { type: 'close_sql' };
    case 'get_autocommit':
      // No request leaves a transaction open on a stream.
      return { type: 'get_autocommit', is_autocommit: true };
    default:
      throw new HranaRequestError(
        'NOT_SUPPORTED',
        `request type ${JSON.stringify(request.type)} is not supported by hadb serve`,
      );
  }
}

function sqlOf(stream: Stream, holder: Record<string, unknown>): string {
  if (typeof holder.sql === 'string') return holder.sql;
  if (typeof holder.sql_id === 'number') {
    const stored = stream.sqls.get(holder.sql_id);
    if (stored === undefined) {
      throw new HranaRequestError('SQL_NOT_FOUND', `no SQL text stored as ${holder.sql_id}`);
    }
    return stored;
  }
  throw new HranaRequestError('BAD_REQUEST', 'a statement needs sql or sql_id');
}

function wantRows(stmt: unknown): boolean {
  return !(isObject(stmt) && stmt.want_rows === false);
}

function toStatement(stream: Stream, stmt: unknown): Statement {
  if (!isObject(stmt)) throw new HranaRequestError('BAD_REQUEST', 'stmt must be an object');
  const sql = sqlOf(stream, stmt);
  const args = Array.isArray(stmt.args) ? stmt.args : [];
  const named = Array.isArray(stmt.named_args) ? stmt.named_args : [];
  if (args.length > 0 && named.length > 0) {
    throw new HranaRequestError(
      'ARGS_NOT_SUPPORTED',
      'a statement may have positional or named arguments, not both',
    );
  }
  if (named.length > 0) {
    const params: Record<string, SqlValue> = {};
    for (const arg of named) {
      if (!isObject(arg) || typeof arg.name !== 'string') {
        throw new HranaRequestError('BAD_REQUEST', 'a named argument needs a name');
      }
      // better-sqlite3 binds named parameters by their name without the prefix sign.
      params[arg.name.replace(/^[:@$]/, '')] = fromHrana(arg.value);
    }
    return { sql, params };
  }
  return args.length > 0 ? { sql, params: args.map(fromHrana) } : { sql };
}

function fromHrana(value: unknown): SqlValue {
  if (!isObject(value)) throw new HranaRequestError('BAD_REQUEST', 'a value must be an object');
  switch (value.type) {
    case 'null':
      return null;
    case 'integer': {
      const text = typeof value.value === 'number' ? String(value.value) : value.value;
      if (typeof text !== 'string' || !/^-?\d+$/.test(text)) {
        throw new HranaRequestError('BAD_REQUEST', 'an integer value must be a decimal string');
      }
      const n = BigInt(text);
      if (n < -(2n ** 63n) || n >= 2n ** 63n) {
        throw new HranaRequestError('BAD_REQUEST', `integer ${text} does not fit in 64 bits`);
      }
      return n;
    }
    case 'float':
      if (typeof value.value !== 'number') {
        throw new HranaRequestError('BAD_REQUEST', 'a float value must be a number');
      }
      return value.value;
    case 'text':
      if (typeof value.value !== 'string') {
        throw new HranaRequestError('BAD_REQUEST', 'a text value must be a string');
      }
      return value.value;
    case 'blob':
      if (typeof value.base64 !== 'string') {
        throw new HranaRequestError('BAD_REQUEST', 'a blob value needs base64');
      }
      return Buffer.from(value.base64, 'base64');
    default:
      throw new HranaRequestError(
        'BAD_REQUEST',
        `unknown value type ${JSON.stringify(value.type)}`,
      );
  }
}

function toHrana(value: SqlValue): HranaValue {
  if (value === null) return { type: 'null' };
  // Reads and writes run with bigints on, so a JS number here is always a REAL.
  if (typeof value === 'bigint') return { type: 'integer', value: value.toString() };
  if (typeof value === 'number') return { type: 'float', value };
  if (typeof value === 'string') return { type: 'text', value };
  return { type: 'blob', base64: Buffer.from(value).toString('base64') };
}

function toStmtResult(result: StatementResult | null, wantRowsToo: boolean): StmtResult {
  const rows: Row[] = result?.rows ?? [];
  // Column names come from the row objects: statements that return no rows report no columns.
  const first = rows[0];
  const names = first ? Object.keys(first) : [];
  return {
    cols: names.map((name) => ({ name, decltype: null })),
    rows: wantRowsToo ? rows.map((row) => names.map((name) => toHrana(row[name] ?? null))) : [],
    affected_row_count: result?.changes ?? 0,
    last_insert_rowid: result && result.rows === undefined ? String(result.lastInsertRowid) : null,
  };
}

const EMPTY_RESULT: StmtResult = {
  cols: [],
  rows: [],
  affected_row_count: 0,
  last_insert_rowid: null,
};

// ---- running statements ------------------------------------------------------------------------

/** A failed atomic run: nothing was applied; `index` is the statement SQLite refused. */
class AtomicFailure extends Error {
  constructor(
    readonly index: number,
    readonly error: unknown,
  ) {
    super('atomic run failed');
  }
}

/**
 * Runs the statements as one transaction. Reads are served from the local copy (after this
 * node's last write, so a client sees what it wrote through this node); anything else goes to
 * the leader as one batch.
 */
async function runAtomic(
  db: HadbDatabase,
  statements: Statement[],
  wants: boolean[],
): Promise<StmtResult[]> {
  const local = await tryLocalReads(db, statements);
  if (local)
    return local.map((rows, i) =>
      toStmtResult({ changes: 0, lastInsertRowid: 0, rows }, wants[i] ?? true),
    );
  try {
    const { results } = await db.batch(statements, { bigints: true });
    return results.map((result, i) => toStmtResult(result, wants[i] ?? true));
  } catch (error) {
    if (!(error instanceof SqlError)) throw error;
    if (statements.length === 1) throw new AtomicFailure(0, error);
    throw await locateFailure(db, statements, error);
  }
}

async function tryLocalReads(db: HadbDatabase, statements: Statement[]): Promise<Row[][] | null> {
  const rows: Row[][] = [];
  for (const statement of statements) {
    try {
      rows.push(
        await db.all(statement.sql, statement.params, {
          consistency: 'read-your-writes',
          bigints: true,
        }),
      );
    } catch (error) {
      // A write is refused here (SQLITE_READONLY); a table created a moment ago may not have
      // reached this copy yet. Either way the leader decides.
      if (error instanceof SqlError) return null;
      throw error;
    }
  }
  return rows;
}

/**
 * Which statement of a failed batch SQLite refused: prefixes are re-run on the leader ending
 * with a statement that always fails, so each probe is rolled back and nothing is applied.
 */
async function locateFailure(
  db: HadbDatabase,
  statements: Statement[],
  error: SqlError,
): Promise<AtomicFailure> {
  let lo = 0;
  let hi = statements.length - 1;
  let found: unknown = error;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    try {
      await db.batch([...statements.slice(0, mid + 1), { sql: PROBE_SQL }], { bigints: true });
      lo = mid + 1; // cannot happen (the probe always fails), but stay safe
    } catch (probeError) {
      if (probeError instanceof SqlError && probeError.message.includes(PROBE_MESSAGE)) {
        lo = mid + 1;
      } else if (probeError instanceof SqlError) {
        hi = mid;
        found = probeError;
      } else {
        throw probeError;
      }
    }
  }
  return new AtomicFailure(lo, found);
}

// ---- batches -----------------------------------------------------------------------------------

type Control = 'begin' | 'commit' | 'rollback';
type Outcome = 'ok' | 'error' | 'skipped';
type TxState = 'none' | 'open' | 'failed';

function controlKind(sql: string): Control | null {
  const text = sql
    .replace(/--[^\n]*|\/\*[\s\S]*?\*\//g, ' ')
    .trim()
    .replace(/;\s*$/, '')
    .trim()
    .toLowerCase();
  if (/^begin(\s+(deferred|immediate|exclusive))?(\s+transaction)?$/.test(text)) return 'begin';
  if (/^(commit|end)(\s+transaction)?$/.test(text)) return 'commit';
  if (/^rollback(\s+transaction)?$/.test(text)) return 'rollback';
  return null;
}

function evalCond(cond: unknown, outcomes: Outcome[], tx: TxState): boolean {
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
async function runBatch(
  db: HadbDatabase,
  stream: Stream,
  rawSteps: unknown[],
): Promise<{ step_results: (StmtResult | null)[]; step_errors: (HranaError | null)[] }> {
  const steps = rawSteps.map((step) => {
    if (!isObject(step)) throw new HranaRequestError('BAD_REQUEST', 'a step must be an object');
    const statement = toStatement(stream, step.stmt);
    return {
      condition: step.condition,
      statement,
      control: controlKind(statement.sql),
      wantRows: wantRows(step.stmt),
    };
  });
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
          throw new HranaRequestError('TRANSACTION_NOT_SUPPORTED', NOT_SUPPORTED_TX);
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
      throw new HranaRequestError('TRANSACTION_NOT_SUPPORTED', NOT_SUPPORTED_TX);
    }
    const statementsOf = (indexes: number[]) =>
      indexes.map((j) => (steps[j] as (typeof steps)[number]).statement);
    const wantsOf = (indexes: number[]) =>
      indexes.map((j) => (steps[j] as (typeof steps)[number]).wantRows);
    try {
      const planResults =
        planned.length > 0 ? await runAtomic(db, statementsOf(planned), wantsOf(planned)) : [];
      planned.forEach((j, i) => {
        results[j] = planResults[i] ?? EMPTY_RESULT;
      });
      for (let j = from; j < steps.length; j++) {
        outcomes[j] = assumed[j] as Outcome;
        if (outcomes[j] === 'ok' && results[j] === null) results[j] = EMPTY_RESULT;
      }
      return { step_results: results, step_errors: errors };
    } catch (error) {
      if (!(error instanceof AtomicFailure)) throw error;
      const failed = planned[error.index] as number;
      const before = planned.slice(0, error.index);
      // Statements before the transaction the failed one belongs to had autocommitted.
      const opened = txBefore[failed] === 'open' ? (txOpenedAt[failed] as number) : failed;
      const committed = before.filter((j) => j < opened);
      if (committed.length > 0) {
        const again = await runAtomic(db, statementsOf(committed), wantsOf(committed));
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

// ---- sequences ---------------------------------------------------------------------------------

/**
 * Splits SQL text at the semicolons that end statements: not those in quotes, comments or the
 * body of a CREATE TRIGGER (which ends with END).
 */
export function splitStatements(sql: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let i = 0;
  let words = '';
  while (i < sql.length) {
    const ch = sql[i] as string;
    const next = sql[i + 1];
    if (ch === "'" || ch === '"' || ch === '`' || ch === '[') {
      const close = ch === '[' ? ']' : ch;
      i++;
      while (i < sql.length) {
        if (sql[i] === close) {
          if (close !== ']' && sql[i + 1] === close) {
            i += 2;
            continue;
          }
          break;
        }
        i++;
      }
      i++;
      words += ' ? ';
      continue;
    }
    if (ch === '-' && next === '-') {
      while (i < sql.length && sql[i] !== '\n') i++;
      continue;
    }
    if (ch === '/' && next === '*') {
      const end = sql.indexOf('*/', i + 2);
      i = end === -1 ? sql.length : end + 2;
      continue;
    }
    if (ch === ';') {
      const lowered = words.toLowerCase();
      const inTrigger =
        /^\s*create\s+(temp\s+|temporary\s+)?trigger\b/.test(lowered) && !/\bend\s*$/.test(lowered);
      if (!inTrigger) {
        const text = sql.slice(start, i).trim();
        if (text.length > 0) statements.push(text);
        start = i + 1;
        words = '';
        i++;
        continue;
      }
    }
    words += ch;
    i++;
  }
  const rest = sql.slice(start).trim();
  // Trailing comments alone are not a statement.
  if (words.trim().length > 0 && rest.length > 0) statements.push(rest);
  return statements;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
