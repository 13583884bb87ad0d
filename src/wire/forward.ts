import { addExtension, Packr } from 'msgpackr';
import type { Durability, SqlValue, Statement, StatementResult, WriteToken } from '../api-types.ts';
import {
  BadRequestError,
  type HadbError,
  type HadbErrorCode,
  httpStatusOf,
  SqlError,
  UnauthorizedError,
  withoutCode,
} from '../errors.ts';
import { codeOfTextAnswer } from './node-protocol.ts';

/**
 * The node-to-node protocol: msgpack bodies over the node's HTTP listener. A follower forwards
 * writes (and reads that must see the leader) to the leader; a follower long-polls the leader for
 * each newly durable sequence. Every request carries the cluster secret. The paths and query
 * strings are in node-protocol.ts.
 */

export const PROTOCOL_VERSION = 1;
/** The content type of every node-to-node body. */
export const MSGPACK = 'application/msgpack';
/** Larger request bodies are refused before they are read in full. */
export const MAX_REQUEST_BYTES = 64 * 1024 * 1024;

export type ForwardOp = 'write' | 'read' | 'schema' | 'migrate';

export interface ForwardRequest {
  v: typeof PROTOCOL_VERSION;
  db: string;
  /** Unique per logical request: a retry carries the same one, and the leader applies it once. */
  requestId: string;
  /**
   * `write`: the statements in one transaction; `read`: statements run on the leader, nothing
   * written. `schema` and `migrate` carry SQL scripts (several statements each, no params) run
   * in one transaction: `schema` runs them all; `migrate` takes them as the ordered migrations
   * and applies those past the leader's `user_version`, judged in that same transaction.
   */
  op: ForwardOp;
  statements: Statement[];
  durability: Durability;
  /** Integers come back as bigint. */
  bigints: boolean;
}

/** The error codes a forward answer carries; any other failure is answered as INTERNAL. */
export const FORWARD_ERROR_CODES = [
  'NOT_LEADER',
  'SQL_ERROR',
  'UNKNOWN_DATABASE',
  'FENCED',
  'INVALID_ARGUMENT',
  'STATEMENT_REFUSED',
  'STATEMENT_TIMEOUT',
  'RESULT_TOO_LARGE',
  'INTERNAL',
] as const satisfies readonly HadbErrorCode[];

export type ForwardErrorCode = (typeof FORWARD_ERROR_CODES)[number];

const carriedCodes: ReadonlySet<HadbErrorCode> = new Set(FORWARD_ERROR_CODES);

export type ForwardResponse =
  | { ok: true; results: StatementResult[]; token: WriteToken }
  | {
      ok: false;
      code: ForwardErrorCode;
      message: string;
      sqliteCode?: string;
    };

/**
 * The answer to a forward that failed with `error`: its code, its message without the code (the
 * sender's rebuilt error puts it back, see revivedError) and an SqlError's SQLite code. A code
 * the protocol does not carry becomes INTERNAL, which the sender asks again.
 */
export function failedForwardAnswer(error: HadbError): ForwardResponse {
  if (!carriedCodes.has(error.code)) return { ok: false, code: 'INTERNAL', message: error.message };
  return {
    ok: false,
    code: error.code as ForwardErrorCode,
    message: withoutCode(error),
    ...(error instanceof SqlError ? { sqliteCode: error.sqliteCode } : {}),
  };
}

/** The status the leader answers `response` with: 200, or the status of its error's code. */
export function forwardAnswerStatus(response: ForwardResponse): number {
  return response.ok ? 200 : httpStatusOf(response.code);
}

/**
 * The leader's answer as the sender reads it. An answer the listener gave as text: a malformed
 * request or a refused secret is thrown (asking again will not help); a node that failed is an
 * INTERNAL answer, asked again. `peer` is the leader's address, for the messages.
 */
export function readForwardAnswer(status: number, body: Uint8Array, peer: string): ForwardResponse {
  const text = codeOfTextAnswer(status);
  if (text === 'UNAUTHORIZED') throw new UnauthorizedError(`${peer} refused the cluster secret`);
  if (text === 'BAD_REQUEST') {
    // The listener's text starts with the code, which the rebuilt error puts back.
    const said = Buffer.from(body)
      .toString()
      .replace(/^BAD_REQUEST: /, '');
    throw new BadRequestError(`${peer}: ${said}`);
  }
  if (text === 'INTERNAL')
    return { ok: false, code: 'INTERNAL', message: Buffer.from(body).toString() };
  return decodeForwardResponse(body);
}

export interface TailResponse {
  epoch: number;
  /** The highest sequence durable in storage that this leader knows of. */
  seq: number;
  /** False once the answering node no longer leads: read the lease again. */
  leading: boolean;
}

const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  mapsAsObjects: true,
  int64AsType: 'bigint',
});

/**
 * msgpackr packs -0 as the integer 0, so SQLite would store 0.0 for -0.0. A -0 is swapped for
 * this marker, which writes the standard float64 -0 (0xcb 80 00 …): any msgpack reader,
 * an older node's too, reads it back as -0.
 */
class NegativeZero {}
const NEGATIVE_ZERO = new NegativeZero();
const FLOAT64_NEGATIVE_ZERO = [0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0];
addExtension({
  Class: NegativeZero,
  // Required by msgpackr for a packing extension, though this one writes no extension.
  type: 0x2d,
  // msgpackr's raw form (its Date extension uses it too): bytes written in place, no ext header.
  pack: ((
    _value: NegativeZero,
    allocate: (size: number) => { target: Uint8Array; position: number },
  ) => {
    const { target, position } = allocate(FLOAT64_NEGATIVE_ZERO.length);
    target.set(FLOAT64_NEGATIVE_ZERO, position);
  }) as unknown as (value: unknown) => Uint8Array,
  unpack: () => -0,
});

/** `message` with each -0 replaced by the marker; the same object when it holds none. */
function markNegativeZeros(value: unknown): unknown {
  if (typeof value === 'number') return Object.is(value, -0) ? NEGATIVE_ZERO : value;
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | null = null;
    for (let i = 0; i < value.length; i++) {
      const marked = markNegativeZeros(value[i]);
      if (!Object.is(marked, value[i])) {
        copy ??= value.slice();
        copy[i] = marked;
      }
    }
    return copy ?? value;
  }
  let copy: Record<string, unknown> | null = null;
  for (const key in value) {
    const field = (value as Record<string, unknown>)[key];
    const marked = markNegativeZeros(field);
    if (!Object.is(marked, field)) {
      copy ??= { ...value };
      copy[key] = marked;
    }
  }
  return copy ?? value;
}

/** Every SQL value exactly as given, -0 included. */
export function encodeMessage(message: unknown): Uint8Array {
  return packr.pack(markNegativeZeros(message));
}

/** What {@link encodeMessage} wrote and this node kept (no validation: it is trusted). */
export function decodeStored(bytes: Uint8Array): unknown {
  return packr.unpack(bytes);
}

function decodeMessage(bytes: Uint8Array, what: string): unknown {
  try {
    return packr.unpack(bytes);
  } catch (cause) {
    throw new BadRequestError(`${what} is not valid msgpack`, { cause });
  }
}

export function decodeForwardRequest(bytes: Uint8Array): ForwardRequest {
  const body = decodeMessage(bytes, 'forward request');
  if (!isObject(body)) throw new BadRequestError('forward request must be a map');
  const { v, db, requestId, op, statements, durability, bigints } = body;
  if (v !== PROTOCOL_VERSION)
    throw new BadRequestError(`unsupported protocol version ${String(v)}`);
  if (typeof db !== 'string' || db.length === 0) throw new BadRequestError('db must be a name');
  if (typeof requestId !== 'string' || requestId.length === 0 || requestId.length > 200)
    throw new BadRequestError('requestId must be a string of 1..200 characters');
  if (op !== 'write' && op !== 'read' && op !== 'schema' && op !== 'migrate')
    throw new BadRequestError('op must be write, read, schema or migrate');
  if (durability !== 'async' && durability !== 'replicated')
    throw new BadRequestError('durability must be async or replicated');
  if (typeof bigints !== 'boolean') throw new BadRequestError('bigints must be a boolean');
  if (!Array.isArray(statements) || statements.length === 0)
    throw new BadRequestError('statements must be a non-empty array');
  const checked = statements.map((statement, index) => checkStatement(statement, index));
  if ((op === 'schema' || op === 'migrate') && checked.some((s) => s.params !== undefined))
    throw new BadRequestError(`${op} scripts take no params`);
  return { v, db, requestId, op, durability, bigints, statements: checked };
}

function checkStatement(statement: unknown, index: number): Statement {
  if (!isObject(statement) || typeof statement.sql !== 'string')
    throw new BadRequestError(`statements[${index}] must have an sql string`);
  const { sql, params } = statement;
  if (params === undefined || params === null) return { sql };
  if (Array.isArray(params)) {
    for (const [at, value] of params.entries()) {
      checkValue(value, `statements[${index}].params[${at}]`);
    }
    return { sql, params };
  }
  if (!isObject(params))
    throw new BadRequestError(`statements[${index}].params must be an array or a map`);
  for (const [name, value] of Object.entries(params))
    checkValue(value, `statements[${index}].params.${name}`);
  return { sql, params: params as Record<string, SqlValue> };
}

/** A value SQLite binds and returns: null, a number, a bigint, a string or a Uint8Array. */
export function isSqlValue(value: unknown): value is SqlValue {
  return (
    value === null ||
    typeof value === 'number' ||
    typeof value === 'bigint' ||
    typeof value === 'string' ||
    value instanceof Uint8Array
  );
}

function checkValue(value: unknown, where: string): void {
  if (!isSqlValue(value)) throw new BadRequestError(`${where} is not an SQL value`);
}

export function decodeForwardResponse(bytes: Uint8Array): ForwardResponse {
  const body = decodeMessage(bytes, 'forward response');
  if (!isObject(body) || typeof body.ok !== 'boolean')
    throw new BadRequestError('forward response must be a map with ok');
  if (body.ok) {
    if (!Array.isArray(body.results) || !isToken(body.token))
      throw new BadRequestError('forward response lacks results or token');
    return body as unknown as ForwardResponse;
  }
  if (typeof body.code !== 'string' || typeof body.message !== 'string')
    throw new BadRequestError('forward error response lacks code or message');
  return body as unknown as ForwardResponse;
}

export interface NodeTailChange extends TailResponse {
  db: string;
}

export interface NodeTailResponse {
  /** The answering node's incarnation: a new one restarts the cursor. */
  session: string;
  /** Pass it back as `after` to hear only of later changes. */
  cursor: number;
  changes: NodeTailChange[];
}

export function decodeNodeTailResponse(bytes: Uint8Array): NodeTailResponse {
  const body = decodeMessage(bytes, 'node tail response');
  if (
    !isObject(body) ||
    typeof body.session !== 'string' ||
    !Number.isSafeInteger(body.cursor) ||
    !Array.isArray(body.changes)
  ) {
    throw new BadRequestError('node tail response must carry session, cursor and changes');
  }
  const changes = body.changes.map((change: unknown): NodeTailChange => {
    const fields = isObject(change) ? change : {};
    const { db, epoch, seq, leading } = fields;
    if (!isToken(change) || typeof leading !== 'boolean' || typeof db !== 'string')
      throw new BadRequestError('each node tail change must carry db, epoch, seq and leading');
    return { db, epoch: epoch as number, seq: seq as number, leading };
  });
  return { session: body.session, cursor: body.cursor as number, changes };
}

export function decodeTailResponse(bytes: Uint8Array): TailResponse {
  const body = decodeMessage(bytes, 'tail response');
  if (!isToken(body) || !isObject(body) || typeof body.leading !== 'boolean')
    throw new BadRequestError('tail response must carry epoch, seq and leading');
  return { epoch: body.epoch, seq: body.seq, leading: body.leading };
}

function isToken(value: unknown): value is WriteToken {
  return isObject(value) && Number.isSafeInteger(value.epoch) && Number.isSafeInteger(value.seq);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
