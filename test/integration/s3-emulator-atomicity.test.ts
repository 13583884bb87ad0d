/**
 * The S3 emulator must execute conditional writes atomically, as S3 does, or every S3 test of
 * fencing and leases above it proves nothing. moto checks the condition and then writes in two
 * steps; `scripts/services` serializes its requests to close that window. Raw SDK calls here, not
 * our adapters: this checks the emulator itself.
 */
import { randomBytes } from 'node:crypto';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestBucket, type TestBucket } from '../support/s3.ts';
import { describeWithService } from '../support/services.ts';

const RACERS = 32;
/**
 * Against moto without the serialization, one create round in four to seven and most update rounds
 * let two or three writers through: each test below failed there in 5 runs of 5.
 */
const CREATE_ROUNDS = 10;
const UPDATE_ROUNDS = 10;
const BODY_BYTES = 1024;

type Outcome = { won: true; etag: string } | { won: false; code: string };

await describeWithService('s3', 'S3 emulator: conditional writes are atomic', (endpoint) => {
  let bucket: TestBucket;
  let client: S3Client;

  beforeAll(async () => {
    bucket = await createTestBucket(endpoint);
    client = bucket.client;
  });
  afterAll(async () => {
    await bucket.remove();
  });

  async function put(key: string, condition: object): Promise<Outcome> {
    try {
      const answer = await client.send(
        new PutObjectCommand({
          Bucket: bucket.name,
          Key: key,
          // Distinct bodies: equal ones would have equal ETags and could hide a lost update.
          Body: randomBytes(BODY_BYTES),
          ...condition,
        }),
      );
      return { won: true, etag: answer.ETag ?? '' };
    } catch (error) {
      return { won: false, code: (error as Error).name };
    }
  }

  it(`${RACERS} concurrent If-None-Match: * PUTs of one key: exactly one succeeds, ${CREATE_ROUNDS} times`, async () => {
    for (let round = 0; round < CREATE_ROUNDS; round++) {
      const key = `create/${randomBytes(6).toString('hex')}`;
      const outcomes = await Promise.all(
        Array.from({ length: RACERS }, () => put(key, { IfNoneMatch: '*' })),
      );
      expect(
        outcomes.filter((outcome) => outcome.won),
        `round ${round}`,
      ).toHaveLength(1);
      const codes = new Set(outcomes.flatMap((outcome) => (outcome.won ? [] : [outcome.code])));
      expect([...codes]).toEqual(['PreconditionFailed']);
    }
  });

  it(`${RACERS} concurrent If-Match PUTs at one ETag: exactly one succeeds, ${UPDATE_ROUNDS} times`, async () => {
    const key = `update/${randomBytes(6).toString('hex')}`;
    const start = await put(key, {});
    let etag = start.won ? start.etag : '';
    for (let round = 0; round < UPDATE_ROUNDS; round++) {
      const outcomes = await Promise.all(
        Array.from({ length: RACERS }, () => put(key, { IfMatch: etag })),
      );
      const winners = outcomes.flatMap((outcome) => (outcome.won ? [outcome.etag] : []));
      expect(winners, `round ${round}`).toHaveLength(1);
      expect(winners[0]).not.toBe(etag);
      etag = winners[0] ?? '';
    }
  });
});
