import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { logKey } from '../../src/adapters/replication/snapshot.ts';
import { SqliteFollower } from '../../src/adapters/replication/sqlite/follower.ts';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import { openNewLeader, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-takeover-pull-');

/** Storage that records every request it is asked, by operation. */
function counting(inner: StorageBackend) {
  const calls: string[] = [];
  const count = <T>(op: string, call: () => Promise<T>) => {
    calls.push(op);
    return call();
  };
  const storage: StorageBackend = {
    put: (key, body) => count('put', () => inner.put(key, body)),
    putIfAbsent: (key, body) => count('putIfAbsent', () => inner.putIfAbsent(key, body)),
    get: (key, range) => count('get', () => inner.get(key, range)),
    list: (prefix, options) => count('list', () => inner.list(prefix, options)),
    delete: (keys) => count('delete', () => inner.delete(keys)),
  };
  return { storage, calls };
}

async function cluster() {
  const dir = freshDir('cluster');
  const inner = createMemoryStorage();
  const { storage, calls } = counting(inner);
  const common = { db: 'app', prefix: 'p' };
  const leader = await openNewLeader({ ...common, storage: inner, path: path.join(dir, 'l.db') });
  const write = async (v: string) => {
    leader.database.prepare('INSERT INTO t (v) VALUES (?)').run(v);
    await leader.flush();
  };
  leader.database.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  await leader.flush();
  const follower = await SqliteFollower.open({
    ...common,
    storage,
    path: path.join(dir, 'f.db'),
  });
  await follower.pull();
  return { dir, inner, storage, calls, common, leader, write, follower };
}

describe('the catch-up of a takeover (urgent pull)', () => {
  it('asks storage once when the copy is already at the tip, and applies what is new', async () => {
    const { calls, leader, write, follower } = await cluster();
    calls.length = 0;
    expect(await follower.pull({ urgent: true })).toBe(0);
    expect(calls).toEqual(['list']);
    await write('a');
    await write('b');
    calls.length = 0;
    expect(await follower.pull({ urgent: true })).toBe(2);
    expect(follower.position.seq).toBe(leader.position.seq);
    // A listing names the two, both are read, and a last listing finds nothing after them.
    expect(calls).toEqual(['list', 'get', 'get', 'list']);
    follower.close();
    await leader.close();
  });

  it('rebuilds from a snapshot when the log after the copy was compacted away', async () => {
    const { inner, common, leader, write, follower } = await cluster();
    const from = follower.position.seq;
    await write('a');
    await write('b');
    await leader.snapshot();
    await write('c');
    const tip = leader.position.seq;
    // Retention removed the changesets the snapshot covers: the copy's next one is gone.
    await inner.delete(
      Array.from({ length: tip - 1 - from }, (_, i) =>
        logKey(common.prefix, common.db, from + 1 + i),
      ),
    );
    await follower.pull({ urgent: true });
    expect(follower.position.seq).toBe(tip);
    follower.close();
    await leader.close();
  });
});
