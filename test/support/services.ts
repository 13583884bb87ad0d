/**
 * External services for the backend suites (S3 emulator, NATS). `scripts/services up` starts them
 * on loopback and `scripts/services env` prints where; these defaults match that script.
 *
 * In CI (`CI` set) a missing service is a failing test, never a silent skip. Elsewhere the suite is
 * skipped and says how to start the services.
 */
import { connect } from 'node:net';
import { describe, test } from 'vitest';

export interface ServiceEndpoints {
  s3: string | undefined;
  nats: string | undefined;
}

export type ServiceName = keyof ServiceEndpoints;

const defaults: Record<ServiceName, { env: string; url: string }> = {
  s3: { env: 'HADB_TEST_S3_ENDPOINT', url: 'http://127.0.0.1:4566' },
  nats: { env: 'HADB_TEST_NATS_URL', url: 'nats://127.0.0.1:4222' },
};

const HOW_TO_START = 'start them with `scripts/services up` (see README, "Tests and services")';

/** The service's URL when something answers on its port, else `undefined`. */
export async function findService(name: ServiceName): Promise<string | undefined> {
  const { env, url } = defaults[name];
  const candidate = process.env[env] ?? url;
  return (await isListening(candidate)) ? candidate : undefined;
}

/**
 * `describe` for a suite that needs `name`: runs `body(url)` when the service answers; otherwise
 * fails in CI and skips with a visible message elsewhere.
 */
export async function describeWithService(
  name: ServiceName,
  title: string,
  body: (url: string) => void,
): Promise<void> {
  const url = await findService(name);
  if (url !== undefined) {
    describe(title, () => body(url));
    return;
  }
  const { env, url: fallback } = defaults[name];
  const message = `${name} is not reachable at ${process.env[env] ?? fallback} (${env}); ${HOW_TO_START}`;
  if (process.env.CI) {
    describe(title, () => {
      test(`needs ${name}`, () => {
        throw new Error(message);
      });
    });
    return;
  }
  process.emitWarning(`suite "${title}" did not run: ${message}`, 'HadbTestServices');
  describe.skip(`${title} [not run: ${name} missing; ${HOW_TO_START}]`, () => body(''));
}

function isListening(url: string): Promise<boolean> {
  const { hostname, port, protocol } = new URL(url);
  const fallbackPort = protocol === 'nats:' ? 4222 : protocol === 'https:' ? 443 : 80;
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port || fallbackPort) });
    const done = (answer: boolean) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
