/**
 * Backends chosen by URL, so a deployment is configured with two strings:
 *
 * - `file:///var/lib/hadb` — storage: a folder (see `createFsStorage`). Leases: the SQLite file
 *   `/var/lib/hadb/leases.sqlite`, or the path itself when it ends in `.sqlite`, `.sqlite3` or `.db`
 *   (see `createFsLeaseStore`). Pointing storage and leases at one folder works; the lease file
 *   then shows up as objects `leases.sqlite*` in a listing of the whole folder.
 * - `memory:` — a fresh in-process store, for tests: two calls give two unrelated stores.
 * - `s3://bucket/prefix?endpoint=http://127.0.0.1:4566&region=us-east-1&forcePathStyle=true` —
 *   every key lives under `prefix/` in `bucket`; all parameters are optional.
 * - `nats://host:4222?bucket=leases` — leases only: a JetStream KV bucket (default port 4222).
 *
 * Credentials are refused in URLs, which end up in logs, process lists and shell history: S3
 * takes them from the AWS SDK's usual chain (environment, profile, instance role). Error
 * messages never repeat a URL's user information or query values.
 */

import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, InvalidKeyError } from '../errors.ts';
import { redactUrl } from '../redact.ts';
import { createFsLeaseStore } from './lease/fs.ts';
import { createMemoryLeaseStore } from './lease/memory.ts';
import type { LeaseStore } from './lease/types.ts';
import type { S3ClientOptions } from './s3-client.ts';
import { createFsStorage } from './storage/fs.ts';
import { assertValidKey } from './storage/keys.ts';
import { createMemoryStorage } from './storage/memory.ts';
import type { StorageBackend } from './storage/types.ts';

/** An `s3://bucket/prefix?...` URL, parsed. */
export interface S3UrlConfig {
  kind: 's3';
  bucket: string;
  /** Key prefix without leading or trailing `/`; `''` for the whole bucket. */
  prefix: string;
  /** An S3-compatible service's URL (`http(s)://host[:port][/path]`); absent for AWS. */
  endpoint?: string;
  region?: string;
  forcePathStyle: boolean;
}

/** A storage URL (`file:`, `memory:`, `s3:`), parsed. */
export type StorageUrlConfig = { kind: 'file'; path: string } | { kind: 'memory' } | S3UrlConfig;

/** A lease store URL (`file:`, `memory:`, `s3:`, `nats:`), parsed. */
export type LeaseUrlConfig =
  /** `path` is the SQLite file itself. */
  | { kind: 'file'; path: string }
  | { kind: 'memory' }
  | S3UrlConfig
  | { kind: 'nats'; servers: string[]; bucket: string };

/** Options of `openLeaseStoreFromUrl`. */
export interface OpenLeaseStoreOptions {
  /** File lease store: how long a call may wait for another process's lock (default 5000 ms). */
  busyTimeoutMs?: number;
  /** NATS lease store: how long a call may take before it fails as unavailable. */
  timeoutMs?: number;
}

const LEASE_FILE = 'leases.sqlite';
const SQLITE_FILE = /\.(?:sqlite3?|db)$/i;
const DEFAULT_NATS_PORT = 4222;
/** S3's rules for new buckets: 3–63 lowercase letters, digits, dots and hyphens. */
const S3_BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const NATS_BUCKET = /^[A-Za-z0-9_-]+$/;
const REGION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const LOOKS_SECRET = /secret|passw|token|credential|signature|key/i;

/** Parses a storage URL; refuses unknown schemes and credentials in the URL. */
export function parseStorageUrl(url: string): StorageUrlConfig {
  const { scheme, parsed } = parse(url, 'storage', ['file', 'memory', 's3']);
  switch (scheme) {
    case 'file':
      return { kind: 'file', path: parseFilePath(url, parsed, 'storage') };
    case 'memory':
      return parseMemory(parsed, 'storage');
    default:
      return parseS3(url, parsed, 'storage');
  }
}

/** Parses a lease store URL; refuses unknown schemes and credentials in the URL. */
export function parseLeaseUrl(url: string): LeaseUrlConfig {
  const { scheme, parsed } = parse(url, 'lease store', ['file', 'memory', 's3', 'nats']);
  switch (scheme) {
    case 'file': {
      const folderOrFile = parseFilePath(url, parsed, 'lease store');
      const file = SQLITE_FILE.test(folderOrFile)
        ? folderOrFile
        : path.join(folderOrFile, LEASE_FILE);
      return { kind: 'file', path: file };
    }
    case 'memory':
      return parseMemory(parsed, 'lease store');
    case 's3':
      return parseS3(url, parsed, 'lease store');
    default:
      return parseNats(parsed);
  }
}

/** Opens the storage backend a URL names (`file:///dir`, `memory:`, `s3://bucket/prefix`). */
export async function openStorageFromUrl(url: string): Promise<StorageBackend> {
  const config = parseStorageUrl(url);
  switch (config.kind) {
    case 'file':
      return createFsStorage({ root: config.path });
    case 'memory':
      return createMemoryStorage();
    case 's3':
      return openS3Storage(config);
  }
}

/** Opens the lease store a URL names (`file:///dir`, `memory:`, `s3://...`, `nats://...`). */
export async function openLeaseStoreFromUrl(
  url: string,
  options: OpenLeaseStoreOptions = {},
): Promise<LeaseStore> {
  const config = parseLeaseUrl(url);
  switch (config.kind) {
    case 'file':
      return createFsLeaseStore(
        options.busyTimeoutMs === undefined
          ? { path: config.path }
          : { path: config.path, busyTimeoutMs: options.busyTimeoutMs },
      );
    case 'memory':
      return createMemoryLeaseStore();
    case 's3':
      return openS3LeaseStore(config);
    case 'nats':
      return openNatsLeaseStore(config, options);
  }
}

// wire: the one place that knows the S3 and NATS adapters' factories and option shapes, written
// against storage/s3.ts, lease/s3.ts and lease/nats.ts as they stand. They are loaded on first
// use, so the SDKs load only for these schemes; a module or factory that does not exist makes
// its scheme fail with "not available yet".

async function openS3Storage(config: S3UrlConfig): Promise<StorageBackend> {
  const factory = await loadFactory('s3:// storage', './storage/s3', 'createS3Storage');
  await checkS3(config, 's3:// storage');
  return checked(await factory(s3Options(config)), 's3:// storage', ['put', 'list']);
}

async function openS3LeaseStore(config: S3UrlConfig): Promise<LeaseStore> {
  // The opener self-tests conditional writes on the bucket and refuses one that lacks them.
  const factory = await loadFactory('s3:// leases', './lease/s3', 'openS3LeaseStore');
  await checkS3(config, 's3:// leases');
  return checked(await factory(s3Options(config)), 's3:// leases', ['create', 'update']);
}

async function openNatsLeaseStore(
  config: Extract<LeaseUrlConfig, { kind: 'nats' }>,
  options: OpenLeaseStoreOptions,
): Promise<LeaseStore> {
  const factory = await loadFactory('nats:// leases', './lease/nats', 'openNatsLeaseStore');
  const natsOptions = {
    servers: config.servers,
    bucket: config.bucket,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
  };
  return checked(await factory(natsOptions), 'nats:// leases', ['create', 'update']);
}

/** No credentials or no region is a configuration error, found before any request. */
async function checkS3(config: S3UrlConfig, what: string): Promise<void> {
  const { checkS3Configuration } = await import('./s3-client.ts');
  await checkS3Configuration(s3Options(config).clientOptions as S3ClientOptions, what);
}

/** `S3StorageOptions` of storage/s3.ts and `S3LeaseStoreOptions` of lease/s3.ts. */
function s3Options(config: S3UrlConfig): Record<string, unknown> {
  const { bucket, prefix, endpoint, region, forcePathStyle } = config;
  return {
    bucket,
    prefix,
    clientOptions: {
      forcePathStyle,
      ...(endpoint === undefined ? {} : { endpoint }),
      ...(region === undefined ? {} : { region }),
    },
  };
}

type Factory = (options: unknown) => unknown;

/** `.ts` when running the sources (tsx, vitest), `.js` when running the compiled package. */
const ADAPTER_EXTENSION = path.extname(fileURLToPath(import.meta.url));

async function loadFactory(what: string, stem: string, name: string): Promise<Factory> {
  const specifier = `${stem}${ADAPTER_EXTENSION}`;
  const href = new URL(specifier, import.meta.url).href;
  let module: Record<string, unknown>;
  try {
    module = (await import(href)) as Record<string, unknown>;
  } catch (error) {
    // Only the adapter itself missing, not a package it imports ("... imported from s3.ts").
    const message = error instanceof Error ? error.message : '';
    const missing =
      (error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' &&
      (message.includes(`'${href}'`) || message.includes(`'${fileURLToPath(href)}'`));
    if (!missing) throw error;
    throw new InvalidArgumentError(`${what} is not available yet (no ${specifier})`, {
      cause: error,
    });
  }
  const factory = module[name];
  if (typeof factory !== 'function') {
    throw new InvalidArgumentError(`${what} is not available yet (${specifier} has no ${name})`);
  }
  return factory as Factory;
}

function checked<T>(store: unknown, what: string, methods: string[]): T {
  const record = store as Record<string, unknown> | null;
  if (typeof record !== 'object' || methods.some((m) => typeof record?.[m] !== 'function')) {
    throw new InvalidArgumentError(`${what}: the factory did not return a store`);
  }
  return store as T;
}

// Parsing.

type Scheme = 'file' | 'memory' | 's3' | 'nats';

function parse(
  url: string,
  what: string,
  schemes: readonly Scheme[],
): { scheme: Scheme; parsed: URL } {
  if (typeof url !== 'string' || url.trim() === '') {
    throw new InvalidArgumentError(`${what} URL is empty; expected one of ${expected(schemes)}`);
  }
  const match = /^\s*([A-Za-z][A-Za-z0-9+.-]*):/.exec(url);
  if (!match?.[1]) {
    throw new InvalidArgumentError(
      `${what} URL ${redact(url)} has no scheme; expected one of ${expected(schemes)}`,
    );
  }
  const scheme = match[1].toLowerCase();
  if (scheme === 'nats' && !schemes.includes('nats')) {
    throw new InvalidArgumentError(
      `${what} URL: nats: holds leases only; expected one of ${expected(schemes)}`,
    );
  }
  if (!(schemes as readonly string[]).includes(scheme)) {
    throw new InvalidArgumentError(
      `${what} URL has the unknown scheme "${scheme}:"; expected one of ${expected(schemes)}`,
    );
  }
  if (/^[^:]+:\/\/[^/?#]*@/.test(url.trim())) {
    throw credentialsRefused(scheme, what);
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // The parser's error carries the input, which may hold a secret: do not chain it.
    throw new InvalidArgumentError(`${what} URL ${redact(url)} is malformed`);
  }
  if (parsed.username !== '' || parsed.password !== '') throw credentialsRefused(scheme, what);
  if (parsed.hash !== '') {
    throw new InvalidArgumentError(
      `${what} URL ${redact(url)} has a #fragment, which means nothing here`,
    );
  }
  return { scheme: scheme as Scheme, parsed };
}

function parseFilePath(url: string, parsed: URL, what: string): string {
  // The URL parser reads `file:data` and `file:/data` as `/data`: insist on the explicit form.
  if (!/^\s*file:\/\//i.test(url)) {
    throw new InvalidArgumentError(
      `${what} URL ${redact(url)} must be an absolute file URL: file:///absolute/path`,
    );
  }
  rejectParameters(parsed, what, []);
  if (parsed.hostname !== '' && parsed.hostname !== 'localhost') {
    throw new InvalidArgumentError(
      `${what} URL ${redact(url)} names host "${parsed.hostname}"; a file URL has three slashes: file:///absolute/path`,
    );
  }
  let file: string;
  try {
    file = fileURLToPath(parsed);
  } catch (error) {
    throw new InvalidArgumentError(`${what} URL ${redact(url)} is not a file path`, {
      cause: error,
    });
  }
  if (file.includes('\0')) {
    throw new InvalidArgumentError(`${what} URL ${redact(url)} holds a NUL byte`);
  }
  return path.resolve(file);
}

function parseMemory(parsed: URL, what: string): { kind: 'memory' } {
  rejectParameters(parsed, what, []);
  if (parsed.host !== '' || parsed.pathname !== '') {
    throw new InvalidArgumentError(`${what} URL memory: takes nothing after the scheme`);
  }
  return { kind: 'memory' };
}

function parseS3(url: string, parsed: URL, what: string): S3UrlConfig {
  const query = rejectParameters(parsed, what, ['endpoint', 'region', 'forcePathStyle']);
  const bucket = decodeOrThrow(parsed.hostname, what, 'bucket');
  if (bucket === '') {
    throw new InvalidArgumentError(`${what} URL ${redact(url)} has no bucket: s3://bucket/prefix`);
  }
  if (parsed.port !== '') {
    throw new InvalidArgumentError(
      `${what} URL ${redact(url)} has a port; give a service's address as ?endpoint=http://host:port`,
    );
  }
  if (!S3_BUCKET.test(bucket) || bucket.includes('..')) {
    throw new InvalidArgumentError(
      `${what} URL: ${JSON.stringify(bucket)} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens)`,
    );
  }
  const config: S3UrlConfig = {
    kind: 's3',
    bucket,
    prefix: parsePrefix(url, what),
    forcePathStyle: false,
  };
  const endpoint = query.get('endpoint');
  if (endpoint !== undefined) config.endpoint = parseEndpoint(endpoint, what);
  const region = query.get('region');
  if (region !== undefined) {
    if (!REGION.test(region)) {
      throw new InvalidArgumentError(`${what} URL: region ${JSON.stringify(region)} is not valid`);
    }
    config.region = region;
  }
  const pathStyle = query.get('forcePathStyle');
  if (pathStyle !== undefined) {
    if (pathStyle !== 'true' && pathStyle !== 'false') {
      throw new InvalidArgumentError(`${what} URL: forcePathStyle must be true or false`);
    }
    config.forcePathStyle = pathStyle === 'true';
  }
  return config;
}

/**
 * Read from the raw string: the URL parser would resolve `a/../b` to `b` and quietly move
 * every key elsewhere.
 */
function parsePrefix(url: string, what: string): string {
  const rawPath = url
    .trim()
    .replace(/^[^:]+:\/\/[^/?#]*/, '')
    .replace(/[?#][\s\S]*$/, '');
  const segments = rawPath.split('/').slice(1);
  if (segments[segments.length - 1] === '') segments.pop();
  if (segments.length === 0) return '';
  const decoded = segments.map((segment) => {
    const value = decodeOrThrow(segment, what, 'prefix');
    if (value.includes('/')) {
      throw new InvalidArgumentError(`${what} URL: the prefix holds an encoded "/" (%2F)`);
    }
    return value;
  });
  const prefix = decoded.join('/');
  try {
    assertValidKey(prefix);
  } catch (error) {
    if (!(error instanceof InvalidKeyError)) throw error;
    throw new InvalidArgumentError(`${what} URL: the prefix is not a valid key prefix`, {
      cause: error,
    });
  }
  return prefix;
}

function parseEndpoint(value: string, what: string): string {
  let endpoint: URL;
  try {
    endpoint = new URL(value);
  } catch {
    throw new InvalidArgumentError(
      `${what} URL: endpoint must be an http(s) URL such as http://127.0.0.1:4566`,
    );
  }
  if (endpoint.username !== '' || endpoint.password !== '') {
    throw credentialsRefused('s3', what);
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    throw new InvalidArgumentError(
      `${what} URL: endpoint must be an http(s) URL, not ${endpoint.protocol}`,
    );
  }
  if (endpoint.search !== '' || endpoint.hash !== '') {
    throw new InvalidArgumentError(`${what} URL: endpoint must not have a query or fragment`);
  }
  return endpoint.pathname === '/' ? endpoint.origin : endpoint.href.replace(/\/$/, '');
}

function parseNats(parsed: URL): LeaseUrlConfig {
  const what = 'lease store';
  const query = rejectParameters(parsed, what, ['bucket']);
  if (parsed.hostname === '') {
    throw new InvalidArgumentError(`${what} URL has no host: nats://host:4222?bucket=leases`);
  }
  if (parsed.pathname !== '' && parsed.pathname !== '/') {
    throw new InvalidArgumentError(
      `${what} URL: a nats URL has no path; name the KV bucket with ?bucket=`,
    );
  }
  const bucket = query.get('bucket');
  if (bucket === undefined) {
    throw new InvalidArgumentError(`${what} URL has no bucket: nats://host:4222?bucket=leases`);
  }
  if (!NATS_BUCKET.test(bucket)) {
    throw new InvalidArgumentError(
      `${what} URL: ${JSON.stringify(bucket)} is not a valid KV bucket name (letters, digits, _ and -)`,
    );
  }
  const port = parsed.port === '' ? DEFAULT_NATS_PORT : Number(parsed.port);
  return { kind: 'nats', servers: [`nats://${parsed.hostname}:${port}`], bucket };
}

/** The query as a map, refusing parameters not in `allowed`, repeated ones and empty values. */
function rejectParameters(
  parsed: URL,
  what: string,
  allowed: readonly string[],
): Map<string, string> {
  const query = new Map<string, string>();
  for (const [name, value] of parsed.searchParams) {
    const shown = JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name);
    if (LOOKS_SECRET.test(name) && !allowed.includes(name)) {
      throw new InvalidArgumentError(
        `${what} URL has parameter ${shown}: credentials do not belong in a URL; give them through the environment or the adapter's own options`,
      );
    }
    if (!allowed.includes(name)) {
      const known = allowed.length === 0 ? 'none' : allowed.join(', ');
      throw new InvalidArgumentError(
        `${what} URL has the unknown parameter ${shown} (known: ${known})`,
      );
    }
    if (query.has(name)) {
      throw new InvalidArgumentError(`${what} URL has parameter ${shown} more than once`);
    }
    if (value === '') throw new InvalidArgumentError(`${what} URL has an empty ${shown}`);
    query.set(name, value);
  }
  return query;
}

function decodeOrThrow(value: string, what: string, part: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new InvalidArgumentError(`${what} URL: the ${part} has a malformed %-escape`);
  }
}

function credentialsRefused(scheme: string, what: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `${what} URL (${scheme}:) holds credentials; they do not belong in a URL: give them through the environment or the adapter's own options`,
  );
}

/** The URL, quoted, without anything that may be secret: user information, query values, fragment. */
function redact(url: string): string {
  const shown = redactUrl(url.trim(), { allQueryValues: true });
  return JSON.stringify(shown.length > 200 ? `${shown.slice(0, 200)}…` : shown);
}

function expected(schemes: readonly Scheme[]): string {
  return schemes.map((scheme) => `${scheme}:`).join(', ');
}
