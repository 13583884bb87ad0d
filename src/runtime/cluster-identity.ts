/**
 * A storage prefix and a lease store belong together: leadership taken in a lease store other
 * than the cluster's one splits the cluster in two. Each holds the same identity record, written
 * once, and a node checks both before it touches a lease.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { LeaseStore } from '../adapters/lease/types.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import { StoreMismatchError } from '../errors.ts';
import { listDatabaseNames } from '../replication/database-names.ts';

/** Database names cannot start with `.`: no database folder can be this object. */
export const IDENTITY_OBJECT = '.hadb-cluster';
/** Database names cannot contain `/`: no database's lease key can be this one. */
export const IDENTITY_LEASE_KEY = '_cluster/identity';

const FORMAT = 1;
/** Enough for any interleaving of nodes creating the identity at once (each step re-reads). */
const MAX_ROUNDS = 8;
/** Databases of a storage from before identities whose lease records are looked for. */
const EVIDENCE_DATABASES = 3;

export function identityObjectKey(prefix: string): string {
  return prefix === '' ? IDENTITY_OBJECT : `${prefix}/${IDENTITY_OBJECT}`;
}

interface IdentityRecord {
  cluster: string;
  createdAt: string;
  /**
   * Lease store only: false while the creator has not yet written the identity into storage.
   * Nobody ran on such a lease store, so any storage may still complete the binding.
   */
  bound?: boolean;
}

export interface BindStoresOptions {
  storage: StorageBackend;
  prefix: string;
  leases: LeaseStore;
  /** Write the identity into whichever store has none (a new store, on purpose). */
  init: boolean;
  logger: Logger;
}

/**
 * Makes sure `storage` (at `prefix`) and `leases` hold the same cluster identity, creating it when
 * both are new, and returns it. Throws {@link StoreMismatchError} when they belong to different
 * clusters, or when one has an identity and the other none (unless `init`). Reads both before it
 * writes anything, so a store that is down fails the call with nothing written.
 */
export async function bindStores(options: BindStoresOptions): Promise<string> {
  const { storage, prefix, leases, init, logger } = options;
  const storageKey = identityObjectKey(prefix);
  const where = {
    storage: `${describe(storage, 'storage')} (prefix ${JSON.stringify(prefix)})`,
    leases: describe(leases, 'lease store'),
  };
  const mismatch = (
    message: string,
    storageCluster: string | null,
    leaseCluster: string | null,
  ): StoreMismatchError =>
    new StoreMismatchError(message, { ...where, storageCluster, leaseCluster });

  for (let round = 0; round < MAX_ROUNDS; round++) {
    // Storage first: the lease record is created before the storage object, so a lease read
    // after a storage read that saw the object sees the record too. Read at once, a fast lease
    // store could answer "none" before another node created it and slow storage "there" after.
    const storageBody = await storage.get(storageKey);
    const leaseEntry = await leases.get(IDENTITY_LEASE_KEY);
    const inStorage = storageBody && parse(storageBody, `storage ${where.storage}`, mismatch);
    const inLeases = leaseEntry && parse(leaseEntry.value, `lease store ${where.leases}`, mismatch);

    if (inStorage && inLeases) {
      if (inStorage.cluster !== inLeases.cluster) {
        throw mismatch(
          `storage ${where.storage} belongs to cluster ${inStorage.cluster} but lease store ` +
            `${where.leases} belongs to cluster ${inLeases.cluster}: these are two clusters' ` +
            'stores; check the storage URL, the prefix and the lease-store URL (init does not ' +
            'rebind a store that already belongs to a cluster)',
          inStorage.cluster,
          inLeases.cluster,
        );
      }
      if (inLeases.bound === false && leaseEntry) {
        // Finishing another node's creation; a conflict means someone else finished it.
        await leases.update(
          IDENTITY_LEASE_KEY,
          encode({ ...inLeases, bound: true }),
          leaseEntry.revision,
        );
      }
      return inStorage.cluster;
    }

    if (inStorage) {
      if (!init) {
        throw mismatch(
          `storage ${where.storage} belongs to cluster ${inStorage.cluster} but lease store ` +
            `${where.leases} has no cluster identity: it is new or empty, most likely a mistyped ` +
            "lease-store path or URL. If this lease store is meant to be the cluster's from now " +
            'on, start once with --init (createNode({ init: true })) to bind it to this storage',
          inStorage.cluster,
          null,
        );
      }
      logger.warn(
        { cluster: inStorage.cluster, leases: where.leases },
        'binding a new lease store',
      );
      await leases.create(IDENTITY_LEASE_KEY, encode({ ...inStorage, bound: true }));
      continue;
    }

    if (inLeases) {
      // Marked bound after the storage object was written, maybe since storage was read above.
      if (inLeases.bound !== false && (await storage.get(storageKey))) continue;
      if (inLeases.bound !== false && !init) {
        throw mismatch(
          `lease store ${where.leases} belongs to cluster ${inLeases.cluster} but storage ` +
            `${where.storage} has no cluster identity: it is new or empty, most likely a mistyped ` +
            "storage URL or prefix. If this storage is meant to be the cluster's from now on, " +
            'start once with --init (createNode({ init: true })) to bind it to this lease store',
          null,
          inLeases.cluster,
        );
      }
      if (inLeases.bound !== false) {
        logger.warn({ cluster: inLeases.cluster, storage: where.storage }, 'binding a new storage');
      }
      const { bound: _, ...record } = inLeases;
      await storage.putIfAbsent(storageKey, encode(record));
      continue;
    }

    if (!init) await refuseUnknownDatabases(options, where, mismatch);
    // The lease store decides between nodes creating it at once: one create wins, all re-read.
    await leases.create(
      IDENTITY_LEASE_KEY,
      encode({ cluster: randomUUID(), createdAt: new Date().toISOString(), bound: false }),
    );
  }
  throw mismatch(
    `the cluster identity of storage ${where.storage} and lease store ${where.leases} did not ` +
      `settle in ${MAX_ROUNDS} rounds of reads and writes`,
    null,
    null,
  );
}

/**
 * Both stores without identity and storage already holding databases: a deployment from before
 * identities, adopted when the lease store has held a lease of one of them. A lease store that
 * knows none of them is most likely a mistyped one.
 */
async function refuseUnknownDatabases(
  options: BindStoresOptions,
  where: { storage: string; leases: string },
  mismatch: (message: string, s: string | null, l: string | null) => StoreMismatchError,
): Promise<void> {
  const names: string[] = [];
  for await (const name of listDatabaseNames(options.storage, options.prefix)) {
    names.push(name);
    if (names.length === EVIDENCE_DATABASES) break;
  }
  if (names.length === 0) return;
  const entries = await Promise.all(names.map((name) => options.leases.get(name)));
  if (entries.some((entry) => entry !== null)) {
    options.logger.info(
      { storage: where.storage, leases: where.leases },
      'adopting a deployment from before cluster identities',
    );
    return;
  }
  throw mismatch(
    `storage ${where.storage} holds databases (${names.join(', ')}) but no cluster identity, and ` +
      `lease store ${where.leases} has neither an identity nor a lease of any of them: most ` +
      'likely a mistyped lease-store path or URL. If this lease store is meant to be the ' +
      "cluster's, start once with --init (createNode({ init: true })) to bind the two",
    null,
    null,
  );
}

function encode(record: IdentityRecord): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ hadbCluster: FORMAT, ...record }));
}

function parse(
  body: Uint8Array,
  where: string,
  mismatch: (message: string, s: string | null, l: string | null) => StoreMismatchError,
): IdentityRecord {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(body));
  } catch {
    value = null;
  }
  const record = value as Partial<IdentityRecord> & { hadbCluster?: unknown };
  if (
    typeof record !== 'object' ||
    record === null ||
    record.hadbCluster !== FORMAT ||
    typeof record.cluster !== 'string' ||
    typeof record.createdAt !== 'string' ||
    (record.bound !== undefined && typeof record.bound !== 'boolean')
  ) {
    throw mismatch(
      `the cluster identity record in ${where} is unreadable or of a newer hadb version`,
      null,
      null,
    );
  }
  return record.bound === undefined
    ? { cluster: record.cluster, createdAt: record.createdAt }
    : { cluster: record.cluster, createdAt: record.createdAt, bound: record.bound };
}

function describe(store: StorageBackend | LeaseStore, what: string): string {
  return store.description ?? `a custom ${what} (${store.constructor?.name ?? 'object'})`;
}
