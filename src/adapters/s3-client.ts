import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import type { Clock } from '../clock.ts';
import { messageOf } from '../error-message.ts';
import { HadbError, InvalidArgumentError } from '../errors.ts';
import { type BreakerOptions, CircuitBreaker, type RetryOptions, retryCall } from './retry.ts';

/**
 * The S3 client the S3 adapters share, and the retry policy around every call they make.
 * Credentials and the region come from the standard AWS environment (variables, profiles, instance
 * roles); hadb never reads or logs them.
 */
export interface S3ClientOptions {
  /** An S3-compatible service or emulator, e.g. `http://127.0.0.1:4566`; default: AWS. */
  endpoint?: string;
  /** Default: the AWS environment (`AWS_REGION`, the profile). */
  region?: string;
  /** `host/bucket/key` URLs instead of `bucket.host/key`: most emulators need it. */
  forcePathStyle?: boolean;
  /** Time to open a connection (default 1000 ms). */
  connectionTimeoutMs?: number;
  /** Time for a whole request and its response (default 10000 ms). */
  requestTimeoutMs?: number;
  /** Concurrent connections per host (default 128). */
  maxSockets?: number;
}

const DEFAULT_CONNECTION_TIMEOUT_MS = 1000;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_SOCKETS = 128;

/**
 * A new client with keep-alive connections and timeouts, and without the SDK's own retries:
 * {@link callS3} retries, so each attempt is counted once, by the circuit breaker.
 */
export function createS3Client(options: S3ClientOptions = {}): S3Client {
  const agentOptions = {
    keepAlive: true,
    maxSockets: options.maxSockets ?? DEFAULT_MAX_SOCKETS,
  };
  return new S3Client({
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.region === undefined ? {} : { region: options.region }),
    forcePathStyle: options.forcePathStyle ?? false,
    maxAttempts: 1,
    // Constructor options of the SDK's NodeHttpHandler (@smithy/node-http-handler).
    requestHandler: {
      connectionTimeout: options.connectionTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUT_MS,
      requestTimeout: options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      // Without it, an exceeded requestTimeout only logs a warning.
      throwOnRequestTimeout: true,
      httpAgent: new HttpAgent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
    },
  });
}

const sharedClients = new Map<string, S3Client>();

/** One client per distinct configuration in the process: its connections serve every database. */
export function sharedS3Client(options: S3ClientOptions = {}): S3Client {
  const key = JSON.stringify([
    options.endpoint,
    options.region,
    options.forcePathStyle ?? false,
    options.connectionTimeoutMs ?? DEFAULT_CONNECTION_TIMEOUT_MS,
    options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
    options.maxSockets ?? DEFAULT_MAX_SOCKETS,
  ]);
  let client = sharedClients.get(key);
  if (client === undefined) {
    client = createS3Client(options);
    sharedClients.set(key, client);
  }
  return client;
}

/**
 * Resolves the credentials and region a client with `options` would sign with, so that missing
 * ones are a configuration error when a store is opened rather than a storage outage at its first
 * request. Nothing is sent to S3; an instance or container role is asked, as the SDK would.
 */
export async function checkS3Configuration(options: S3ClientOptions, what: string): Promise<void> {
  const { config } = sharedS3Client(options);
  try {
    await config.region();
  } catch (error) {
    // Missing, or not a region ("Region not accepted"): either way, nothing to retry.
    const why = messageOf(error);
    throw new InvalidArgumentError(
      `${what}: no AWS region (${why}): add ?region=… to the URL or set AWS_REGION`,
      { cause: error },
    );
  }
  try {
    await config.credentials();
  } catch (error) {
    if (!(error instanceof Error && error.name === 'CredentialsProviderError')) throw error;
    throw new InvalidArgumentError(
      `${what}: no AWS credentials (${error.message}): set AWS_ACCESS_KEY_ID and ` +
        'AWS_SECRET_ACCESS_KEY, or AWS_PROFILE for a profile in ~/.aws, or run with an instance ' +
        'or container role; credentials never go in the URL',
      { cause: error },
    );
  }
}

/** What the S3 adapters accept about their connection and its resilience. */
export interface S3ConnectionOptions {
  /** Used as given; it should not retry by itself (`maxAttempts: 1`). Excludes `clientOptions`. */
  client?: S3Client;
  /** For the process's shared client ({@link sharedS3Client}) when no `client` is given. */
  clientOptions?: S3ClientOptions;
  retry?: RetryOptions;
  /** A breaker to share between adapters, or options for one of the adapter's own. */
  breaker?: CircuitBreaker | BreakerOptions;
  clock?: Clock;
  /** In [0, 1): the backoff jitter. */
  random?: () => number;
}

/** The client and retry policy of one adapter. */
export interface S3Connection {
  client: S3Client;
  /** Calls `send` with retries of transient failures, behind the breaker. */
  call<T>(send: () => Promise<T>): Promise<T>;
}

/** `defaults` are the adapter's own, under what its caller gave. */
export function openS3Connection(
  options: S3ConnectionOptions,
  defaults: { retry?: RetryOptions; clientOptions?: S3ClientOptions } = {},
): S3Connection {
  if (options.client !== undefined && options.clientOptions !== undefined) {
    throw new InvalidArgumentError('give either client or clientOptions, not both');
  }
  const client =
    options.client ?? sharedS3Client({ ...defaults.clientOptions, ...options.clientOptions });
  const breaker =
    options.breaker instanceof CircuitBreaker
      ? options.breaker
      : new CircuitBreaker({
          ...options.breaker,
          ...(options.clock === undefined ? {} : { clock: options.clock }),
        });
  const retry = { ...defaults.retry, ...options.retry };
  return {
    client,
    call: (send) =>
      retryCall(send, {
        ...retry,
        breaker,
        isTransient: isTransientS3Error,
        ...(options.clock === undefined ? {} : { clock: options.clock }),
        ...(options.random === undefined ? {} : { random: options.random }),
      }),
  };
}

const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
]);

const TRANSIENT_ERROR_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'InternalError',
  'ServiceUnavailable',
]);

/** The HTTP status of an SDK error, when the service answered. */
export function s3Status(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const metadata = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata;
  const status = metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The S3 error code (`PreconditionFailed`, `NoSuchKey`...), which the SDK puts in `name`. */
export function s3ErrorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

/** Throttling, a server failure, a timeout or a network failure: worth another attempt. */
export function isTransientS3Error(error: unknown): boolean {
  const status = s3Status(error);
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  const name = s3ErrorName(error);
  if (name !== undefined && TRANSIENT_ERROR_NAMES.has(name)) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return status === undefined && typeof code === 'string' && NETWORK_ERROR_CODES.has(code);
}

/** `NoSuchBucket (HTTP 404): The specified bucket does not exist`, for our error messages. */
export function describeS3Error(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error instanceof HadbError) return error.message;
  const status = s3Status(error);
  const code = (error as { code?: unknown }).code;
  const label =
    typeof code === 'string' && code !== error.name ? `${error.name} ${code}` : error.name;
  return `${label}${status === undefined ? '' : ` (HTTP ${status})`}: ${error.message}`;
}
