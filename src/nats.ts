/**
 * `hadb/nats`: leases in a NATS JetStream key-value bucket. Its own entry so that `hadb` loads
 * without the NATS client; `openLeaseStoreFromUrl` in `hadb` loads it on first use of a
 * `nats://` URL.
 */

export {
  type NatsLeaseStore,
  type NatsLeaseStoreOptions,
  openNatsLeaseStore,
} from './adapters/lease/nats.ts';
