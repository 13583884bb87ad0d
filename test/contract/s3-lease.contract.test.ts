import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll } from 'vitest';
import { createS3LeaseStore } from '../../src/adapters/lease/s3.ts';
import { createS3Client } from '../../src/adapters/s3-client.ts';
import {
  closedEndpoint,
  createTestBucket,
  emulatorClientOptions,
  type TestBucket,
} from '../support/s3.ts';
import { describeWithService } from '../support/services.ts';
import { leaseStoreContract } from './lease-store.contract.ts';

await describeWithService('s3', 'S3 lease store contract', (endpoint) => {
  // One bucket for the file: every contract test writes under its own random prefix.
  let bucket: Promise<TestBucket> | undefined;
  afterAll(async () => {
    await (await bucket)?.remove();
  });

  leaseStoreContract(async () => {
    bucket ??= createTestBucket(endpoint);
    const { name } = await bucket;
    const client = createS3Client(emulatorClientOptions(endpoint));
    const clients = [client];
    const storeWith = (own: S3Client) =>
      createS3LeaseStore({ bucket: name, prefix: 'leases', client: own });
    return {
      store: storeWith(client),
      // Its own client and connections, as another process has.
      openAnother: async () => {
        const another = createS3Client(emulatorClientOptions(endpoint));
        clients.push(another);
        return storeWith(another);
      },
      openDown: async () =>
        createS3LeaseStore({
          bucket: name,
          clientOptions: emulatorClientOptions(await closedEndpoint()),
        }),
      cleanup: async () => {
        for (const each of clients) each.destroy();
      },
    };
  });
});
