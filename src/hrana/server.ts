import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { Logger } from 'pino';
import type {
  HadbDatabase,
  IsolatedTransaction,
  Row,
  SqlValue,
  Statement,
  StatementResult,
  WriteToken,
} from '../api-types.ts';
import { HRANA_STREAM_IDLE_MS } from '../defaults.ts';
import { messageOf } from '../error-message.ts';
import {
  AtomicRunFailedError,
  BadRequestError,
  HadbError,
  type HadbErrorCode,
  HranaRequestError,
  httpStatusOf,
  InvalidArgumentError,
  LimitExceededError,
  SqlError,
  withoutCode,
} from '../errors.ts';
import {
  authorized,
  close,
  digest,
  type HttpAnswer,
  listen,
  type RouteHandler,
  readBody,
} from '../http/listener.ts';
import { NodeClient } from '../http/node-client.ts';
import { secretLengthProblem } from '../http/secrets.ts';
import { defaultLogger } from '../log.ts';
import { checkClientSql, splitSql } from '../statements/statement-gate.ts';
import { withoutAddresses } from '../wire/client-errors.ts';
import { FAILED_STATUS, RELAY_PATH } from '../wire/node-protocol.ts';
import { assertServableDbName, hranaRoute } from './routes.ts';

/**
 * Hrana over HTTP (JSON, versions 2 and 3: the pipeline bodies are the same), so that libSQL
 * clients (`@libsql/client` with an http:// URL) can talk to a hadb node. Each database is served
 * under its name (`/orders/v3/pipeline`; a node serving one database also at `/`, see
 * hrana-routes.ts). A batch is applied atomically on
 * the leader (forwarded from a follower). An interactive transaction (BEGIN in one request,
 * COMMIT in a later one) runs on the leader, on its own connection holding the writer: a
 * follower relays such a stream to the leader, and the baton says which node holds the stream.
 */

const MAX_BODY_BYTES = 16 * 1024 * 1024;
const MAX_STREAMS = 10_000;
/**
 * Streams one client may hold open at once. A client is its remote address: every client shares
 * the one auth token, so a cap per token would only be the node-wide one.
 */
export const MAX_STREAMS_PER_CLIENT = 100;
/** SQL texts one stream may store (`store_sql`), by count and by their total UTF-8 bytes. */
export const MAX_STORED_SQL_COUNT = 100;
export const MAX_STORED_SQL_BYTES = 1024 * 1024;
/** How long a relay waits for a leader to appear, and for the leader to answer. */
const RELAY_FIND_LEADER_MS = 10_000;
const RELAY_TIMEOUT_MS = 40_000;
/** What SQLite says about RAISE outside a trigger: the marker that ends a probe batch. */
const PROBE_SQL = "select raise(abort, 'hadb probe')";
const PROBE_MESSAGE = 'RAISE() may only be used within a trigger-program';

export interface HranaServerOptions {
  host: string;
  port: number;
  /** Served at `/<name>/`; when there is only one, also at `/`. Names like `v3` are refused. */
  databases: ReadonlyMap<string, HadbDatabase>;
  /** Clients must send `Authorization: Bearer <authToken>` (16 characters at least); null: no authentication. */
  authToken: string | null;
  /** The cluster secret: signs batons and authenticates relays to the leader. */
  secret: string;
  /** This node's peer address, where other nodes relay streams it holds. */
  self: string;
  /** Where the leader of `db` takes relayed streams, as far as this node knows. */
  leaderAddress(db: string): string | null;
  /** Idle time after which a stream is dropped and its transaction rolled back (default 10 s). */
  streamIdleMs?: number;
  /** Open streams per client address (default {@link MAX_STREAMS_PER_CLIENT}). */
  maxStreamsPerClient?: number;
  /** Where the addresses hidden from client error messages are logged (default: stderr, warn). */
  logger?: Logger;
}

export interface HranaServer {
  /** `http://host:port`, with the port actually bound. */
  readonly address: string;
  /** For the node's listener at {@link RELAY_PATH}: runs streams other nodes relay here. */
  readonly relay: RouteHandler;
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

// ---- server ------------------------------------------------------------------------------------

interface Stream {
  db: string;
  sqls: Map<number, string>;
  /** UTF-8 bytes of `sqls`. */
  sqlBytes: number;
  /** Who opened it (a remote address), for the cap per client; counted while it is held here. */
  client: string;
  counted: boolean;
  /** The open interactive transaction (only ever on the leader), or a dead one not yet ended. */
  tx: IsolatedTransaction | null;
  timer: NodeJS.Timeout | undefined;
}

interface Answer {
  status: number;
  body: unknown;
}

interface PipelineBody {
  baton: string | null;
  requests: unknown[];
}

export async function startHranaServer(options: HranaServerOptions): Promise<HranaServer> {
  const tokenProblem =
    options.authToken === null ? null : secretLengthProblem('authToken', options.authToken);
  if (tokenProblem) throw new InvalidArgumentError(tokenProblem);
  const expected = options.authToken === null ? null : digest(`Bearer ${options.authToken}`);
  const streams = new Map<string, Stream>();
  const streamsOf = new Map<string, number>();
  const maxPerClient = options.maxStreamsPerClient ?? MAX_STREAMS_PER_CLIENT;
  const idleMs = options.streamIdleMs ?? HRANA_STREAM_IDLE_MS;
  const servedNames = [...options.databases.keys()];
  for (const name of servedNames) assertServableDbName(name);
  const peers = new NodeClient(options.secret);
  const batons = batonSigner(options.secret);

  // Made when first needed: most servers never hide an address.
  let logger = options.logger;
  const server = http.createServer((request, response) => {
    handle(request).then(
      (answer) => reply(response, answer.status, forClient(answer.body)),
      (error: unknown) => {
        const message = messageOf(error);
        if (!response.headersSent) {
          reply(response, FAILED_STATUS, forClient({ message, code: 'INTERNAL' }));
        } else response.destroy();
      },
    );
  });

  /** The answer with the addresses in its error messages hidden; the full ones are logged here. */
  function forClient(body: unknown): unknown {
    const hidden: string[] = [];
    const scrub = (holder: unknown) => {
      if (!isObject(holder) || typeof holder.message !== 'string') return;
      const message = withoutAddresses(holder.message);
      if (message === holder.message) return;
      hidden.push(holder.message);
      holder.message = message;
    };
    if (!isObject(body)) return body;
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
    if (hidden.length > 0) {
      logger ??= defaultLogger();
      logger.warn({ errors: hidden }, 'Hrana error sent without its addresses');
    }
    return body;
  }
  server.keepAliveTimeout = 60_000;

  async function handle(request: http.IncomingMessage): Promise<Answer> {
    if (expected !== null && !authorized(request.headers.authorization, expected)) {
      request.resume();
      return problem('UNAUTHORIZED', 'missing or wrong auth token');
    }
    const route = hranaRoute(request.url ?? '/', servedNames);
    if (!route.found) {
      request.resume();
      return problem(route.code, route.message);
    }
    const db = route.db;
    if (!route.pipeline) {
      request.resume();
      return request.method === 'GET'
        ? { status: 200, body: { ok: true } }
        : problem('METHOD_NOT_ALLOWED', 'use GET');
    }
    if (request.method !== 'POST') {
      request.resume();
      return problem('METHOD_NOT_ALLOWED', 'use POST');
    }
    let body: unknown;
    try {
      body = JSON.parse((await readBody(request, MAX_BODY_BYTES)).toString('utf8'));
    } catch (error) {
      return problem('BAD_REQUEST', `bad pipeline body: ${messageOf(error)}`);
    }
    const pipelineBody = checkPipeline(body);
    if (typeof pipelineBody === 'string') return problem('BAD_REQUEST', pipelineBody);
    return pipeline(db, pipelineBody, null, request.socket.remoteAddress ?? 'unknown');
  }

  /**
   * `relayed`: the stored SQL texts of a stream a follower hands over; null from a client.
   * `client`: the address of the client, as the node it connected to saw it.
   */
  async function pipeline(
    name: string,
    body: PipelineBody,
    relayed: [number, string][] | null,
    client: string,
  ): Promise<Answer> {
    const db = options.databases.get(name);
    if (!db) return problem('UNKNOWN_DATABASE', `no database ${JSON.stringify(name)} here`);
    let stream: Stream;
    if (body.baton !== null) {
      const holder = batons.holder(body.baton);
      if (holder === null) return problem('STREAM_EXPIRED', 'the baton is not one of ours');
      if (holder !== options.self) {
        if (relayed) return problem('STREAM_EXPIRED', 'this node does not hold the stream');
        return relayHeld(holder, name, body, client);
      }
      const found = streams.get(body.baton);
      if (!found || found.db !== name) {
        return problem(
          'STREAM_EXPIRED',
          `the stream expired (idle for more than ${idleMs} ms, or its node restarted); an ` +
            'open transaction on it was rolled back',
        );
      }
      streams.delete(body.baton);
      clearTimeout(found.timer);
      stream = found;
    } else {
      const sqls = new Map(relayed ?? []);
      let sqlBytes = 0;
      for (const sql of sqls.values()) sqlBytes += Buffer.byteLength(sql);
      stream = { db: name, sqls, sqlBytes, client, counted: false, tx: null, timer: undefined };
    }
    if (stream.tx === null && db.role !== 'leader' && needsLeader(stream, body.requests)) {
      if (relayed) return problem('NOT_LEADER', `this node does not lead ${name}`);
      // The stream moves to the leader with its stored SQL; its baton here is dropped.
      forget(stream);
      return relayFresh(db, stream, body);
    }
    const closes = body.requests.some((request) => isObject(request) && request.type === 'close');
    if (!closes && streams.size >= MAX_STREAMS) {
      // Refused before anything runs; the stream, if it was one, stays as it was.
      if (body.baton !== null) park(body.baton, stream);
      return problem('OVERLOADED', 'too many open streams');
    }
    if (!closes && !stream.counted && (streamsOf.get(stream.client) ?? 0) >= maxPerClient) {
      return problem(
        'LIMIT_EXCEEDED',
        `this client already holds ${maxPerClient} open streams (transactions); end one first`,
      );
    }
    const results: unknown[] = [];
    let closed = false;
    for (const request of body.requests) {
      if (closed) {
        results.push(failure(new HranaRequestError('STREAM_CLOSED', 'the stream is closed')));
        continue;
      }
      try {
        const response = await streamRequest(db, stream, request);
        if (response.type === 'close') closed = true;
        results.push({ type: 'ok', response });
      } catch (error) {
        results.push(failure(error));
      }
    }
    let baton: string | null = null;
    if (closed) {
      await stream.tx?.abort('the stream was closed');
      forget(stream);
    } else {
      baton = batons.issue(options.self);
      park(baton, stream);
    }
    return { status: 200, body: { baton, base_url: null, results } };
  }

  /** Keeps the stream for its next request, until it is idle too long. */
  function park(baton: string, stream: Stream): void {
    stream.timer = setTimeout(() => {
      streams.delete(baton);
      forget(stream);
      void stream.tx?.abort(`the stream was idle for ${idleMs} ms`);
    }, idleMs);
    stream.timer.unref();
    streams.set(baton, stream);
    if (!stream.counted) {
      stream.counted = true;
      streamsOf.set(stream.client, (streamsOf.get(stream.client) ?? 0) + 1);
    }
  }

  /** The stream is no longer held here: it no longer counts against its client. */
  function forget(stream: Stream): void {
    if (!stream.counted) return;
    stream.counted = false;
    const left = (streamsOf.get(stream.client) ?? 1) - 1;
    if (left > 0) streamsOf.set(stream.client, left);
    else streamsOf.delete(stream.client);
  }

  /** A stream another node holds (the leader, for a transaction): the request goes there. */
  async function relayHeld(
    holder: string,
    name: string,
    body: PipelineBody,
    client: string,
  ): Promise<Answer> {
    try {
      return await relayTo(holder, { db: name, sqls: [], client, ...body });
    } catch (error) {
      return problem(
        'STREAM_EXPIRED',
        `the node that held this stream (${holder}) did not answer (${messageOf(error)}): it may ` +
          'have stopped or lost the lead. A transaction open there was rolled back (a COMMIT ' +
          'in this very request may or may not have been applied); start again',
      );
    }
  }

  /** A stream that needs the leader starts there: waits (bounded) for one to be known. */
  async function relayFresh(db: HadbDatabase, stream: Stream, body: PipelineBody): Promise<Answer> {
    const deadline = Date.now() + RELAY_FIND_LEADER_MS;
    let last = 'no leader is known';
    for (;;) {
      if (db.role === 'leader') return pipeline(db.name, body, [...stream.sqls], stream.client);
      const address = options.leaderAddress(db.name);
      if (address !== null && address !== options.self) {
        try {
          const answer = await relayTo(address, {
            db: db.name,
            sqls: [...stream.sqls],
            client: stream.client,
            baton: null,
            requests: body.requests,
          });
          // It no longer leads, or it is starting (or full): either way, try again.
          if (
            answer.status !== hranaStatus('NOT_LEADER') &&
            answer.status !== hranaStatus('OVERLOADED')
          )
            return answer;
          last = `${address} answered ${answer.status}`;
        } catch (error) {
          last = `${address}: ${messageOf(error)}`;
        }
      }
      if (Date.now() >= deadline) {
        return problem('LEADER_UNAVAILABLE', `${db.name}: no leader to run the stream (${last})`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function relayTo(
    address: string,
    message: {
      db: string;
      sqls: [number, string][];
      client: string;
      baton: string | null;
      requests: unknown[];
    },
  ): Promise<Answer> {
    const { status, body } = await peers.request(
      'POST',
      `${address}${RELAY_PATH}`,
      Buffer.from(toJson(message)),
      RELAY_TIMEOUT_MS,
    );
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new BadRequestError(
        `answered ${status} without JSON: ${body.toString('utf8').slice(0, 200)}`,
      );
    }
    const db = options.databases.get(message.db);
    if (isObject(parsed) && isToken(parsed.hadb_position)) {
      const { hadb_position: position, ...rest } = parsed;
      if (db) noteWrite(db, position);
      parsed = rest;
    }
    return { status, body: parsed };
  }

  const relay: RouteHandler = async ({ body }): Promise<HttpAnswer> => {
    let answer: Answer;
    let message: unknown;
    try {
      message = JSON.parse(Buffer.from(body).toString('utf8'));
    } catch (error) {
      message = messageOf(error);
    }
    const checked = checkPipeline(message);
    if (!isObject(message) || typeof message.db !== 'string' || typeof checked === 'string') {
      answer = problem('BAD_REQUEST', 'bad relayed pipeline');
    } else {
      const sqls = Array.isArray(message.sqls)
        ? (message.sqls as unknown[]).filter(
            (entry): entry is [number, string] =>
              Array.isArray(entry) && typeof entry[0] === 'number' && typeof entry[1] === 'string',
          )
        : [];
      // The relaying node is trusted (cluster secret) to name the client it relays for.
      const client = typeof message.client === 'string' ? message.client : 'relayed';
      answer = await pipeline(message.db, checked, sqls, client);
      // What the stream committed here: the relaying node's reads wait for it.
      const db = options.databases.get(message.db);
      if (db && answer.status === 200 && isObject(answer.body)) {
        answer = { status: 200, body: { ...answer.body, hadb_position: db.position } };
      }
    }
    return {
      status: answer.status,
      body: toJson(answer.body),
      contentType: 'application/json',
    };
  };

  const address = await listen(server, options.host, options.port);
  return {
    address,
    relay,
    close: () => {
      for (const stream of streams.values()) {
        clearTimeout(stream.timer);
        void stream.tx?.abort('the server is closing');
      }
      streams.clear();
      streamsOf.clear();
      peers.close();
      return close(server);
    },
  };
}

function checkPipeline(body: unknown): PipelineBody | string {
  if (!isObject(body) || !Array.isArray(body.requests)) return 'requests must be an array';
  if (body.baton !== null && body.baton !== undefined && typeof body.baton !== 'string') {
    return 'baton must be a string or null';
  }
  return { baton: (body.baton as string | null | undefined) ?? null, requests: body.requests };
}

/**
 * Batons name the node that holds the stream (its peer address), signed with the cluster secret
 * so that a node relays only to addresses the cluster itself put in a baton.
 */
function batonSigner(secret: string) {
  const sign = (text: string) =>
    createHmac('sha256', secret).update(text).digest('base64url').slice(0, 32);
  return {
    issue(holder: string): string {
      const text = `${randomBytes(18).toString('base64url')}.${Buffer.from(holder).toString('base64url')}`;
      return `${text}.${sign(text)}`;
    },
    holder(baton: string): string | null {
      const parts = baton.split('.');
      if (parts.length !== 3) return null;
      const text = `${parts[0]}.${parts[1]}`;
      const given = Buffer.from(parts[2] as string);
      const wanted = Buffer.from(sign(text));
      if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return null;
      return Buffer.from(parts[1] as string, 'base64url').toString('utf8');
    },
  };
}

/** The codes of Hrana's own that answer a whole request, beside hadb's, and their statuses. */
const HRANA_STATUSES = {
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  STREAM_EXPIRED: 400,
  OVERLOADED: 503,
} as const;
type ProblemCode = keyof typeof HRANA_STATUSES | HadbErrorCode;

/** The status of a whole-request error answer: a Hrana code's own, a hadb code's from the table. */
function hranaStatus(code: ProblemCode): number {
  return code in HRANA_STATUSES
    ? HRANA_STATUSES[code as keyof typeof HRANA_STATUSES]
    : httpStatusOf(code as HadbErrorCode);
}

function problem(code: ProblemCode, message: string): Answer {
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
function toJson(body: unknown): string {
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

function reply(response: http.ServerResponse, status: number, body: unknown): void {
  const bytes = Buffer.from(toJson(body));
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

// ---- which streams need the leader -------------------------------------------------------------

/**
 * Whether the requests leave a transaction open (or roll one back after statements in it), which
 * only a connection on the leader can do. Stored SQL is followed as the requests would store it.
 */
function needsLeader(stream: Stream, requests: unknown[]): boolean {
  const sqls = new Map(stream.sqls);
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
function batchNeedsSession(steps: { sql: string | null; condition: unknown }[]): boolean {
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

function sequenceNeedsSession(texts: string[]): boolean {
  let open = false;
  for (const text of texts) {
    const kind = controlKind(text)?.kind;
    if (kind === 'begin') open = true;
    else if (kind === 'commit') open = false;
    else if (kind === 'rollback') return true;
  }
  return open;
}

// ---- stream requests ---------------------------------------------------------------------------

/**
 * The statement gate, before a request runs anything (each statement is checked again where it
 * runs). BEGIN, COMMIT and ROLLBACK as Hrana recognises them are the stream's own; savepoints
 * are judged where they run, inside the stream's transaction or not.
 */
function gateStatement(sql: string): void {
  if (controlKind(sql) === null) checkClientSql(sql, 'interactive');
}

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
        sql: isObject(step) && isObject(step.stmt) ? sqlOf(stream, step.stmt) : null,
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
      const texts = splitStatements(sqlOf(stream, request));
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
      if (stream.sqls.has(request.sql_id)) {
        throw new HranaRequestError('SQL_ID_IN_USE', `sql_id ${request.sql_id} is already in use`);
      }
      if (stream.sqls.size >= MAX_STORED_SQL_COUNT) {
        throw new LimitExceededError(
          `a stream stores at most ${MAX_STORED_SQL_COUNT} SQL texts; close_sql one first`,
        );
      }
      const bytes = Buffer.byteLength(request.sql);
      if (stream.sqlBytes + bytes > MAX_STORED_SQL_BYTES) {
        throw new LimitExceededError(
          `a stream stores at most ${MAX_STORED_SQL_BYTES} bytes of SQL text (${stream.sqlBytes} ` +
            `stored, ${bytes} more asked); close_sql some, or send the SQL with the statement`,
        );
      }
      stream.sqls.set(request.sql_id, request.sql);
      stream.sqlBytes += bytes;
      return { type: 'store_sql' };
    }
    case 'close_sql': {
      const stored =
        typeof request.sql_id === 'number' ? stream.sqls.get(request.sql_id) : undefined;
      if (stored !== undefined) {
        stream.sqls.delete(request.sql_id as number);
        stream.sqlBytes -= Buffer.byteLength(stored);
      }
      return { type: 'close_sql' };
    }
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
      const statement = toStatement(stream, step.stmt);
      results[j] = await executeOnStream(db, stream, statement, wantRows(step.stmt));
      outcomes[j] = 'ok';
    } catch (error) {
      outcomes[j] = 'error';
      errors[j] = toHranaError(error);
    }
  }
  return { step_results: results, step_errors: errors };
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

/**
 * Runs the statements as one transaction. Reads are served from the local copy (after this
 * node's last write, so a client sees what it wrote through this node); anything else goes to
 * the leader as one batch.
 */
async function runAtomic(
  db: HadbDatabase,
  statements: Statement[],
  wants: boolean[],
  readOnly = false,
): Promise<StmtResult[]> {
  if (readOnly) return readOnlyRun(db, statements, wants);
  const local = await tryLocalReads(db, statements);
  if (local)
    return local.map((rows, i) =>
      toStmtResult({ changes: 0, lastInsertRowid: 0, rows }, wants[i] ?? true),
    );
  try {
    const { results, token } = await db.batch(statements, { bigints: true, isolated: true });
    noteWrite(db, token);
    return results.map((result, i) => toStmtResult(result, wants[i] ?? true));
  } catch (error) {
    if (!(error instanceof SqlError)) throw error;
    if (statements.length === 1) throw new AtomicRunFailedError(0, error);
    throw await locateFailure(db, statements, error);
  }
}

/** A read-only transaction's statements: read here, and a statement that would write fails. */
async function readOnlyRun(
  db: HadbDatabase,
  statements: Statement[],
  wants: boolean[],
): Promise<StmtResult[]> {
  const results: StmtResult[] = [];
  for (const [i, statement] of statements.entries()) {
    try {
      const rows = await db.all(statement.sql, statement.params, {
        consistency: 'read-your-writes',
        ...afterWrites(db),
        bigints: true,
        isolated: true,
      });
      results.push(toStmtResult({ changes: 0, lastInsertRowid: 0, rows }, wants[i] ?? true));
    } catch (error) {
      throw new AtomicRunFailedError(i, error);
    }
  }
  return results;
}

/**
 * The newest write made through this server (forwarded, or committed on the leader by a relayed
 * stream), per database: reads here wait for it, so a client reads what it wrote.
 */
const lastWrites = new WeakMap<HadbDatabase, WriteToken>();

function noteWrite(db: HadbDatabase, token: WriteToken): void {
  const last = lastWrites.get(db);
  if (!last || token.seq > last.seq) lastWrites.set(db, token);
}

function afterWrites(db: HadbDatabase): { after?: WriteToken } {
  const last = lastWrites.get(db);
  return last ? { after: last } : {};
}

async function tryLocalReads(db: HadbDatabase, statements: Statement[]): Promise<Row[][] | null> {
  // Reads run in a statement process: a plain write would only make the trip to be refused there.
  if (statements.some((statement) => isPlainWrite(statement.sql))) return null;
  const rows: Row[][] = [];
  for (const statement of statements) {
    try {
      rows.push(
        await db.all(statement.sql, statement.params, {
          consistency: 'read-your-writes',
          ...afterWrites(db),
          bigints: true,
          isolated: true,
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

const WRITE_KEYWORD = /^(?:insert|update|delete|replace|create|drop|alter)\b/i;

/** Starts (after blanks and comments) with a keyword no read-only statement starts with. */
function isPlainWrite(whole: string): boolean {
  // Only a shortcut: past a few KiB of comments the statement process decides.
  const sql = whole.slice(0, 4096);
  let i = 0;
  for (;;) {
    // SQLite's blanks: space, tab, newline, form feed, carriage return.
    for (let c = sql.charCodeAt(i); c === 32 || (c >= 9 && c <= 13); c = sql.charCodeAt(++i));
    if (sql.startsWith('--', i)) {
      const end = sql.indexOf('\n', i);
      if (end < 0) return false;
      i = end + 1;
    } else if (sql.startsWith('/*', i)) {
      const end = sql.indexOf('*/', i + 2);
      if (end < 0) return false;
      i = end + 2;
    } else {
      return WRITE_KEYWORD.test(sql.slice(i, i + 8));
    }
  }
}

/**
 * Which statement of a failed batch SQLite refused: prefixes are re-run on the leader ending
 * with a statement that always fails, so each probe is rolled back and nothing is applied.
 */
async function locateFailure(
  db: HadbDatabase,
  statements: Statement[],
  error: SqlError,
): Promise<AtomicRunFailedError> {
  let lo = 0;
  let hi = statements.length - 1;
  let found: unknown = error;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    try {
      await db.batch([...statements.slice(0, mid + 1), { sql: PROBE_SQL }], {
        bigints: true,
        isolated: true,
      });
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
  return new AtomicRunFailedError(lo, found);
}

// ---- batches -----------------------------------------------------------------------------------

interface Control {
  kind: 'begin' | 'commit' | 'rollback';
  /** `BEGIN TRANSACTION READONLY`, which @libsql/client sends for `transaction('read')`. */
  readOnly: boolean;
}
type Outcome = 'ok' | 'error' | 'skipped';
type TxState = 'none' | 'open' | 'failed';

/**
 * After a failed step the rest of an atomic batch is planned again; a plan that would then leave a
 * transaction open (which the first plan did not) is refused rather than half applied.
 */
const BATCH_TX_REPLANNED =
  'after the failed step this batch would leave a transaction open; send BEGIN on its own';

function controlKind(sql: string): Control | null {
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

// ---- sequences ---------------------------------------------------------------------------------

/**
 * Splits SQL text at the semicolons that end statements: not those in quotes, comments or the
 * body of a CREATE TRIGGER (which ends with END).
 */
export function splitStatements(sql: string): string[] {
  return splitSql(sql);
}

function isToken(value: unknown): value is WriteToken {
  return isObject(value) && Number.isSafeInteger(value.epoch) && Number.isSafeInteger(value.seq);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
