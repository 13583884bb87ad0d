import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFLICT } from '../../src/adapters/lease/types.ts';
import { LeaseStoreUnavailableError } from '../../src/errors.ts';
import { fsLeaseStores } from '../support/fs-lease-stores.ts';

const bytes = (text: string) => new TextEncoder().encode(text);

describe('fs lease store', () => {
  const leases = fsLeaseStores(path.join('nested', 'dir', 'leases.sqlite'));
  const { open } = leases;

  it('returns null for a missing key', async () => {
    expect(await open().get('missing')).toBeNull();
  });

  it('creates once', async () => {
    const store = open();
    expect(await store.create('lease', bytes('a'))).toEqual({ ok: true, revision: '1' });
    expect(await store.create('lease', bytes('b'))).toEqual(CONFLICT);
    expect(await store.get('lease')).toEqual({ value: bytes('a'), revision: '1' });
  });

  it('updates only at the current revision', async () => {
    const store = open();
    await store.create('lease', bytes('a'));
    const updated = await store.update('lease', bytes('b'), '1');
    expect(updated).toEqual({ ok: true, revision: '2' });
    expect(await store.update('lease', bytes('stale'), '1')).toEqual(CONFLICT);
    expect(await store.update('lease', bytes('c'), '2')).toEqual({ ok: true, revision: '3' });
    expect(await store.get('lease')).toEqual({ value: bytes('c'), revision: '3' });
  });

  it('treats a revision that is not a decimal integer as a conflict', async () => {
    const store = open();
    await store.create('lease', bytes('a'));
    for (const revision of ['abc', '', '1.5', '01', ' 1', '1e0', '-1', '0x1', '9'.repeat(40)]) {
      expect(await store.update('lease', bytes('x'), revision), revision).toEqual(CONFLICT);
    }
    expect(await store.update('missing', bytes('x'), '1')).toEqual(CONFLICT);
    expect(await store.get('lease')).toEqual({ value: bytes('a'), revision: '1' });
  });

  it('round trips value bytes exactly', async () => {
    const store = open();
    const value = new Uint8Array([0, 0, 255, 1, 0, 128, 0]);
    await store.create('zeros', value);
    expect((await store.get('zeros'))?.value).toEqual(value);

    const view = new Uint8Array([9, 9, 1, 0, 2, 9]).subarray(2, 5);
    await store.update('zeros', view, '1');
    expect((await store.get('zeros'))?.value).toEqual(new Uint8Array([1, 0, 2]));

    await store.create('empty', new Uint8Array());
    expect((await store.get('empty'))?.value).toEqual(new Uint8Array());
  });

  it('shares state between instances on the same file', async () => {
    const first = open();
    const second = open();
    expect(await first.create('lease', bytes('from first'))).toEqual({ ok: true, revision: '1' });
    expect(await second.get('lease')).toEqual({ value: bytes('from first'), revision: '1' });
    expect(await second.create('lease', bytes('again'))).toEqual(CONFLICT);
    expect(await second.update('lease', bytes('from second'), '1')).toEqual({
      ok: true,
      revision: '2',
    });
    expect(await first.update('lease', bytes('stale'), '1')).toEqual(CONFLICT);
    expect(await first.get('lease')).toEqual({ value: bytes('from second'), revision: '2' });
  });

  it('keeps its data across close and reopen', async () => {
    const store = open();
    await store.create('lease', bytes('durable'));
    await store.close();
    await expect(store.get('lease')).rejects.toBeInstanceOf(LeaseStoreUnavailableError);
    expect(await open().get('lease')).toEqual({ value: bytes('durable'), revision: '1' });
  });

  it('rejects with LeaseStoreUnavailableError when the file is not a SQLite database', async () => {
    fs.mkdirSync(path.dirname(leases.file), { recursive: true });
    fs.writeFileSync(
      leases.file,
      Buffer.from('this is not a sqlite database, just garbage bytes\n'.repeat(100)),
    );
    const store = open(100);
    for (const attempt of [
      store.get('lease'),
      store.create('lease', bytes('x')),
      store.update('lease', bytes('x'), '1'),
    ]) {
      const error = await attempt.then(
        () => undefined,
        (reason: unknown) => reason,
      );
      expect(error).toBeInstanceOf(LeaseStoreUnavailableError);
      expect((error as Error).cause).toMatchObject({ code: 'SQLITE_NOTADB' });
    }
  });
});
