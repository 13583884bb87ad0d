/** fs lease stores on a fresh file per test, closed and removed after it (a support module). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';

/**
 * Call at the top of a `describe`: each test gets a new folder, with the lease file at
 * `relativePath` in it (`file`); `open()` opens a store on it, closed after the test.
 */
export function fsLeaseStores(relativePath: string) {
  let root = '';
  let file = '';
  const stores: { close(): Promise<void> }[] = [];
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-fs-lease-'));
    file = path.join(root, relativePath);
  });
  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    fs.rmSync(root, { recursive: true, force: true });
  });
  return {
    get file() {
      return file;
    },
    open(busyTimeoutMs?: number) {
      const store = createFsLeaseStore(
        busyTimeoutMs === undefined ? { path: file } : { path: file, busyTimeoutMs },
      );
      stores.push(store);
      return store;
    },
  };
}
