import { randomBytes, randomUUID } from 'node:crypto';
import { DeleteObjectsCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import {
  BreakerOpenError,
  HadbError,
  LeaseStoreUnavailableError,
  LeaseStoreUnsafeError,
} from '../../errors.ts';
import {
  describeS3Error,
  isTransientS3Error,
  openS3Connection,
  type S3Connection,
  type S3ConnectionOptions,
  s3ErrorName,
  s3Status,
} from '../s3-client.ts';
import { assertValidKey } from '../storage/keys.ts';
import { type CasResult, CONFLICT, type LeaseEntry, type LeaseStore } from './types.ts';

/** Options of the S3 lease store (conditional writes on a bucket). */
export interface S3LeaseStoreOptions extends S3ConnectionOptions {
  bucket: string;
  /** Every lease key is stored as `prefix/key`. */
  prefix?: string;
}

/** Lease calls want few, short attempts: the lease timer matters more than eventual success. */
const LEASE_RETRY = { maxAttempts: 2, baseDelayMs: 50, maxDelayMs: 200 };
const LEASE_CLIENT = { requestTimeoutMs: 2000 };
/** A 409 ConditionalRequestConflict asks to retry; this many times at most. */
const MAX_CONFLICT_RETRIES = 3;
/** An ETag as S3 returns it (quoted), or bare as some compatible services do. Nothing else. */
const ETAG = /^(?:"[!#-~]+"|[!#-~]+)$/;

/**
 * Each stored object is `hadb-cas/1 <32 hex digits>\n` then the value. S3's ETag is the MD5 of
 * the bytes: without the random part, a renewal writing the same record would keep its revision
 * (followers would take a live lease), and an A-B-A sequence would revive an old revision.
 */
const ENVELOPE_TAG = 'hadb-cas/1 ';
const NONCE_HEX_DIGITS = 32;
const ENVELOPE_BYTES = ENVELOPE_TAG.length + NONCE_HEX_DIGITS + 1;
const ENVELOPE = /^hadb-cas\/1 [0-9a-f]{32}\n$/;

/**
 * A lease store on an S3 bucket: a revision is the object's ETag, exactly as S3 returns it;
 * `create` is a PUT with `If-None-Match: *`, `update` a PUT with `If-Match: <revision>`, which S3
 * executes atomically (412 when the condition fails, 404 when `If-Match` meets no object).
 *
 * A write whose answer was lost (a timeout, a 5xx) is retried; if the retry meets a conflict, the
 * object is read back and counts as ours when it holds our bytes (random per write), so a lost
 * answer never turns a won lease into a conflict. A 409 ConditionalRequestConflict (a concurrent
 * write raced ours) is resolved the same way, retrying while the key is still as we expected.
 *
 * Not every S3-compatible service honours these conditions: open it with
 * {@link openS3LeaseStore}, which runs {@link selfTestS3Leases} first. No `watch`: poll `get`.
 */
export function createS3LeaseStore(options: S3LeaseStoreOptions): LeaseStore {
  return new S3LeaseStore(options).store;
}

/** {@link createS3LeaseStore} after the self-test passed (unless `selfTest: false`). */
export async function openS3LeaseStore(
  options: S3LeaseStoreOptions & { selfTest?: boolean },
): Promise<LeaseStore> {
  const { selfTest = true, ...storeOptions } = options;
  const s3 = new S3LeaseStore(storeOptions);
  if (selfTest) await s3.selfTest();
  return s3.store;
}

/**
 * Checks that the bucket really does compare-and-swap, on a fresh scratch key under `prefix`:
 * create, a second create rejected, read back, update at the current revision, update at a stale
 * revision rejected, update of a missing key rejected. Throws {@link LeaseStoreUnsafeError} naming
 * the failing step, or {@link LeaseStoreUnavailableError} when the service cannot be reached.
 * Removes its scratch objects (best effort).
 */
export async function selfTestS3Leases(options: S3LeaseStoreOptions): Promise<void> {
  await new S3LeaseStore(options).selfTest();
}

class S3LeaseStore {
  readonly #bucket: string;
  readonly #base: string;
  readonly #connection: S3Connection;

  constructor(options: S3LeaseStoreOptions) {
    this.#bucket = options.bucket;
    this.#base = options.prefix ?? '';
    if (this.#base !== '') assertValidKey(this.#base);
    this.#connection = openS3Connection(options, {
      retry: LEASE_RETRY,
      clientOptions: LEASE_CLIENT,
    });
    Object.assign(this.store, {
      description: `s3://${this.#bucket}${this.#base === '' ? '' : `/${this.#base}`}`,
    });
  }

  readonly store: LeaseStore = {
    get: (key) =>
      this.#guarded(`get ${JSON.stringify(key)}`, () => this.#read(this.#objectKey(key))),
    create: (key, value) =>
      this.#guarded(`create ${JSON.stringify(key)}`, () =>
        this.#write(this.#objectKey(key), value, null),
      ),
    update: (key, value, revision) =>
      this.#guarded(`update ${JSON.stringify(key)}`, async () => {
        const objectKey = this.#objectKey(key);
        // An empty If-Match would be dropped by HTTP clients, making the write unconditional.
        if (!ETAG.test(revision)) return CONFLICT;
        return this.#write(objectKey, value, revision);
      }),
  };

  async selfTest(): Promise<void> {
    const scratch = `hadb-self-test/${randomUUID()}`;
    const absent = `${scratch}-absent`;
    const { store } = this;
    const where = `bucket ${this.#bucket}${this.#base === '' ? '' : ` under ${this.#base}/`}`;
    const value = (text: string) => new TextEncoder().encode(`self-test ${text}`);
    const holds = (entry: LeaseEntry | null, revision: string, text: string) =>
      entry !== null && entry.revision === revision && sameBytes(entry.value, value(text));
    const unsafe = (step: string, what: string) =>
      new LeaseStoreUnsafeError(step, `${what} (${where}); leases there would not be safe`);
    const expectConflict = async (step: string, write: Promise<CasResult>) => {
      if ((await write).ok) throw unsafe(step, 'a conditional write that must fail was accepted');
    };
    try {
      const created = await store.create(scratch, value('created'));
      if (!created.ok) throw unsafe('create', 'creating a new key conflicted');
      await expectConflict('second create', store.create(scratch, value('second')));
      if (!holds(await store.get(scratch), created.revision, 'created')) {
        throw unsafe(
          'read after create',
          'a read did not return the created value at its revision',
        );
      }
      const updated = await store.update(scratch, value('updated'), created.revision);
      if (!updated.ok) throw unsafe('update', 'an update at the current revision conflicted');
      if (updated.revision === created.revision) {
        throw unsafe('update', 'an update did not change the revision');
      }
      await expectConflict('stale update', store.update(scratch, value('stale'), created.revision));
      if (!holds(await store.get(scratch), updated.revision, 'updated')) {
        throw unsafe(
          'read after update',
          'a read did not return the updated value at its revision',
        );
      }
      await expectConflict(
        'update of a missing key',
        store.update(absent, value('absent'), updated.revision),
      );
    } finally {
      await this.#remove([scratch, absent]).catch(() => undefined);
    }
  }

  #objectKey(key: string): string {
    assertValidKey(key);
    return this.#base === '' ? key : `${this.#base}/${key}`;
  }

  async #guarded<T>(what: string, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      // An open breaker is an outage like any other to the caller.
      if (error instanceof HadbError && !(error instanceof BreakerOpenError)) throw error;
      throw new LeaseStoreUnavailableError(
        `${what} in bucket ${this.#bucket}: ${describeS3Error(error)}`,
        { cause: error },
      );
    }
  }

  async #read(objectKey: string): Promise<LeaseEntry | null> {
    const { client } = this.#connection;
    try {
      return await this.#connection.call(async () => {
        const answer = await client.send(
          new GetObjectCommand({ Bucket: this.#bucket, Key: objectKey }),
        );
        const body = await answer.Body?.transformToByteArray();
        if (answer.ETag === undefined)
          throw new LeaseStoreUnavailableError(`${objectKey}: the response has no ETag`);
        return { value: unwrap(body ?? new Uint8Array()), revision: answer.ETag };
      });
    } catch (error) {
      if (s3ErrorName(error) === 'NoSuchKey') return null;
      throw error;
    }
  }

  /** The stored bytes and ETag of `objectKey`, or null when it does not exist. */
  async #readRaw(objectKey: string): Promise<{ body: Uint8Array; etag: string } | null> {
    const { client } = this.#connection;
    try {
      return await this.#connection.call(async () => {
        const answer = await client.send(
          new GetObjectCommand({ Bucket: this.#bucket, Key: objectKey }),
        );
        const body = (await answer.Body?.transformToByteArray()) ?? new Uint8Array();
        if (answer.ETag === undefined)
          throw new LeaseStoreUnavailableError(`${objectKey}: the response has no ETag`);
        return { body, etag: answer.ETag };
      });
    } catch (error) {
      if (s3ErrorName(error) === 'NoSuchKey') return null;
      throw error;
    }
  }

  /** A conditional PUT: absent when `revision` is null, else at that ETag. */
  async #write(objectKey: string, value: Uint8Array, revision: string | null): Promise<CasResult> {
    const { client } = this.#connection;
    const body = wrap(value);
    let mayHaveLanded = false;
    for (let conflicts = 0; ; conflicts++) {
      try {
        const answer = await this.#connection.call(() =>
          client
            .send(
              new PutObjectCommand({
                Bucket: this.#bucket,
                Key: objectKey,
                Body: body,
                ...(revision === null ? { IfNoneMatch: '*' } : { IfMatch: revision }),
              }),
            )
            .catch((error: unknown) => {
              if (isTransientS3Error(error)) mayHaveLanded = true;
              throw error;
            }),
        );
        if (answer.ETag === undefined) {
          throw new LeaseStoreUnavailableError(
            `write ${JSON.stringify(objectKey)} in bucket ${this.#bucket}: the response has no ETag`,
          );
        }
        return { ok: true, revision: answer.ETag };
      } catch (error) {
        const name = s3ErrorName(error);
        const status = s3Status(error);
        const failedCondition =
          name === 'PreconditionFailed' ||
          status === 412 ||
          // If-Match on a missing key; a missing bucket is no answer about the key.
          (revision !== null && status === 404 && name !== 'NoSuchBucket');
        if (failedCondition) {
          if (!mayHaveLanded) return CONFLICT;
          // Taken: by us, if an earlier attempt landed without its answer reaching us.
          const current = await this.#readRaw(objectKey);
          return current !== null && sameBytes(current.body, body)
            ? { ok: true, revision: current.etag }
            : CONFLICT;
        }
        if (name !== 'ConditionalRequestConflict') throw error;
        // A concurrent write raced ours: look, and try again while the key is as we expected.
        const current = await this.#readRaw(objectKey);
        if (current !== null && sameBytes(current.body, body)) {
          return { ok: true, revision: current.etag };
        }
        const asExpected = revision === null ? current === null : current?.etag === revision;
        if (!asExpected) return CONFLICT;
        if (conflicts >= MAX_CONFLICT_RETRIES) throw error;
      }
    }
  }

  async #remove(objectKeys: string[]): Promise<void> {
    const { client } = this.#connection;
    await this.#connection.call(() =>
      client.send(
        new DeleteObjectsCommand({
          Bucket: this.#bucket,
          Delete: {
            Objects: objectKeys.map((key) => ({ Key: this.#objectKey(key) })),
            Quiet: true,
          },
        }),
      ),
    );
  }
}

function wrap(value: Uint8Array): Uint8Array {
  const header = `${ENVELOPE_TAG}${randomBytes(NONCE_HEX_DIGITS / 2).toString('hex')}\n`;
  const body = new Uint8Array(ENVELOPE_BYTES + value.byteLength);
  body.set(new TextEncoder().encode(header), 0);
  body.set(value, ENVELOPE_BYTES);
  return body;
}

/** The value inside our envelope; an object written by something else is returned whole. */
function unwrap(body: Uint8Array): Uint8Array {
  if (body.byteLength < ENVELOPE_BYTES) return body;
  const header = new TextDecoder().decode(body.subarray(0, ENVELOPE_BYTES));
  return ENVELOPE.test(header) ? body.slice(ENVELOPE_BYTES) : body;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  );
}
