/**
 * `hadb/s3`: storage and leases on S3 or an S3-compatible store (conditional writes required for
 * leases). Its own entry so that `hadb` loads without the AWS SDK; `openStorageFromUrl` and
 * `openLeaseStoreFromUrl` in `hadb` load it on first use of an `s3://` URL.
 */

export {
  createS3LeaseStore,
  openS3LeaseStore,
  type S3LeaseStoreOptions,
} from './adapters/lease/s3.ts';
export type { S3ClientOptions } from './adapters/s3-client.ts';
export { createS3Storage, type S3StorageOptions } from './adapters/storage/s3.ts';
