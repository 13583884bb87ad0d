/**
 * `createNode({ storage, leases })` takes each as an instance or as a URL, in the forms the CLI
 * takes (src/adapters/url.ts): `file:///path`, `s3://bucket/prefix?…`, `nats://host:4222?bucket=…`
 * and `memory:`. A store opened from a URL belongs to the node, which closes it on `close()`; an
 * instance stays the caller's.
 */
import type { LeaseStore } from '../adapters/lease/types.ts';
import { backendKindOfUrl } from '../adapters/metered.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import {
  openLeaseStoreFromUrl,
  openStorageFromUrl,
  parseLeaseUrl,
  parseStorageUrl,
} from '../adapters/url.ts';

export interface StoreChoices {
  storage: StorageBackend | string;
  leases: LeaseStore | string;
  backendKinds?: { storage?: string; leases?: string } | undefined;
}

export interface NodeStores {
  storage: StorageBackend;
  leases: LeaseStore;
  /** The caller's, else the URLs' schemes (`fs`, `s3`, `nats`, `memory`). */
  backendKinds: { storage?: string; leases?: string };
  /** Closes the stores opened from URLs; instances are left open. */
  close(): Promise<void>;
}

export async function openNodeStores(choices: StoreChoices): Promise<NodeStores> {
  // Both URLs are checked before either is opened: a bad one leaves no connection behind.
  if (typeof choices.storage === 'string') parseStorageUrl(choices.storage);
  if (typeof choices.leases === 'string') parseLeaseUrl(choices.leases);
  const owned: { close?(): Promise<void> }[] = [];
  const close = async () => {
    await Promise.allSettled(owned.splice(0).map((store) => store.close?.()));
  };
  try {
    const storage =
      typeof choices.storage === 'string'
        ? remember(owned, await openStorageFromUrl(choices.storage))
        : choices.storage;
    const leases =
      typeof choices.leases === 'string'
        ? remember(owned, await openLeaseStoreFromUrl(choices.leases))
        : choices.leases;
    const backendKinds = { ...choices.backendKinds };
    if (typeof choices.storage === 'string') {
      backendKinds.storage ??= backendKindOfUrl(choices.storage);
    }
    if (typeof choices.leases === 'string') {
      backendKinds.leases ??= backendKindOfUrl(choices.leases);
    }
    return { storage, leases, backendKinds, close };
  } catch (error) {
    await close();
    throw error;
  }
}

function remember<T extends { close?(): Promise<void> }>(
  owned: { close?(): Promise<void> }[],
  store: T,
): T {
  owned.push(store);
  return store;
}
