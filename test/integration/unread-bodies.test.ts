import http from 'node:http';
import { afterEach, describe, expect, test } from 'vitest';
import type { HadbDatabase } from '../../src/api-types.ts';
import { type HranaServer, startHranaServer } from '../../src/hrana/server.ts';
import { type NodeListener, startNodeListener } from '../../src/http/listener.ts';
import { SECRET } from './support/nodes.ts';

// A client announces a 60 MB body and sends none of it: a server that reads bodies it does not
// need would wait for it (and buffer it); one that does not answers at once and hangs up.

const ANNOUNCED = 60 * 1024 * 1024;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((close) => close()));
});

interface Outcome {
  status: number;
  connection: string | undefined;
  body: string;
  /** Whether the server closed the connection while the announced body was still unsent. */
  hungUp: boolean;
}

/** Sends only the headers of a request with a body of `ANNOUNCED` bytes. */
function announceBody(url: string, method: 'GET' | 'POST'): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method,
      agent: false,
      headers: { 'content-length': String(ANNOUNCED) },
    });
    const timer = setTimeout(() => {
      request.destroy();
      reject(new Error(`${method} ${url}: no answer within 3 s while the body was unsent`));
    }, 3000);
    request.on('error', () => {}); // the server hanging up is what we wait for
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const socket = request.socket;
        const done = (hungUp: boolean) => {
          clearTimeout(timer);
          request.destroy();
          resolve({
            status: response.statusCode ?? 0,
            connection: response.headers.connection,
            body: Buffer.concat(chunks).toString('utf8'),
            hungUp,
          });
        };
        if (!socket || socket.destroyed) return done(true);
        const wait = setTimeout(() => done(false), 1000);
        socket.once('close', () => {
          clearTimeout(wait);
          done(true);
        });
      });
    });
    request.flushHeaders();
  });
}

async function listener(): Promise<NodeListener> {
  const started = await startNodeListener({
    host: '127.0.0.1',
    port: 0,
    secret: SECRET,
    routes: {
      '/health': { method: 'GET', authenticated: false, handle: async () => ok('ok') },
      '/echo': {
        method: 'POST',
        authenticated: true,
        handle: async ({ body }) => ok(`${body.length} bytes`),
      },
    },
  });
  closers.push(() => started.close());
  return started;
}

function ok(body: string) {
  return { status: 200, body };
}

describe('unauthenticated requests: their bodies are never read', () => {
  test('GET /health, a POST without the secret and a Hrana pipeline without the token are answered before a 60 MB body is sent, then the connection closes', async () => {
    const { address } = await listener();
    expect(await announceBody(`${address}/health`, 'GET')).toMatchObject({
      status: 200,
      body: 'ok',
      connection: 'close',
      hungUp: true,
    });
    expect(await announceBody(`${address}/echo`, 'POST')).toMatchObject({
      status: 401,
      connection: 'close',
      hungUp: true,
    });
    // With the secret, the same route still reads its body.
    const answer = await fetch(`${address}/echo`, {
      method: 'POST',
      headers: { authorization: `Bearer ${SECRET}` },
      body: 'hello',
    });
    expect(await answer.text()).toBe('5 bytes');

    const hrana: HranaServer = await startHranaServer({
      host: '127.0.0.1',
      port: 0,
      databases: new Map<string, HadbDatabase>([['db', {} as HadbDatabase]]),
      authToken: 'the-client-token-of-the-test',
      secret: SECRET,
      self: 'http://127.0.0.1:1',
      leaderAddress: () => null,
    });
    closers.push(() => hrana.close());
    const pipeline = `${hrana.address}/db/v3/pipeline`;
    expect(await announceBody(pipeline, 'POST')).toMatchObject({
      status: 401,
      connection: 'close',
      hungUp: true,
    });
  });
});
