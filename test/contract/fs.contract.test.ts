import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe } from 'vitest';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { leaseStoreContract } from './lease-store.contract.ts';
import { storageContract } from './storage.contract.ts';

function tempDirectory(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-contract-'));
}

describe('fs lease store', () => {
  leaseStoreContract(async () => {
    const root = tempDirectory();
    const file = path.join(root, 'leases.sqlite');
    const store = createFsLeaseStore({ path: file });
    return {
      store,
      // A second instance is a second SQLite connection, as another process would have.
      openAnother: async () => createFsLeaseStore({ path: file }),
      // The file's folder cannot be made (a regular file is in the way): the nearest a local
      // file gets to "down", and every call must say unavailable rather than leak an fs error.
      openDown: async () => {
        const blocker = path.join(root, 'not-a-directory');
        fs.writeFileSync(blocker, 'x');
        return createFsLeaseStore({ path: path.join(blocker, 'leases.sqlite') });
      },
      cleanup: async () => {
        await store.close();
        fs.rmSync(root, { recursive: true, force: true });
      },
    };
  });
});

describe('fs storage', () => {
  // No openDown: a folder has no meaningful "down". A missing root reads as an empty bucket and
  // is created by the first write, a file in the way of a key reads as a missing key, and
  // permissions do not stop root, which runs these tests in CI containers.
  storageContract(async () => {
    const root = tempDirectory();
    return {
      storage: createFsStorage({ root }),
      cleanup: async () => {
        fs.rmSync(root, { recursive: true, force: true });
      },
    };
  });
});
