import type { S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { createS3LeaseStore } from '../../src/adapters/lease/s3.ts';
import { CircuitBreaker } from '../../src/adapters/retry.ts';
import { createS3Storage } from '../../src/adapters/storage/s3.ts';
import {
  BreakerOpenError,
  LeaseStoreUnavailableError,
  StorageUnavailableError,
} from '../../src/errors.ts';

/** An S3 client whose every call fails as an overloaded service does; counts the calls. */
function unavailableClient(): { client: S3Client; calls: () => number } {
  let calls = 0;
  const client = {
    send: async () => {
      calls++;
      throw Object.assign(new Error('Service Unavailable'), {
        name: 'ServiceUnavailable',
        $metadata: { httpStatusCode: 503 },
      });
    },
  } as unknown as S3Client;
  return { client, calls: () => calls };
}

/** Fails every call fast once open (a long cool-down), after one attempt per call. */
function openingBreaker(): CircuitBreaker {
  return new CircuitBreaker({ failureThreshold: 1, coolDownMs: 60_000 });
}

describe('an open circuit breaker, as the S3 adapters report it', () => {
  it('storage: StorageUnavailableError with the BreakerOpenError as cause, no call made', async () => {
    const { client, calls } = unavailableClient();
    const storage = createS3Storage({
      bucket: 'b',
      client,
      breaker: openingBreaker(),
      retry: { maxAttempts: 1 },
    });
    await expect(storage.get('k')).rejects.toBeInstanceOf(StorageUnavailableError);
    const made = calls();
    const error = await storage.get('k').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(StorageUnavailableError);
    expect((error as Error).cause).toBeInstanceOf(BreakerOpenError);
    expect(calls()).toBe(made);
  });

  it('leases: LeaseStoreUnavailableError with the BreakerOpenError as cause, no call made', async () => {
    const { client, calls } = unavailableClient();
    const leases = createS3LeaseStore({
      bucket: 'b',
      client,
      breaker: openingBreaker(),
      retry: { maxAttempts: 1 },
    });
    await expect(leases.get('k')).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
    const made = calls();
    const error = await leases.get('k').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(LeaseStoreUnavailableError);
    expect((error as Error).cause).toBeInstanceOf(BreakerOpenError);
    expect(calls()).toBe(made);
  });
});
