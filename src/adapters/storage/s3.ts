import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { BreakerOpenError, HadbError, StorageUnavailableError } from '../../errors.ts';
import {
  describeS3Error,
  isTransientS3Error,
  openS3Connection,
  type S3Connection,
  type S3ConnectionOptions,
  s3ErrorName,
  s3Status,
} from '../s3-client.ts';
import { assertValidKey, assertValidRange, isValidKey, pageOfSortedKeys } from './keys.ts';
import {
  type ByteRange,
  DEFAULT_LIST_LIMIT,
  type ListedObject,
  type StorageBackend,
} from './types.ts';

/** Options of `createS3Storage`. */
export interface S3StorageOptions extends S3ConnectionOptions {
  bucket: string;
  /** Every key is stored as `prefix/key`, so several deployments can share a bucket. */
  prefix?: string;
}

/** DeleteObjects takes at most this many keys per request. */
const DELETE_BATCH = 1000;
/** ListObjectsV2 returns at most this many keys per request. */
const LIST_PAGE_MAX = 1000;
/** A 409 ConditionalRequestConflict asks to retry; this many times at most. */
const MAX_CONFLICT_RETRIES = 3;

/**
 * Object storage in an S3 bucket (or an S3-compatible service).
 *
 * `putIfAbsent` is a conditional PUT (`If-None-Match: *`), which S3 executes atomically. A call
 * whose outcome was unknown (a timeout, a 5xx) is retried; if the retry then finds the key taken,
 * the object is read back, and a byte-identical object counts as ours, so a lost response does
 * not make a leader believe it was fenced.
 */
export function createS3Storage(options: S3StorageOptions): StorageBackend {
  const { bucket } = options;
  const base = options.prefix ?? '';
  if (base !== '') assertValidKey(base);
  const connection: S3Connection = openS3Connection(options);
  const { client } = connection;

  const objectKey = (key: string): string => {
    assertValidKey(key);
    return base === '' ? key : `${base}/${key}`;
  };
  const fromObjectKey = (objectKey: string): string =>
    base === '' ? objectKey : objectKey.slice(base.length + 1);

  async function guarded<T>(what: string, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      // An open breaker is an outage like any other to the caller.
      if (error instanceof HadbError && !(error instanceof BreakerOpenError)) throw error;
      throw new StorageUnavailableError(`${what} in bucket ${bucket}: ${describeS3Error(error)}`, {
        cause: error,
      });
    }
  }

  /** The object's bytes (within `Range`); rejects with the SDK's error, NoSuchKey included. */
  function download(Key: string, Range?: string): Promise<Uint8Array> {
    return connection.call(async () => {
      const answer = await client.send(
        new GetObjectCommand({ Bucket: bucket, Key, ...(Range === undefined ? {} : { Range }) }),
      );
      // Inside the retried call: a connection cut while streaming the body is retried too.
      return answer.Body === undefined ? new Uint8Array() : answer.Body.transformToByteArray();
    });
  }

  async function read(key: string, range: ByteRange | undefined): Promise<Uint8Array | null> {
    const Key = objectKey(key);
    if (range?.end !== undefined && range.end === range.start) {
      // An empty range has no Range header form: only existence is asked.
      return (await exists(Key)) ? new Uint8Array() : null;
    }
    const Range =
      range === undefined
        ? undefined
        : `bytes=${range.start}-${range.end === undefined ? '' : range.end - 1}`;
    try {
      return await download(Key, Range);
    } catch (error) {
      if (isMissing(error)) return null;
      // The range starts at or past the end (or the object is empty): clamped, nothing to read.
      if (s3Status(error) === 416) return new Uint8Array();
      throw error;
    }
  }

  async function exists(Key: string): Promise<boolean> {
    try {
      await connection.call(() => client.send(new HeadObjectCommand({ Bucket: bucket, Key })));
      return true;
    } catch (error) {
      if (isMissing(error)) return false;
      throw error;
    }
  }

  /** Whether `Key` holds exactly `body`; null when it does not exist. */
  async function holds(Key: string, body: Uint8Array): Promise<boolean | null> {
    try {
      const stored = await download(Key);
      return Buffer.from(stored).equals(Buffer.from(body.buffer, body.byteOffset, body.byteLength));
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  return {
    description: `s3://${bucket}${base === '' ? '' : `/${base}`}`,
    async put(key, body) {
      const Key = objectKey(key);
      await guarded(`put ${JSON.stringify(key)}`, () =>
        connection.call(() =>
          client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body })),
        ),
      );
    },

    async putIfAbsent(key, body) {
      const Key = objectKey(key);
      return guarded(`putIfAbsent ${JSON.stringify(key)}`, async () => {
        let mayHaveLanded = false;
        for (let conflicts = 0; ; conflicts++) {
          try {
            await connection.call(() =>
              client
                .send(new PutObjectCommand({ Bucket: bucket, Key, Body: body, IfNoneMatch: '*' }))
                .catch((error: unknown) => {
                  if (isTransientS3Error(error)) mayHaveLanded = true;
                  throw error;
                }),
            );
            return true;
          } catch (error) {
            const name = s3ErrorName(error);
            if (name === 'PreconditionFailed' || s3Status(error) === 412) {
              // Taken: by us, if an earlier attempt landed without its answer reaching us.
              return mayHaveLanded ? (await holds(Key, body)) === true : false;
            }
            if (name !== 'ConditionalRequestConflict') throw error;
            // A concurrent write to the key raced ours; S3 asks to look and try again.
            const held = await holds(Key, body);
            if (held !== null) return held;
            if (conflicts >= MAX_CONFLICT_RETRIES) throw error;
          }
        }
      });
    },

    async get(key, range) {
      assertValidRange(range);
      return guarded(`get ${JSON.stringify(key)}`, () => read(key, range));
    },

    async list(prefix, listOptions = {}) {
      // Validates the limit before any request.
      pageOfSortedKeys([], prefix, listOptions);
      const limit = listOptions.limit ?? DEFAULT_LIST_LIMIT;
      const fullPrefix = base === '' ? prefix : `${base}/${prefix}`;
      const startAfter =
        listOptions.startAfter === undefined
          ? undefined
          : base === ''
            ? listOptions.startAfter
            : `${base}/${listOptions.startAfter}`;
      return guarded(`list ${JSON.stringify(prefix)}`, async () => {
        const objects: ListedObject[] = [];
        let continuationToken: string | undefined;
        let lastSeen: string | undefined;
        for (;;) {
          const answer = await connection.call(() =>
            client.send(
              new ListObjectsV2Command({
                Bucket: bucket,
                Prefix: fullPrefix,
                MaxKeys: Math.min(LIST_PAGE_MAX, limit - objects.length),
                ...(continuationToken === undefined
                  ? startAfter === undefined
                    ? {}
                    : { StartAfter: startAfter }
                  : { ContinuationToken: continuationToken }),
              }),
            ),
          );
          for (const object of answer.Contents ?? []) {
            if (object.Key === undefined) continue;
            lastSeen = object.Key;
            const key = fromObjectKey(object.Key);
            // Put there by other tools: a name no key can have is not an object of ours.
            if (!isValidKey(key)) continue;
            objects.push({ key, size: object.Size ?? 0 });
          }
          const more = answer.IsTruncated === true && answer.NextContinuationToken !== undefined;
          if (!more) return { objects };
          if (objects.length >= limit && lastSeen !== undefined) {
            return { objects, nextStartAfter: fromObjectKey(lastSeen) };
          }
          continuationToken = answer.NextContinuationToken;
        }
      });
    },

    async delete(keys) {
      const objectKeys = keys.map(objectKey);
      await guarded(`delete ${keys.length} keys`, async () => {
        for (let start = 0; start < objectKeys.length; start += DELETE_BATCH) {
          const batch = objectKeys.slice(start, start + DELETE_BATCH);
          const answer = await connection.call(() =>
            client.send(
              new DeleteObjectsCommand({
                Bucket: bucket,
                Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
              }),
            ),
          );
          // Deleting a missing key succeeds on S3; some services report it anyway.
          const failures = (answer.Errors ?? []).filter((failure) => failure.Code !== 'NoSuchKey');
          const first = failures[0];
          if (first !== undefined) {
            throw new StorageUnavailableError(
              `delete: ${failures.length} of ${batch.length} keys not deleted in bucket ${bucket}, first ${JSON.stringify(first.Key)}: ${first.Code} ${first.Message}`,
            );
          }
        }
      });
    },
  };
}

function isMissing(error: unknown): boolean {
  const name = s3ErrorName(error);
  return (
    name === 'NoSuchKey' ||
    name === 'NotFound' ||
    (s3Status(error) === 404 && name !== 'NoSuchBucket')
  );
}
