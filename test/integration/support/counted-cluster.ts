/** A leader and a follower over storage that counts the follower's requests (support module). */
import path from 'node:path';
import { SqliteFollower } from '../../../src/adapters/replication/sqlite/follower.ts';
import { createMemoryStorage } from '../../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../../src/adapters/storage/types.ts';
import { openNewLeader } from './replication.ts';

/** Storage that records every request it is asked, by operation. */
export function counting(inner: StorageBackend) {
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

export async function countedCluster(dir: string) {
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
