import { randomBytes } from 'node:crypto';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { CircuitBreaker } from '../../src/adapters/retry.ts';
import { createS3Client } from '../../src/adapters/s3-client.ts';
import { createS3Storage, type S3StorageOptions } from '../../src/adapters/storage/s3.ts';
import { StorageUnavailableError } from '../../src/errors.ts';
import {
  closedEndpoint,
  createTestBucket,
  emulatorClientOptions,
  type S3Proxy,
  startResettingServer,
  startS3Proxy,
  startSilentServer,
  type TestBucket,
} from '../support/s3.ts';
import { describeWithService } from '../support/services.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (body: Uint8Array | null) => (body === null ? null : new TextDecoder().decode(body));

await describeWithService('s3', 'S3 storage', (endpoint) => {
  let bucket: TestBucket;
  let prefix: string;
  const proxies: S3Proxy[] = [];

  beforeAll(async () => {
    bucket = await createTestBucket(endpoint);
  });
  afterAll(async () => {
    for (const proxy of proxies.splice(0)) await proxy.close();
    await bucket.remove();
  });
  beforeEach(() => {
    prefix = `t-${randomBytes(6).toString('hex')}`;
  });

  function storageAt(url: string, extra: Partial<S3StorageOptions> = {}) {
    return createS3Storage({
      bucket: bucket.name,
      prefix,
      clientOptions: emulatorClientOptions(url),
      ...extra,
    });
  }

  async function proxy(decide: Parameters<typeof startS3Proxy>[1]): Promise<S3Proxy> {
    const started = await startS3Proxy(endpoint, decide);
    proxies.push(started);
    return started;
  }

  async function rawKeys(): Promise<string[]> {
    const page = await bucket.client.send(new ListObjectsV2Command({ Bucket: bucket.name }));
    return (page.Contents ?? []).flatMap((object) => (object.Key ? [object.Key] : []));
  }

  it('stores each key as prefix/key and lists it back without the prefix', async () => {
    const storage = storageAt(endpoint);
    await storage.put('db/log/0001', bytes('one'));
    expect(await storage.putIfAbsent('db/log/0002', bytes('two'))).toBe(true);
    const stored = (await rawKeys()).filter((key) => key.startsWith(`${prefix}/`));
    expect(stored).toEqual([`${prefix}/db/log/0001`, `${prefix}/db/log/0002`]);
    expect(await storage.list('db/')).toEqual({
      objects: [
        { key: 'db/log/0001', size: 3 },
        { key: 'db/log/0002', size: 3 },
      ],
    });
    // Another deployment's prefix in the same bucket sees none of it.
    const neighbour = createS3Storage({
      bucket: bucket.name,
      prefix: `${prefix}-other`,
      clientOptions: emulatorClientOptions(endpoint),
    });
    expect(await neighbour.list('')).toEqual({ objects: [] });
    expect(await neighbour.get('db/log/0001')).toBeNull();
  });

  it('skips objects other tools wrote under names that are not valid keys', async () => {
    const storage = storageAt(endpoint);
    for (const name of ['a', 'b//c', 'b/./d', 'e']) {
      await bucket.client.send(
        new PutObjectCommand({ Bucket: bucket.name, Key: `${prefix}/${name}`, Body: 'x' }),
      );
    }
    const first = await storage.list('', { limit: 2 });
    expect(first.objects.map((object) => object.key)).toEqual(['a', 'e']);
    expect(first.nextStartAfter).toBeUndefined();
  });

  it('putIfAbsent: a write that landed but whose answer was lost still counts as ours', async () => {
    let failed = 0;
    const lossy = await proxy((request) => {
      if (request.method !== 'PUT' || request.headers['if-none-match'] !== '*' || failed > 0) {
        return undefined;
      }
      failed++;
      return { kind: 'forward-then-fail', status: 500, code: 'InternalError' };
    });
    const storage = storageAt(lossy.endpoint, { retry: { baseDelayMs: 1 } });
    expect(await storage.putIfAbsent('fence/0001', bytes('mine'))).toBe(true);
    expect(failed).toBe(1);
    // Someone else's body at the key is still a refusal.
    expect(await storage.putIfAbsent('fence/0001', bytes('other'))).toBe(false);
    expect(text(await storageAt(endpoint).get('fence/0001'))).toBe('mine');
  });

  it('putIfAbsent: a lost answer is no win when the key holds another body', async () => {
    await storageAt(endpoint).put('fence/0001', bytes('theirs'));
    let failed = 0;
    const lossy = await proxy((request) => {
      if (request.method !== 'PUT' || failed > 0) return undefined;
      failed++;
      return { kind: 'forward-then-fail', status: 503, code: 'SlowDown' };
    });
    const storage = storageAt(lossy.endpoint, { retry: { baseDelayMs: 1 } });
    expect(await storage.putIfAbsent('fence/0001', bytes('mine'))).toBe(false);
    expect(text(await storageAt(endpoint).get('fence/0001'))).toBe('theirs');
  });

  it('putIfAbsent: a 409 ConditionalRequestConflict is re-checked and retried', async () => {
    let conflicts = 0;
    const racy = await proxy((request) => {
      if (request.method !== 'PUT' || conflicts >= 2) return undefined;
      conflicts++;
      return { kind: 'fail', status: 409, code: 'ConditionalRequestConflict' };
    });
    const storage = storageAt(racy.endpoint);
    expect(await storage.putIfAbsent('fence/0001', bytes('mine'))).toBe(true);
    expect(conflicts).toBe(2);
    expect(text(await storage.get('fence/0001'))).toBe('mine');
  });

  it('putIfAbsent: 32 concurrent writers, exactly one wins', async () => {
    const storage = storageAt(endpoint);
    const results = await Promise.all(
      Array.from({ length: 32 }, (_, i) => storage.putIfAbsent('fence/race', bytes(`racer ${i}`))),
    );
    const winners = results.flatMap((won, i) => (won ? [i] : []));
    expect(winners).toHaveLength(1);
    expect(text(await storage.get('fence/race'))).toBe(`racer ${winners[0]}`);
  });

  it('deletes in batches of at most 1000 keys, ignoring missing ones', async () => {
    const batchSizes: number[] = [];
    const strict = await proxy((request) => {
      if (request.method !== 'POST' || !request.url.includes('delete')) return undefined;
      const keys = request.body.toString().match(/<Key>/g)?.length ?? 0;
      batchSizes.push(keys);
      // S3 refuses more than 1000 keys per DeleteObjects; the emulator does not check.
      return keys > 1000 ? { kind: 'fail', status: 400, code: 'MalformedXML' } : undefined;
    });
    const storage = storageAt(strict.endpoint);
    const keys = Array.from({ length: 2500 }, (_, i) => `log/${String(i).padStart(4, '0')}`);
    for (const index of [0, 999, 1000, 2499]) await storage.put(keys[index] ?? '', bytes('x'));
    await storage.put('keep', bytes('x'));
    await storage.delete(keys);
    expect(batchSizes).toEqual([1000, 1000, 500]);
    expect(await storage.list('')).toEqual({ objects: [{ key: 'keep', size: 1 }] });
  });

  it('reads ranges as S3 byte ranges, end exclusive', async () => {
    const storage = storageAt(endpoint);
    await storage.put('k', bytes('0123456789'));
    const object = await bucket.client.send(
      new GetObjectCommand({ Bucket: bucket.name, Key: `${prefix}/k`, Range: 'bytes=2-4' }),
    );
    expect(await object.Body?.transformToString()).toBe('234');
    expect(text(await storage.get('k', { start: 2, end: 5 }))).toBe('234');
    expect(text(await storage.get('k', { start: 8, end: 50 }))).toBe('89');
    expect(text(await storage.get('k', { start: 10 }))).toBe('');
    expect(await storage.get('missing', { start: 3, end: 3 })).toBeNull();
  });

  it('a missing bucket is an error, not an empty bucket', async () => {
    const storage = createS3Storage({
      bucket: `${bucket.name}-missing`,
      clientOptions: emulatorClientOptions(endpoint),
    });
    await expect(storage.get('k')).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(storage.list('')).rejects.toBeInstanceOf(StorageUnavailableError);
  });

  it('a closed port fails every call with StorageUnavailableError within moments', async () => {
    const storage = storageAt(await closedEndpoint(), { retry: { baseDelayMs: 10 } });
    const started = performance.now();
    for (const call of [
      () => storage.put('k', bytes('x')),
      () => storage.putIfAbsent('k', bytes('x')),
      () => storage.get('k'),
      () => storage.list(''),
      () => storage.delete(['k']),
    ]) {
      const error = await call().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(StorageUnavailableError);
      expect((error as Error).cause).toBeDefined();
    }
    // Refused connections, a few short backoffs, then the open breaker: no timeout is waited for.
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('an outage opens the breaker: further calls fail fast without a connection', async () => {
    const down = await startResettingServer();
    try {
      const breaker = new CircuitBreaker({ failureThreshold: 4, coolDownMs: 60_000 });
      const storage = storageAt(down.endpoint, { breaker, retry: { baseDelayMs: 1 } });
      for (let call = 0; call < 20; call++) {
        await expect(storage.get('k')).rejects.toBeInstanceOf(StorageUnavailableError);
      }
      expect(breaker.state).toBe('open');
      // Four attempts of the first call; the other 19 calls never connected.
      expect(down.connections()).toBe(4);
    } finally {
      await down.close();
    }
  });

  it('a service that never answers times out after requestTimeoutMs, per attempt', async () => {
    const silent = await startSilentServer();
    try {
      const storage = createS3Storage({
        bucket: bucket.name,
        client: createS3Client(emulatorClientOptions(silent.endpoint, { requestTimeoutMs: 200 })),
        retry: { maxAttempts: 2, baseDelayMs: 1 },
      });
      const started = performance.now();
      await expect(storage.get('k')).rejects.toBeInstanceOf(StorageUnavailableError);
      const elapsed = performance.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(350);
      expect(elapsed).toBeLessThan(3000);
    } finally {
      await silent.close();
    }
  });
});
