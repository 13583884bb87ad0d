import http from 'node:http';
import { PeerUnreachableError, TimeoutError } from '../errors.ts';
import { MSGPACK } from '../wire/forward.ts';

/** Keep-alive client for node-to-node calls. */
export class NodeClient {
  readonly #agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  readonly #authorization: string;

  constructor(secret: string) {
    this.#authorization = `Bearer ${secret}`;
  }

  /** Resolves with the status and body; rejects with PeerUnreachableError or TimeoutError. */
  request(
    method: 'GET' | 'POST',
    url: string,
    body: Uint8Array | null,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const request = http.request(url, {
        method,
        agent: this.#agent,
        headers: {
          authorization: this.#authorization,
          'content-type': MSGPACK,
          ...(body ? { 'content-length': body.length } : {}),
        },
        ...(signal ? { signal } : {}),
      });
      const timer = setTimeout(() => {
        request.destroy(new TimeoutError(`${method} ${url}`, timeoutMs));
      }, timeoutMs);
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          clearTimeout(timer);
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) });
        });
        response.on('error', (error) => {
          clearTimeout(timer);
          reject(new PeerUnreachableError(`${method} ${url}: ${error.message}`, { cause: error }));
        });
      });
      request.on('error', (error) => {
        clearTimeout(timer);
        reject(
          error instanceof TimeoutError
            ? error
            : new PeerUnreachableError(`${method} ${url}: ${error.message}`, { cause: error }),
        );
      });
      request.end(body ?? undefined);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}
