import { afterAll } from 'vitest';
import { createS3Client } from '../../src/adapters/s3-client.ts';
import { createS3Storage } from '../../src/adapters/storage/s3.ts';
import {
  closedEndpoint,
  createTestBucket,
  emulatorClientOptions,
  type TestBucket,
} from '../support/s3.ts';
import { describeWithService } from '../support/services.ts';
import { storageContract } from './storage.contract.ts';

await describeWithService('s3', 'S3 storage contract', (endpoint) => {
  // One bucket for the file: every contract test writes under its own random prefix.
  let bucket: Promise<TestBucket> | undefined;
  afterAll(async () => {
    await (await bucket)?.remove();
  });

  storageContract(async () => {
    bucket ??= createTestBucket(endpoint);
    const { name } = await bucket;
    const client = createS3Client(emulatorClientOptions(endpoint));
    return {
      storage: createS3Storage({ bucket: name, client }),
      openDown: async () =>
        createS3Storage({
          bucket: name,
          clientOptions: emulatorClientOptions(await closedEndpoint()),
        }),
      cleanup: async () => {
        client.destroy();
      },
    };
  });
});
