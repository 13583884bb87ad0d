/**
 * Helpers for suites against the S3 emulator (`scripts/services up`): buckets of their own, and an
 * endpoint where nothing listens.
 */
import { randomBytes } from 'node:crypto';
import {
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import { createServer, type Socket } from 'node:net';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { createS3Client, type S3ClientOptions } from '../../src/adapters/s3-client.ts';

// The emulator accepts any credentials; `scripts/services env` exports these too.
process.env.AWS_ACCESS_KEY_ID ??= 'test';
process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
process.env.AWS_REGION ??= 'us-east-1';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export function emulatorClientOptions(
  endpoint: string,
  extra: S3ClientOptions = {},
): S3ClientOptions {
  return { endpoint, region: 'us-east-1', forcePathStyle: true, ...extra };
}

export interface TestBucket {
  name: string;
  client: S3Client;
  /** Deletes every object, then the bucket. */
  remove(): Promise<void>;
}

/** A new, empty bucket with a random name. */
export async function createTestBucket(endpoint: string): Promise<TestBucket> {
  const client = createS3Client(emulatorClientOptions(endpoint));
  const name = `hadb-test-${randomBytes(6).toString('hex')}`;
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return {
    name,
    client,
    async remove() {
      for (;;) {
        const page = await client.send(new ListObjectsV2Command({ Bucket: name }));
        const objects = (page.Contents ?? []).flatMap((object) =>
          object.Key === undefined ? [] : [{ Key: object.Key }],
        );
        if (objects.length === 0) break;
        await client.send(
          new DeleteObjectsCommand({ Bucket: name, Delete: { Objects: objects, Quiet: true } }),
        );
      }
      await client.send(new DeleteBucketCommand({ Bucket: name }));
      client.destroy();
    },
  };
}

/** An `http://127.0.0.1:<port>` URL where nothing listens (the port was just freed). */
export async function closedEndpoint(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return `http://127.0.0.1:${address.port}`;
}

export interface ProxiedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/**
 * What the proxy does with a request: forward it (the default); answer with an S3 error without
 * forwarding; or forward it and then answer with an error anyway, as when a request lands and
 * its answer is lost. `hang` never forwards nor answers, and `forward-then-hang` lands the request
 * and never answers: either way the client must time out. `decide` may also edit the request's
 * headers before it is forwarded, and act on the emulator itself before it answers.
 */
export type ProxyAction =
  | { kind: 'forward' }
  | { kind: 'fail'; status: number; code: string }
  | { kind: 'forward-then-fail'; status: number; code: string }
  | { kind: 'hang' }
  | { kind: 'forward-then-hang' };

export interface S3Proxy {
  endpoint: string;
  requests: ProxiedRequest[];
  close(): Promise<void>;
}

/** A loopback HTTP proxy in front of `target` (the emulator) that can fail or alter requests. */
export async function startS3Proxy(
  target: string,
  decide: (
    request: ProxiedRequest,
  ) => ProxyAction | undefined | Promise<ProxyAction | undefined> = () => undefined,
): Promise<S3Proxy> {
  const upstream = new URL(target);
  const requests: ProxiedRequest[] = [];
  const server = createHttpServer(async (incoming, outgoing) => {
    const chunks: Buffer[] = [];
    for await (const chunk of incoming) chunks.push(chunk as Buffer);
    const request: ProxiedRequest = {
      method: incoming.method ?? 'GET',
      url: incoming.url ?? '/',
      headers: { ...incoming.headers },
      body: Buffer.concat(chunks),
    };
    requests.push(request);
    const action = (await decide(request)) ?? { kind: 'forward' };
    if (action.kind === 'fail') {
      sendS3Error(outgoing, action.status, action.code);
      return;
    }
    // Left open: the client gives up on it, or close() destroys it.
    if (action.kind === 'hang') return;
    try {
      const answer = await forward(upstream, request);
      if (action.kind === 'forward-then-hang') return;
      if (action.kind === 'forward-then-fail') {
        sendS3Error(outgoing, action.status, action.code);
        return;
      }
      outgoing.writeHead(answer.status, answer.headers);
      outgoing.end(answer.body);
    } catch {
      outgoing.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function forward(
  upstream: URL,
  request: ProxiedRequest,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: request.method,
        path: request.url,
        headers: request.headers,
      },
      async (response) => {
        const chunks: Buffer[] = [];
        for await (const chunk of response) chunks.push(chunk as Buffer);
        const headers = { ...response.headers };
        delete headers['transfer-encoding'];
        resolve({ status: response.statusCode ?? 500, headers, body: Buffer.concat(chunks) });
      },
    );
    outgoing.on('error', reject);
    outgoing.end(request.body);
  });
}

function sendS3Error(outgoing: ServerResponse, status: number, code: string): void {
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected by the test proxy</Message><RequestId>test</RequestId></Error>`;
  outgoing.writeHead(status, { 'content-type': 'application/xml' });
  outgoing.end(body);
}

export interface ResettingServer {
  endpoint: string;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

/** Accepts connections and resets them at once: a service that is down behind a load balancer. */
export async function startResettingServer(): Promise<ResettingServer> {
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    socket.resetAndDestroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Accepts connections and never answers: requests must time out. */
export async function startSilentServer(): Promise<{ endpoint: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
