import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LeaseStoreUnavailableError } from '../../src/errors.ts';
import { fsLeaseStores } from '../support/fs-lease-stores.ts';

describe('fs lease store in a folder that does not exist', () => {
  const leases = fsLeaseStores(path.join('mistyped', 'leases.sqlite'));

  it('fails every call naming the folder, and creates neither the folder nor the file', async () => {
    fs.rmSync(path.dirname(leases.file), { recursive: true, force: true });
    const store = leases.open();
    for (const call of [
      store.get('lease'),
      store.create('lease', new Uint8Array([1])),
      store.update('lease', new Uint8Array([2]), '1'),
    ]) {
      const error = await call.then(
        () => undefined,
        (reason: unknown) => reason,
      );
      expect(error).toBeInstanceOf(LeaseStoreUnavailableError);
      expect((error as Error).message).toContain(path.dirname(leases.file));
      expect((error as Error).message).toContain('does not exist');
    }
    expect(fs.existsSync(path.dirname(leases.file))).toBe(false);
  });

  it('opens once the folder is made', async () => {
    fs.mkdirSync(path.dirname(leases.file), { recursive: true });
    expect(await leases.open().get('lease')).toBeNull();
  });
});
