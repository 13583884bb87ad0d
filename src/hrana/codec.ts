/**
 * Hrana's JSON encoding at hadb's edge: pipeline bodies, statements and values in, results and
 * errors out. hadb's errors become Hrana error codes here and only here.
 */
import { randomBytes } from 'node:crypto';
import type { Row, SqlValue, Statement, StatementResult, WriteToken } from '../api-types.ts';
import { messageOf } from '../error-message.ts';
import {
  AtomicRunFailedError,
  HadbError,
  type HadbErrorCode,
  HranaRequestError,
  httpStatusOf,
  SqlError,
  withoutCode,
} from '../errors.ts';
import { withoutAddresses } from '../wire/client-errors.ts';

export type HranaValue =
  | { type: 'null' }
  | { type: 'integer'; value: string }
  | { type: 'float'; value: number }
  | { type: 'text'; value: string }
  | { type: 'blob'; base64: string };

export interface HranaError {
  message: string;
  code: string | null;
}

export interface StmtResult {
  cols: { name: string | null; decltype: string | null }[];
  rows: HranaValue[][];
  affected_row_count: number;
  last_insert_rowid: string | null;
}

export type BatchCond =
  | { type: 'ok'; step: number }
  | { type: 'error'; step: number }
  | { type: 'not'; cond: BatchCond }
  | { type: 'and'; conds: BatchCond[] }
  | { type: 'or'; conds: BatchCond[] }
  | { type: 'is_autocommit' };

/** A whole answer to a request: its HTTP status and its JSON body. */
export interface Answer {
  status: number;
  body: unknown;
}

export interface PipelineBody {
  baton: string | null;
  requests: unknown[];
}

export function checkPipeline(body: unknown): PipelineBody | string {
  if (!isObject(body) || !Array.isArray(body.requests)) return 'requests must be an array';
  if (body.baton !== null && body.baton !== undefined && typeof body.baton !== 'string') {
    return 'baton must be a string or null';
  }
  return { baton: (body.baton as string | null | undefined) ?? null, requests: body.requests };
}

/** The codes of Hrana's own that answer a whole request, beside hadb's, and their statuses. */
const HRANA_STATUSES = {
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  STREAM_EXPIRED: 400,
  OVERLOADED: 503,
  /** A relayed stream reached a node whose Hrana server is not up yet. */
  STARTING: 503,
} as const;
type ProblemCode = keyof typeof HRANA_STATUSES | HadbErrorCode;

/** The status of a whole-request error answer: a Hrana code's own, a hadb code's from the table. */
export function hranaStatus(code: ProblemCode): number {
  return code in HRANA_STATUSES
    ? HRANA_STATUSES[code as keyof typeof HRANA_STATUSES]
    : httpStatusOf(code as HadbErrorCode);
}

export function problem(code: ProblemCode, message: string): Answer {
  return { status: hranaStatus(code), body: { message, code } };
}

/** Per-process tokens no client can guess, standing in for numbers JSON.stringify gets wrong. */
const TOKEN = randomBytes(16).toString('hex');
const SPECIAL_NUMBERS = new Map<string, string>([
  // sqld writes -0.0; @libsql/client (JSON.parse) reads it back as -0.
  [`hadb-negative-zero-${TOKEN}`, '-0.0'],
  // JSON.stringify writes null, which every client refuses as a float; JSON.parse reads 1e999
  // as Infinity.
  [`hadb-infinity-${TOKEN}`, '1e999'],
  [`hadb-negative-infinity-${TOKEN}`, '-1e999'],
]);
const [NEGATIVE_ZERO, INFINITY, NEGATIVE_INFINITY] = [...SPECIAL_NUMBERS.keys()];

/** JSON with -0 and ±Infinity kept; bodies without them (almost all) stringified as they are. */
export function toJson(body: unknown): string {
  if (!holdsSpecialNumber(body)) return JSON.stringify(body);
  const text = JSON.stringify(body, (_key, value: unknown) => {
    if (Object.is(value, -0)) return NEGATIVE_ZERO;
    if (value === Number.POSITIVE_INFINITY) return INFINITY;
    if (value === Number.NEGATIVE_INFINITY) return NEGATIVE_INFINITY;
    return value;
  });
  return text.replace(/"hadb-[a-z-]+-[0-9a-f]{32}"/g, (quoted) => {
    return SPECIAL_NUMBERS.get(quoted.slice(1, -1)) ?? quoted;
  });
}

function holdsSpecialNumber(value: unknown): boolean {
  if (typeof value === 'number') return Object.is(value, -0) || Math.abs(value) === Infinity;
  if (typeof value !== 'object' || value === null) return false;
  if (Array.isArray(value)) return value.some(holdsSpecialNumber);
  for (const key in value) {
    if (holdsSpecialNumber((value as Record<string, unknown>)[key])) return true;
  }
  return false;
}

export function failure(error: unknown): { type: 'error'; error: HranaError } {
  return { type: 'error', error: toHranaError(error) };
}

export function toHranaError(error: unknown): HranaError {
  if (error instanceof AtomicRunFailedError) return toHranaError(error.error);
  // The client puts the code in front of the message itself.
  if (error instanceof SqlError) {
    return { message: error.message.replace(/^(SQL_ERROR: )+/, ''), code: error.sqliteCode };
  }
  // Hrana's own codes: translated here, at the edge, and only here.
  if (error instanceof HranaRequestError) {
    return { message: withoutCode(error), code: error.hranaCode };
  }
  // The client puts the code in front of the message itself.
  if (error instanceof HadbError) {
    return { message: withoutCode(error), code: error.code };
  }
  const message = messageOf(error);
  const code = isObject(error) && typeof error.code === 'string' ? error.code : 'INTERNAL';
  // The client puts the code in front of the message itself (hadb's errors carry it already).
  return {
    message: message.startsWith(`${code}: `) ? message.slice(code.length + 2) : message,
    code,
  };
}

/**
 * Hides the addresses in the error messages of an answer's body (in place), for the client;
 * returns the messages as they were, for the log.
 */
export function hideAddresses(body: unknown): string[] {
  const hidden: string[] = [];
  const scrub = (holder: unknown) => {
    if (!isObject(holder) || typeof holder.message !== 'string') return;
    const message = withoutAddresses(holder.message);
    if (message === holder.message) return;
    hidden.push(holder.message);
    holder.message = message;
  };
  if (!isObject(body)) return hidden;
  scrub(body);
  if (Array.isArray(body.results)) {
    for (const result of body.results) {
      if (!isObject(result)) continue;
      scrub(result.error);
      const stepErrors =
        isObject(result.response) && isObject(result.response.result)
          ? result.response.result.step_errors
          : undefined;
      if (Array.isArray(stepErrors)) for (const stepError of stepErrors) scrub(stepError);
    }
  }
  return hidden;
}

export function sqlOf(sqls: ReadonlyMap<number, string>, holder: Record<string, unknown>): string {
  if (typeof holder.sql === 'string') return holder.sql;
  if (typeof holder.sql_id === 'number') {
    const stored = sqls.get(holder.sql_id);
    if (stored === undefined) {
      throw new HranaRequestError('SQL_NOT_FOUND', `no SQL text stored as ${holder.sql_id}`);
    }
    return stored;
  }
  throw new HranaRequestError('BAD_REQUEST', 'a statement needs sql or sql_id');
}

export function wantRows(stmt: unknown): boolean {
  return !(isObject(stmt) && stmt.want_rows === false);
}

export function toStatement(sqls: ReadonlyMap<number, string>, stmt: unknown): Statement {
  if (!isObject(stmt)) throw new HranaRequestError('BAD_REQUEST', 'stmt must be an object');
  const sql = sqlOf(sqls, stmt);
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

export function toStmtResult(result: StatementResult | null, wantRowsToo: boolean): StmtResult {
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

export const EMPTY_RESULT: StmtResult = {
  cols: [],
  rows: [],
  affected_row_count: 0,
  last_insert_rowid: null,
};

export function isToken(value: unknown): value is WriteToken {
  return isObject(value) && Number.isSafeInteger(value.epoch) && Number.isSafeInteger(value.seq);
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
