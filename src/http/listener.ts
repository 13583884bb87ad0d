import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { messageOf } from '../error-message.ts';
import { BadRequestError, httpStatusOf } from '../errors.ts';
import { MAX_REQUEST_BYTES, MSGPACK } from '../wire/forward.ts';
import { thrownErrorStatus } from '../wire/node-protocol.ts';

/** One route of the node's listener: gets the authenticated request's body, returns the answer. */
export type RouteHandler = (request: {
  url: URL;
  body: Uint8Array;
  signal: AbortSignal;
}) => Promise<HttpAnswer>;

export interface HttpAnswer {
  status: number;
  body: Uint8Array | string;
  contentType?: string;
}

export interface NodeListenerOptions {
  host: string;
  port: number;
  /** Required on every route marked `authenticated`. */
  secret: string;
  routes: Record<string, { method: 'GET' | 'POST'; authenticated: boolean; handle: RouteHandler }>;
}

export interface NodeListener {
  /** `http://host:port`, with the port actually bound. */
  readonly address: string;
  close(): Promise<void>;
}

const NO_BODY = new Uint8Array(0);

/** Starts the node's HTTP listener. Unauthenticated requests get 401 before their body is read. */
export async function startNodeListener(options: NodeListenerOptions): Promise<NodeListener> {
  const expected = digest(`Bearer ${options.secret}`);
  const server = http.createServer((request, response) => {
    const abort = new AbortController();
    response.on('close', () => abort.abort());
    serve(request, response, abort.signal).catch((error: unknown) => {
      if (!response.headersSent) reply(response, answerForError(error));
      else response.destroy();
    });
  });
  server.keepAliveTimeout = 60_000;

  async function serve(
    request: http.IncomingMessage,
    response: http.ServerResponse,
    signal: AbortSignal,
  ): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://node');
    const route = options.routes[url.pathname];
    if (!route) return reply(response, { status: 404, body: 'no such route' });
    if (route.authenticated && !authorized(request.headers.authorization, expected)) {
      request.resume();
      return reply(response, {
        status: httpStatusOf('UNAUTHORIZED'),
        body: 'the cluster secret is missing or wrong',
      });
    }
    if (request.method !== route.method) {
      request.resume();
      return reply(response, { status: 405, body: `use ${route.method}` });
    }
    // A route open to anyone takes no body: nothing an unauthenticated client sends is read
    // (Node closes the connection after the answer when a body was left unread).
    const body = route.authenticated ? await readBody(request) : NO_BODY;
    reply(response, await route.handle({ url, body, signal }));
  }

  return { address: await listen(server, options.host, options.port), close: () => close(server) };
}

/** Binds `server`; resolves with `http://host:port`, the port actually bound. */
export async function listen(server: http.Server, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  return `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
}

/** Stops accepting and drops open (keep-alive) connections. */
export function close(server: http.Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** Whether an Authorization header matches; `expected` is {@link digest} of the right one. */
export function authorized(header: string | undefined, expected: Buffer): boolean {
  // Digests have equal length whatever was sent, so the comparison is constant-time.
  return header !== undefined && timingSafeEqual(digest(header), expected);
}

export function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** The whole body, refused with {@link BadRequestError} past `maxBytes` (declared or sent). */
export async function readBody(
  request: http.IncomingMessage,
  maxBytes = MAX_REQUEST_BYTES,
): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > maxBytes) {
    request.resume();
    throw new BadRequestError(`request body of ${declared} bytes exceeds ${maxBytes}`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of request) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) throw new BadRequestError(`request body exceeds ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function answerForError(error: unknown): HttpAnswer {
  return { status: thrownErrorStatus(error), body: messageOf(error) };
}

function reply(response: http.ServerResponse, answer: HttpAnswer): void {
  const body = typeof answer.body === 'string' ? Buffer.from(answer.body) : answer.body;
  response.writeHead(answer.status, {
    'content-type':
      answer.contentType ??
      (typeof answer.body === 'string' ? 'text/plain; charset=utf-8' : MSGPACK),
    'content-length': body.length,
  });
  response.end(body);
}

export function msgpackAnswer(body: Uint8Array, status = 200): HttpAnswer {
  return { status, body, contentType: MSGPACK };
}
