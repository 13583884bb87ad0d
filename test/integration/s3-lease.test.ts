import { randomBytes } from 'node:crypto';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import {
  createS3LeaseStore,
  openS3LeaseStore,
  type S3LeaseStoreOptions,
  selfTestS3Leases,
} from '../../src/adapters/lease/s3.ts';
import type { CasResult } from '../../src/adapters/lease/types.ts';
import { LeaseStoreUnavailableError, LeaseStoreUnsafeError } from '../../src/errors.ts';
import {
  closedEndpoint,
  createTestBucket,
  emulatorClientOptions,
  type ProxiedRequest,
  type ProxyAction,
  type S3Proxy,
  startS3Proxy,
  type TestBucket,
} from '../support/s3.ts';
import { describeWithService } from '../support/services.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined) => (value ? new TextDecoder().decode(value) : null);

function revisionOf(result: CasResult): string {
  if (!result.ok) throw new Error('expected the write to succeed');
  return result.revision;
}

await describeWithService('s3', 'S3 lease store', (endpoint) => {
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

  function options(url: string, extra: Partial<S3LeaseStoreOptions> = {}): S3LeaseStoreOptions {
    return {
      bucket: bucket.name,
      prefix,
      clientOptions: emulatorClientOptions(url),
      retry: { baseDelayMs: 1 },
      ...extra,
    };
  }

  async function proxy(
    decide: (request: ProxiedRequest) => ProxyAction | undefined | Promise<ProxyAction | undefined>,
  ): Promise<S3Proxy> {
    const started = await startS3Proxy(endpoint, decide);
    proxies.push(started);
    return started;
  }

  const isConditionalPut = (request: ProxiedRequest) =>
    request.method === 'PUT' &&
    (request.headers['if-none-match'] !== undefined || request.headers['if-match'] !== undefined);

  async function storedObject(key: string) {
    const object = await bucket.client.send(
      new GetObjectCommand({ Bucket: bucket.name, Key: `${prefix}/${key}` }),
    );
    return { etag: object.ETag, body: await object.Body?.transformToString() };
  }

  it('hands out the ETag exactly as S3 returns it as the revision', async () => {
    const store = createS3LeaseStore(options(endpoint));
    const created = revisionOf(await store.create('db/app', bytes('record')));
    expect(created).toMatch(/^"[0-9a-f]{32}"$/);
    expect((await storedObject('db/app')).etag).toBe(created);
    const updated = revisionOf(await store.update('db/app', bytes('record 2'), created));
    expect(await store.get('db/app')).toEqual({ value: bytes('record 2'), revision: updated });
  });

  it('a renewal writing the same bytes still moves the revision (ETags are content hashes)', async () => {
    const store = createS3LeaseStore(options(endpoint));
    const record = bytes('{"holder":"n1","epoch":1}');
    const first = revisionOf(await store.create('db/app', record));
    const renewed = revisionOf(await store.update('db/app', record, first));
    expect(renewed).not.toBe(first);
    const stored = await storedObject('db/app');
    expect(stored.body).toMatch(/^hadb-cas\/1 [0-9a-f]{32}\n\{"holder":"n1","epoch":1\}$/);
    expect(await store.update('db/app', record, first)).toEqual({ ok: false, reason: 'conflict' });
  });

  it('returns an object another tool wrote as it is, so the caller can refuse it', async () => {
    await bucket.client.send(
      new PutObjectCommand({ Bucket: bucket.name, Key: `${prefix}/db/app`, Body: 'garbage' }),
    );
    const entry = await createS3LeaseStore(options(endpoint)).get('db/app');
    expect(text(entry?.value)).toBe('garbage');
    expect(entry?.revision).toBe((await storedObject('db/app')).etag);
  });

  for (const kind of ['create', 'update'] as const) {
    it(`${kind}: a write that landed but whose answer was lost is still ours`, async () => {
      const direct = createS3LeaseStore(options(endpoint));
      const before = kind === 'update' ? revisionOf(await direct.create('db/app', bytes('a'))) : '';
      let lost = 0;
      const lossy = await proxy((request) => {
        if (!isConditionalPut(request) || lost > 0) return undefined;
        lost++;
        return { kind: 'forward-then-fail', status: 500, code: 'InternalError' };
      });
      const store = createS3LeaseStore(options(lossy.endpoint));
      const result =
        kind === 'create'
          ? await store.create('db/app', bytes('mine'))
          : await store.update('db/app', bytes('mine'), before);
      expect(lost).toBe(1);
      const revision = revisionOf(result);
      expect(await direct.get('db/app')).toEqual({ value: bytes('mine'), revision });
    });
  }

  it('update: a 409 while the key is unchanged is retried', async () => {
    const direct = createS3LeaseStore(options(endpoint));
    const first = revisionOf(await direct.create('db/app', bytes('a')));
    let conflicts = 0;
    const racy = await proxy((request) => {
      if (!isConditionalPut(request) || conflicts > 0) return undefined;
      conflicts++;
      return { kind: 'fail', status: 409, code: 'ConditionalRequestConflict' };
    });
    const store = createS3LeaseStore(options(racy.endpoint));
    const updated = revisionOf(await store.update('db/app', bytes('b'), first));
    expect(conflicts).toBe(1);
    expect(await direct.get('db/app')).toEqual({ value: bytes('b'), revision: updated });
  });

  it('update: a 409 because another writer won is a conflict', async () => {
    const direct = createS3LeaseStore(options(endpoint));
    const first = revisionOf(await direct.create('db/app', bytes('a')));
    let competitor = '';
    const racy = await proxy(async (request) => {
      if (!isConditionalPut(request) || competitor !== '') return undefined;
      competitor = revisionOf(await direct.update('db/app', bytes('theirs'), first));
      return { kind: 'fail', status: 409, code: 'ConditionalRequestConflict' };
    });
    const store = createS3LeaseStore(options(racy.endpoint));
    expect(await store.update('db/app', bytes('mine'), first)).toEqual({
      ok: false,
      reason: 'conflict',
    });
    expect(await direct.get('db/app')).toEqual({ value: bytes('theirs'), revision: competitor });
  });

  it('self-test passes on the emulator and leaves no scratch objects', async () => {
    const store = await openS3LeaseStore(options(endpoint));
    expect(await store.get('db/app')).toBeNull();
    await selfTestS3Leases(options(endpoint));
    const listed = await bucket.client.send(
      new ListObjectsV2Command({ Bucket: bucket.name, Prefix: `${prefix}/` }),
    );
    expect(listed.Contents ?? []).toEqual([]);
  });

  const ignoring: [string, string[], string][] = [
    ['If-None-Match', ['if-none-match'], 'second create'],
    ['If-Match', ['if-match'], 'stale update'],
  ];
  for (const [condition, headers, step] of ignoring) {
    it(`self-test refuses a service that ignores ${condition}, naming the step`, async () => {
      const careless = await proxy((request) => {
        for (const header of headers) delete request.headers[header];
        return undefined;
      });
      const error = await openS3LeaseStore(options(careless.endpoint)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LeaseStoreUnsafeError);
      expect((error as LeaseStoreUnsafeError).step).toBe(step);
      expect((error as Error).message).toContain(step);
    });
  }

  it('self-test refuses a service whose reads disagree with its writes', async () => {
    const stale = await proxy((request) => {
      // A cache in front of the bucket: every read misses.
      return request.method === 'GET' && !request.url.includes('list-type')
        ? { kind: 'fail', status: 404, code: 'NoSuchKey' }
        : undefined;
    });
    const error = await selfTestS3Leases(options(stale.endpoint)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseStoreUnsafeError);
    expect((error as LeaseStoreUnsafeError).step).toBe('read after create');
  });

  it('a missing bucket is an error, never "no lease" or a conflict', async () => {
    const store = createS3LeaseStore(options(endpoint, { bucket: `${bucket.name}-missing` }));
    for (const call of [
      () => store.get('db/app'),
      () => store.create('db/app', bytes('x')),
      () => store.update('db/app', bytes('x'), '"0123"'),
    ]) {
      await expect(call()).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
    }
  });

  it('a closed port fails calls and the self-test with LeaseStoreUnavailableError, quickly', async () => {
    const url = await closedEndpoint();
    const store = createS3LeaseStore(options(url));
    const started = performance.now();
    for (const call of [
      () => store.get('db/app'),
      () => store.create('db/app', bytes('x')),
      () => store.update('db/app', bytes('x'), '"0123"'),
    ]) {
      const error = await call().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(LeaseStoreUnavailableError);
      expect((error as Error).cause).toBeDefined();
    }
    await expect(openS3LeaseStore(options(url))).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
    expect(performance.now() - started).toBeLessThan(2000);
  });
});
