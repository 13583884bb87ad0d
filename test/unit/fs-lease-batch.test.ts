import * as fs from 'node:fs';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { CONFLICT } from '../../src/adapters/lease/types.ts';
import { LeaseStoreUnavailableError } from '../../src/errors.ts';
import { fsLeaseStores } from '../support/fs-lease-stores.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const KEYS = Array.from({ length: 64 }, (_, i) => `db/${i}`);

/** Commit frames in the lease file's WAL: one per transaction since the WAL last restarted. */
function walCommits(file: string): number {
  const wal = fs.readFileSync(`${file}-wal`);
  const pageSize = wal.readUInt32BE(8);
  let commits = 0;
  for (let offset = 32; offset + 24 + pageSize <= wal.length; offset += 24 + pageSize) {
    if (wal.readUInt32BE(offset + 4) !== 0) commits += 1;
  }
  return commits;
}

describe('fs lease store: writes of one event-loop turn share a transaction', () => {
  const leases = fsLeaseStores('leases.sqlite');
  const { open } = leases;

  it('commits 64 concurrent compare-and-swaps in one transaction, each with its own result', async () => {
    const store = open();
    await store.get('warm-up');
    const before = walCommits(leases.file);
    const created = await Promise.all(KEYS.map((key) => store.create(key, bytes(`${key}@1`))));
    expect(created).toEqual(KEYS.map(() => ({ ok: true, revision: '1' })));
    expect(walCommits(leases.file) - before).toBe(1);

    // Half at the right revision, half stale: each answer is its own.
    const updated = await Promise.all(
      KEYS.map((key, i) => store.update(key, bytes(`${key}@2`), i % 2 === 0 ? '1' : '7')),
    );
    expect(updated).toEqual(
      KEYS.map((_, i) => (i % 2 === 0 ? { ok: true, revision: '2' } : CONFLICT)),
    );
    expect(walCommits(leases.file) - before).toBe(2);
    for (const [i, key] of KEYS.entries()) {
      expect(await store.get(key)).toEqual({
        value: bytes(`${key}@${i % 2 === 0 ? 2 : 1}`),
        revision: i % 2 === 0 ? '2' : '1',
      });
    }
  });

  it('applies writes to one key in the order they were asked for', async () => {
    const store = open();
    const [first, again, next, stale] = await Promise.all([
      store.create('lease', bytes('a')),
      store.create('lease', bytes('b')),
      store.update('lease', bytes('c'), '1'),
      store.update('lease', bytes('d'), '1'),
    ]);
    expect([first, again, next, stale]).toEqual([
      { ok: true, revision: '1' },
      CONFLICT,
      { ok: true, revision: '2' },
      CONFLICT,
    ]);
    expect(await store.get('lease')).toEqual({ value: bytes('c'), revision: '2' });
  });

  it('takes the value as it was when asked, not when the batch commits', async () => {
    const store = open();
    const value = bytes('first');
    const created = store.create('lease', value);
    value.set(bytes('later'));
    await created;
    expect((await store.get('lease'))?.value).toEqual(bytes('first'));
  });

  it('fails every write of a batch that cannot commit, and applies none of them', async () => {
    const store = open(50);
    await Promise.all(KEYS.map((key) => store.create(key, bytes('kept'))));
    // Another process holds the write lock for longer than the busy timeout.
    const other = new Database(leases.file);
    other.exec('BEGIN IMMEDIATE');
    const results = await Promise.allSettled(
      KEYS.map((key) => store.update(key, bytes('lost'), '1')),
    );
    other.exec('ROLLBACK');
    other.close();
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect((result as PromiseRejectedResult).reason).toBeInstanceOf(LeaseStoreUnavailableError);
    }
    for (const key of KEYS) {
      expect(await store.get(key)).toEqual({ value: bytes('kept'), revision: '1' });
    }
    // The next batch goes through.
    expect(await store.update('db/0', bytes('after'), '1')).toEqual({ ok: true, revision: '2' });
  });
});
