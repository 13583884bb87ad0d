import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  openLeaseStoreFromUrl,
  openStorageFromUrl,
  parseLeaseUrl,
  parseStorageUrl,
} from '../../src/adapters/url.ts';
import {
  InvalidArgumentError,
  LeaseStoreUnavailableError,
  StorageUnavailableError,
} from '../../src/errors.ts';

const bytes = (text: string) => new TextEncoder().encode(text);

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

/** The InvalidArgumentError `run` throws (synchronously or as a rejection). */
async function failure(run: () => unknown): Promise<InvalidArgumentError> {
  try {
    await run();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidArgumentError);
    return error as InvalidArgumentError;
  }
  throw new Error('expected an InvalidArgumentError, got none');
}

describe('parseStorageUrl', () => {
  it.each([
    ['file:///var/lib/hadb', '/var/lib/hadb'],
    ['file:///var/lib/hadb/', '/var/lib/hadb'],
    ['FILE:///var/lib/hadb', '/var/lib/hadb'],
    ['file://localhost/var/lib/hadb', '/var/lib/hadb'],
    ['file:///tmp/with%20space/%C3%A9t%C3%A9', '/tmp/with space/\u00e9t\u00e9'],
    ['file:///', '/'],
  ])('reads %s as the folder %s', (url, folder) => {
    expect(parseStorageUrl(url)).toStrictEqual({ kind: 'file', path: folder });
  });

  it.each(['memory:', 'memory://', 'MEMORY:'])('reads %s as a memory store', (url) => {
    expect(parseStorageUrl(url)).toStrictEqual({ kind: 'memory' });
  });

  it('reads an s3 URL with only a bucket', () => {
    expect(parseStorageUrl('s3://my-bucket')).toStrictEqual({
      kind: 's3',
      bucket: 'my-bucket',
      prefix: '',
      forcePathStyle: false,
    });
    expect(parseStorageUrl('s3://my.bucket.1/')).toStrictEqual({
      kind: 's3',
      bucket: 'my.bucket.1',
      prefix: '',
      forcePathStyle: false,
    });
  });

  it('reads an s3 URL with a prefix and every parameter', () => {
    const url =
      's3://hadb-data/prod/eu-1/?endpoint=http://127.0.0.1:4566&region=us-east-1&forcePathStyle=true';
    expect(parseStorageUrl(url)).toStrictEqual({
      kind: 's3',
      bucket: 'hadb-data',
      prefix: 'prod/eu-1',
      endpoint: 'http://127.0.0.1:4566',
      region: 'us-east-1',
      forcePathStyle: true,
    });
  });

  it('decodes percent-encoding in the prefix and the parameters', () => {
    const url =
      's3://hadb-data/a%20b/caf%C3%A9?endpoint=https%3A%2F%2Fs3.example.com%2Fbase%2F&forcePathStyle=false';
    expect(parseStorageUrl(url)).toStrictEqual({
      kind: 's3',
      bucket: 'hadb-data',
      prefix: 'a b/caf\u00e9',
      endpoint: 'https://s3.example.com/base',
      forcePathStyle: false,
    });
  });

  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['/var/lib/hadb', /no scheme/],
    ['ftp://host/x', /unknown scheme "ftp:".*file:, memory:, s3:/],
    ['nats://127.0.0.1:4222?bucket=x', /leases only/],
    ['file:relative/dir', /absolute file URL/],
    ['file:/var/lib/hadb', /absolute file URL/],
    ['file://server/share', /host "server"/],
    ['file:///a%2Fb', /not a file path/],
    ['file:///tmp/x%00y', /NUL/],
    ['file:///tmp/x?mode=ro', /unknown parameter "mode"/],
    ['file:///tmp/x#frag', /fragment/],
    ['memory:named', /nothing after the scheme/],
    ['memory:?x=1', /unknown parameter "x"/],
    ['s3://', /no bucket/],
    ['s3:///prefix', /no bucket/],
    ['s3://ab', /not a valid S3 bucket name/],
    ['s3://My_Bucket/x', /not a valid S3 bucket name/],
    ['s3://-bucket', /not a valid S3 bucket name/],
    ['s3://bucket..name', /not a valid S3 bucket name/],
    ['s3://bucket:9000/x', /port.*endpoint=/],
    ['s3://bucket/a/../b', /prefix is not a valid key prefix/],
    ['s3://bucket/a/./b', /prefix is not a valid key prefix/],
    ['s3://bucket/a//b', /prefix is not a valid key prefix/],
    ['s3://bucket/a%2Fb', /encoded "\/"/],
    ['s3://bucket/a%E0%A4%A', /malformed %-escape/],
    ['s3://bucket/.tmp-x', /prefix is not a valid key prefix/],
    ['s3://bucket?forcePathStyle=yes', /forcePathStyle must be true or false/],
    ['s3://bucket?forcePathStyle=TRUE', /forcePathStyle must be true or false/],
    ['s3://bucket?region=', /empty "region"/],
    ['s3://bucket?region=a&region=b', /"region" more than once/],
    ['s3://bucket?region=us%20east', /region "us east" is not valid/],
    [
      's3://bucket?bogus=1',
      /unknown parameter "bogus" \(known: endpoint, region, forcePathStyle\)/,
    ],
    ['s3://bucket?endpoint=not-a-url', /endpoint must be an http\(s\) URL/],
    ['s3://bucket?endpoint=ftp://host', /endpoint must be an http\(s\) URL, not ftp:/],
    ['s3://bucket?endpoint=http://host/%3Fa=1%23b', /endpoint must not have a query/],
    ['s3://bucket#x', /fragment/],
  ])('refuses %j', async (url, problem) => {
    const error = await failure(() => parseStorageUrl(url));
    expect(error.message).toMatch(problem);
    expect(error.code).toBe('INVALID_ARGUMENT');
  });
});

describe('parseLeaseUrl', () => {
  it('puts leases.sqlite inside a folder, and takes a SQLite file as it is', () => {
    expect(parseLeaseUrl('file:///var/lib/hadb')).toStrictEqual({
      kind: 'file',
      path: '/var/lib/hadb/leases.sqlite',
    });
    expect(parseLeaseUrl('file:///var/lib/hadb/')).toStrictEqual({
      kind: 'file',
      path: '/var/lib/hadb/leases.sqlite',
    });
    for (const file of ['/etc/hadb/my.sqlite', '/etc/hadb/my.sqlite3', '/etc/hadb/x.DB']) {
      expect(parseLeaseUrl(`file://${file}`)).toStrictEqual({ kind: 'file', path: file });
    }
    expect(parseLeaseUrl('file:///srv/lease%20files')).toStrictEqual({
      kind: 'file',
      path: '/srv/lease files/leases.sqlite',
    });
  });

  it('reads memory and s3 URLs as storage does', () => {
    expect(parseLeaseUrl('memory:')).toStrictEqual({ kind: 'memory' });
    expect(parseLeaseUrl('s3://leases-bucket/hadb/leases?region=eu-west-1')).toStrictEqual({
      kind: 's3',
      bucket: 'leases-bucket',
      prefix: 'hadb/leases',
      region: 'eu-west-1',
      forcePathStyle: false,
    });
  });

  it('reads nats URLs, with 4222 as the default port', () => {
    expect(parseLeaseUrl('nats://127.0.0.1:4222?bucket=leases')).toStrictEqual({
      kind: 'nats',
      servers: ['nats://127.0.0.1:4222'],
      bucket: 'leases',
    });
    expect(parseLeaseUrl('nats://nats.internal/?bucket=hadb_leases-1')).toStrictEqual({
      kind: 'nats',
      servers: ['nats://nats.internal:4222'],
      bucket: 'hadb_leases-1',
    });
    expect(parseLeaseUrl('NATS://[::1]:4333?bucket=b')).toStrictEqual({
      kind: 'nats',
      servers: ['nats://[::1]:4333'],
      bucket: 'b',
    });
  });

  it.each([
    ['redis://host', /unknown scheme "redis:".*file:, memory:, s3:, nats:/],
    ['nats://host:4222', /no bucket/],
    ['nats://?bucket=x', /no host/],
    ['nats://host/leases?bucket=x', /no path/],
    ['nats://host?bucket=a.b', /not a valid KV bucket name/],
    ['nats://host?bucket=a&bucket=b', /more than once/],
    ['nats://host?bucket=a&stream=x', /unknown parameter "stream" \(known: bucket\)/],
    ['nats://host:99999?bucket=a', /malformed/],
  ])('refuses %j', async (url, problem) => {
    const error = await failure(() => parseLeaseUrl(url));
    expect(error.message).toMatch(problem);
  });
});

describe('credentials in URLs', () => {
  const SECRET = 'wJalrXUtnFEMI-K7MDENG';
  const ACCESS_KEY = 'AKIAIOSFODNN7EXAMPLE';

  it.each([
    ['storage', `s3://${ACCESS_KEY}:${SECRET}@bucket/prefix`],
    ['storage', `s3://${SECRET}@bucket`],
    ['storage', `s3://${ACCESS_KEY}:${SECRET}@`],
    ['storage', `s3://bucket?endpoint=http://${ACCESS_KEY}:${SECRET}@127.0.0.1:4566`],
    ['storage', `s3://bucket?secretAccessKey=${SECRET}`],
    ['storage', `s3://bucket?accessKeyId=${ACCESS_KEY}&region=us-east-1`],
    ['storage', `file://${ACCESS_KEY}:${SECRET}@localhost/tmp`],
    ['lease', `nats://${ACCESS_KEY}:${SECRET}@127.0.0.1:4222?bucket=leases`],
    ['lease', `nats://${SECRET}@127.0.0.1?bucket=leases`],
    ['lease', `nats://127.0.0.1?bucket=leases&token=${SECRET}`],
    ['lease', `s3://${ACCESS_KEY}:${SECRET}@bucket`],
  ])('refuses %s URL %#, without repeating the secret', async (kind, url) => {
    const parse = kind === 'lease' ? parseLeaseUrl : parseStorageUrl;
    const error = await failure(() => parse(url));
    expect(error.message).toMatch(/credentials/);
    // Loggers print the cause chain too.
    const printed = inspect(error, { depth: 10 });
    expect(printed).not.toContain(SECRET);
    expect(printed).not.toContain(ACCESS_KEY);
  });

  it('does not repeat secrets from a URL it cannot parse', async () => {
    const error = await failure(() =>
      parseStorageUrl(`s3://bucket?endpoint=http://[::1&region=${SECRET}`),
    );
    expect(inspect(error, { depth: 10 })).not.toContain(SECRET);
    const malformed = await failure(() => parseLeaseUrl(`nats://host:1x?bucket=${SECRET}`));
    expect(malformed.message).toMatch(/malformed/);
    expect(inspect(malformed, { depth: 10 })).not.toContain(SECRET);
  });
});

describe('opening backends from URLs', () => {
  let root: string;
  const closers: (() => Promise<void>)[] = [];

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-url-'));
  });

  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('file: storage keeps each key as a file under the folder', async () => {
    const folder = path.join(root, 'data dir');
    const storage = await openStorageFromUrl(pathToFileURL(folder).href);
    await storage.put('db/log/0001', bytes('changeset'));
    expect(fs.readFileSync(path.join(folder, 'db', 'log', '0001'), 'utf8')).toBe('changeset');
    const again = await openStorageFromUrl(pathToFileURL(folder).href);
    expect(new TextDecoder().decode((await again.get('db/log/0001')) ?? bytes('<missing>'))).toBe(
      'changeset',
    );
  });

  it('file: leases live in leases.sqlite inside the folder, shared by every opener', async () => {
    const url = pathToFileURL(path.join(root, 'leases')).href;
    const first = await openLeaseStoreFromUrl(url);
    closers.push(async () => first.close?.());
    const created = await first.create('db', bytes('record'));
    expect(created.ok).toBe(true);
    expect(fs.existsSync(path.join(root, 'leases', 'leases.sqlite'))).toBe(true);
    const second = await openLeaseStoreFromUrl(url, { busyTimeoutMs: 1000 });
    closers.push(async () => second.close?.());
    const entry = await second.get('db');
    expect(entry?.revision).toBe(created.ok ? created.revision : undefined);
  });

  it('file: leases use a .sqlite path as the file itself', async () => {
    const file = path.join(root, 'custom.sqlite');
    const store = await openLeaseStoreFromUrl(pathToFileURL(file).href);
    closers.push(async () => store.close?.());
    expect((await store.create('db', bytes('x'))).ok).toBe(true);
    expect(fs.existsSync(file)).toBe(true);
    expect(fs.existsSync(path.join(file, 'leases.sqlite'))).toBe(false);
  });

  it('memory: gives a fresh store on every call', async () => {
    const storage = await openStorageFromUrl('memory:');
    const otherStorage = await openStorageFromUrl('memory:');
    await storage.put('k', bytes('v'));
    expect(await storage.get('k')).toEqual(bytes('v'));
    expect(await otherStorage.get('k')).toBeNull();

    const leases = await openLeaseStoreFromUrl('memory:');
    const otherLeases = await openLeaseStoreFromUrl('memory:');
    expect((await leases.create('db', bytes('v'))).ok).toBe(true);
    expect(await otherLeases.get('db')).toBeNull();
  });

  it('rejects a bad URL before loading any adapter', async () => {
    await expect(openStorageFromUrl('s3://')).rejects.toThrow(/no bucket/);
    await expect(openLeaseStoreFromUrl('nats://host')).rejects.toThrow(/no bucket/);
    await expect(openStorageFromUrl('nats://host?bucket=x')).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
  });

  it('nats: connects through the NATS adapter, failing as unavailable when nothing listens', async () => {
    // Port 1 on loopback refuses connections: the store must say unavailable, not hang.
    const opening = openLeaseStoreFromUrl('nats://127.0.0.1:1?bucket=leases', { timeoutMs: 500 });
    await expect(opening).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
  });

  it('s3: storage goes to the endpoint the URL names', async () => {
    // Fixed credentials, so the SDK does not probe instance metadata before connecting.
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = 'test';
    process.env.AWS_SECRET_ACCESS_KEY = 'test';
    try {
      const storage = await openStorageFromUrl(
        's3://bucket/prefix?endpoint=http://127.0.0.1:1&region=us-east-1&forcePathStyle=true',
      );
      const reading = storage.get('k');
      await expect(reading).rejects.toBeInstanceOf(StorageUnavailableError);
      await expect(reading).rejects.toThrow(/127\.0\.0\.1:1/);
    } finally {
      restoreEnv('AWS_ACCESS_KEY_ID', saved.id);
      restoreEnv('AWS_SECRET_ACCESS_KEY', saved.secret);
    }
  });
});
