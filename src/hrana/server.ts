import http from 'node:http';
import type { Logger } from 'pino';
import type { HadbDatabase } from '../api-types.ts';
import { HRANA_STREAM_IDLE_MS } from '../defaults.ts';
import { messageOf } from '../error-message.ts';
import { HranaRequestError, InvalidArgumentError } from '../errors.ts';
import {
  authorized,
  close,
  digest,
  listen,
  type RouteHandler,
  readBody,
} from '../http/listener.ts';
import { secretLengthProblem } from '../http/secrets.ts';
import { defaultLogger } from '../log.ts';
import { FAILED_STATUS } from '../wire/node-protocol.ts';
import { needsLeader } from './batch.ts';
import {
  type Answer,
  checkPipeline,
  failure,
  hideAddresses,
  isObject,
  type PipelineBody,
  problem,
  toJson,
} from './codec.ts';
import { hranaRelay } from './relay.ts';
import { streamRequest } from './requests.ts';
import { assertServableDbName, hranaRoute } from './routes.ts';
import {
  batonSigner,
  MAX_STREAMS_PER_CLIENT,
  newStream,
  type Stream,
  StreamTable,
} from './streams.ts';

/**
 * Hrana over HTTP (JSON, versions 2 and 3: the pipeline bodies are the same), so that libSQL
 * clients (`@libsql/client` with an http:// URL) can talk to a hadb node. Each database is served
 * under its name (`/orders/v3/pipeline`; a node serving one database also at `/`, see
 * routes.ts). A batch is applied atomically on
 * the leader (forwarded from a follower). An interactive transaction (BEGIN in one request,
 * COMMIT in a later one) runs on the leader, on its own connection holding the writer: a
 * follower relays such a stream to the leader, and the baton says which node holds the stream.
 *
 * This file is the HTTP handling and the pipeline that composes the rest: codec.ts (the JSON
 * encoding and Hrana's error codes), streams.ts (batons, idle streams, limits), requests.ts and
 * batch.ts (running a stream's requests), atomic.ts (atomic runs), relay.ts (the relay between
 * nodes).
 */

const MAX_BODY_BYTES = 16 * 1024 * 1024;

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
  /** For the node's listener at RELAY_PATH (wire/node-protocol.ts): runs streams other nodes relay here. */
  readonly relay: RouteHandler;
  close(): Promise<void>;
}

export async function startHranaServer(options: HranaServerOptions): Promise<HranaServer> {
  const tokenProblem =
    options.authToken === null ? null : secretLengthProblem('authToken', options.authToken);
  if (tokenProblem) throw new InvalidArgumentError(tokenProblem);
  const expected = options.authToken === null ? null : digest(`Bearer ${options.authToken}`);
  const maxPerClient = options.maxStreamsPerClient ?? MAX_STREAMS_PER_CLIENT;
  const idleMs = options.streamIdleMs ?? HRANA_STREAM_IDLE_MS;
  const streams = new StreamTable(idleMs, maxPerClient);
  const servedNames = [...options.databases.keys()];
  for (const name of servedNames) assertServableDbName(name);
  const batons = batonSigner(options.secret);
  const relay = hranaRelay(options, pipeline);

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
    const hidden = hideAddresses(body);
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
        return relay.held(holder, name, body, client);
      }
      const found = streams.take(body.baton, name);
      if (!found) {
        return problem(
          'STREAM_EXPIRED',
          `the stream expired (idle for more than ${idleMs} ms, or its node restarted); an ` +
            'open transaction on it was rolled back',
        );
      }
      stream = found;
    } else {
      stream = newStream(name, relayed ?? [], client);
    }
    if (stream.tx === null && db.role !== 'leader' && needsLeader(stream.sqls, body.requests)) {
      if (relayed) return problem('NOT_LEADER', `this node does not lead ${name}`);
      // The stream moves to the leader with its stored SQL; its baton here is dropped.
      streams.forget(stream);
      return relay.fresh(db, stream, body);
    }
    const closes = body.requests.some((request) => isObject(request) && request.type === 'close');
    if (!closes && streams.full) {
      // Refused before anything runs; the stream, if it was one, stays as it was.
      if (body.baton !== null) streams.park(body.baton, stream);
      return problem('OVERLOADED', 'too many open streams');
    }
    if (!closes && streams.overClientCap(stream)) {
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
      streams.forget(stream);
    } else {
      baton = batons.issue(options.self);
      streams.park(baton, stream);
    }
    return { status: 200, body: { baton, base_url: null, results } };
  }

  const address = await listen(server, options.host, options.port);
  return {
    address,
    relay: relay.route,
    close: () => {
      streams.close();
      relay.close();
      return close(server);
    },
  };
}

function reply(response: http.ServerResponse, status: number, body: unknown): void {
  const bytes = Buffer.from(toJson(body));
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': bytes.length,
  });
  response.end(bytes);
}
